"""Helpers for testing symmetry contracts, shipped so downstream code can test its layers the same way.

:func:`assert_equivariant` applies random rotations (proper and improper: rotoreflections too, unless told
otherwise), translations and atom permutations to a function's declared inputs and checks that its outputs
transform as declared; :func:`assert_invariant` is the same for outputs that must not change at all. In the spirit
of ``e3nn.util.test.assert_equivariant``; use float64 inputs (and a ``.double()`` module) so that the tolerance can
be tight and the check does not depend on the float summation order (torch's thread count).

Kinds of inputs and outputs (``N`` atoms first, any trailing shape unless noted; vectors have 3 on the last axis):

* ``"position"``: atom positions ``[N, 3]`` (or ``[..., 3]`` without permutations): rotated, translated (one
  shift per graph when a ``"batch"`` is declared), permuted;
* ``"vector"``: atom vectors ``[N, 3]`` or ``[N, C, 3]`` (velocities, centred positions, forces): rotated and
  permuted, never translated;
* ``"pseudovector"``: like ``"vector"``, also multiplied by det(R) (axial vectors such as cross products);
* ``"scalar"``: per-atom features ``[N, ...]``: only permuted;
* ``"pseudoscalar"``: per-atom values that change sign under a reflection (signed volumes);
* ``"pair"``: dense per-atom-pair values ``[N, N, ...]``: rows and columns permuted;
* ``"batch"`` (input): the graph of every atom ``[N]``; permutations then stay inside each graph;
* ``"edge_index"`` (input): ``[2, E]`` atom indices, relabelled with the atoms (the edge order is kept);
* ``"invariant"``: anything that must not change: per-graph scalars, losses, per-edge values (edge order kept);
* ``"graph_vector"`` / ``"graph_pseudovector"`` (output): per-graph vectors ``[B, 3]`` (dipoles): rotated, not
  permuted;
* ``None`` (input): passed through unchanged (times, atom counts, options).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

INPUT_KINDS = ("position", "vector", "pseudovector", "scalar", "pseudoscalar", "pair", "batch", "edge_index",
               "invariant", None)
OUTPUT_KINDS = ("position", "vector", "pseudovector", "scalar", "pseudoscalar", "pair", "invariant", "graph_vector",
                "graph_pseudovector")
_PER_ATOM = ("position", "vector", "pseudovector", "scalar", "pseudoscalar", "pair", "batch")
_INVARIANT_OUTPUTS = ("scalar", "pair", "invariant")


def random_orthogonal(seed: int, proper: bool = True, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A Haar-random rotation (``proper=True``, det +1) or rotoreflection (det -1), ``[3, 3]``, reproducible."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


class _Transform:
    """One random element: rotation ``R`` (det ``det``), per-atom shift, permutation ``perm`` (new atom k is old
    atom ``perm[k]``) and its inverse ``inv`` (old atom i is new atom ``inv[i]``)."""

    def __init__(self, R: torch.Tensor, shift: torch.Tensor, perm: torch.Tensor | None):
        self.R, self.det, self.shift, self.perm = R, float(torch.linalg.det(R).round()), shift, perm
        self.inv = None
        if perm is not None:
            self.inv = torch.empty_like(perm)
            self.inv[perm] = torch.arange(len(perm))

    def __call__(self, x: Any, kind: str | None) -> Any:
        if isinstance(x, np.ndarray):
            return self(torch.from_numpy(x), kind).numpy()
        if kind in (None, "invariant"):
            return x
        p = (lambda y: y) if self.perm is None else (lambda y: y[self.perm])
        if kind == "edge_index":
            return x if self.inv is None else self.inv.to(x.device)[x]
        if kind in ("scalar", "batch"):
            return p(x)
        if kind == "pseudoscalar":
            return self.det * p(x)
        if kind == "pair":
            return x if self.perm is None else x[self.perm][:, self.perm]
        if x.shape[-1] != 3:
            raise ValueError(f"a {kind} needs 3 components on its last axis, got shape {tuple(x.shape)}")
        out = x @ self.R.to(device=x.device, dtype=x.dtype).T
        if kind in ("pseudovector", "graph_pseudovector"):
            out = self.det * out
        if kind == "position":
            out = out + self.shift.to(device=x.device, dtype=x.dtype)
        return out if kind.startswith("graph_") else p(out)


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _check_kinds(kinds: Sequence, allowed: tuple, what: str) -> None:
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"unknown {what} kind(s) {bad} (choose from {', '.join(map(repr, allowed))})")


def _sampler(args: tuple, in_types: tuple, translate: bool, permute: bool, scale: float):
    """The random group elements for the declared inputs (atom count and graphs read from them)."""
    batch = next((a for a, k in zip(args, in_types) if k == "batch"), None)
    n_atoms = next((a.shape[0] for a, k in zip(args, in_types) if k in _PER_ATOM), None)
    if permute and n_atoms is None:
        raise ValueError("permute=True needs a per-atom input (position, vector, scalar, batch, ...)")

    def sample(seed: int, proper: bool | None) -> _Transform:
        g = torch.Generator().manual_seed(10_000 + seed)
        R = torch.eye(3, dtype=torch.float64) if proper is None else random_orthogonal(seed, proper)
        if batch is not None:
            b = torch.as_tensor(batch).cpu().long()
            shift = scale * torch.randn(int(b.max()) + 1 if b.numel() else 0, 3, generator=g, dtype=torch.float64)[b]
        else:
            shift = scale * torch.randn(3, generator=g, dtype=torch.float64)
        if not translate:
            shift = torch.zeros_like(shift)
        perm = None
        if permute:
            perm = torch.arange(n_atoms)
            groups = torch.as_tensor(batch).cpu().long() if batch is not None else torch.zeros(n_atoms, dtype=torch.long)
            for graph in torch.unique(groups):          # inside each graph: the batch vector stays as it is
                idx = torch.nonzero(groups == graph).flatten()
                perm[idx] = idx[torch.randperm(len(idx), generator=g)]
        return _Transform(R, shift, perm)

    return sample


def assert_equivariant(fn: Callable, args: Sequence | Any, in_types: Sequence[str | None] | str | None,
                       out_types: Sequence[str] | str, *, rotations: str = "all", translate: bool = True,
                       permute: bool = True, n_trials: int = 2, seed: int = 0, translation_scale: float = 3.0,
                       atol: float | None = None, rtol: float | None = None) -> None:
    """Assert that ``fn(*args)`` transforms as declared under rotations, translations and atom permutations.

    Args:
        fn: called as ``fn(*args)``; returns one tensor (or array) or a tuple/list of them.
        args: the inputs (one input may be passed bare).
        in_types: the kind of every input (see the module docstring), e.g. ``("scalar", "position", "edge_index",
            "batch")``.
        out_types: the kind of every output, e.g. ``("scalar", "vector")``.
        rotations: ``"all"``: proper rotations and rotoreflections (det -1) alike, the E(3)/O(3) contract;
            ``"proper"``: rotations only, for chirality-aware layers (cross products) whose outputs follow only
            proper rotations; ``"improper"``: rotoreflections only (e.g. to show that a layer tells mirror images
            apart: ``pytest.raises(AssertionError)``); ``"none"``: no rotation (translations and permutations
            only).
        translate: also shift ``"position"`` inputs (one random shift per graph when a ``"batch"`` is declared).
        permute: also permute the atoms (inside each graph when a ``"batch"`` is declared).
        n_trials: random group elements per kind of rotation (seeded from ``seed``: reproducible).
        atol, rtol: tolerances of :func:`torch.testing.assert_close` (default: its defaults for the dtype).

    Raises:
        AssertionError: naming the output, its kind, the transformation and the error, when an output does not
            transform as declared.
    """
    args, in_types, out_types = _as_tuple(args), _as_tuple(in_types), _as_tuple(out_types)
    if len(in_types) != len(args):
        raise ValueError(f"{len(args)} inputs but {len(in_types)} in_types")
    _check_kinds(in_types, INPUT_KINDS, "input")
    _check_kinds(out_types, OUTPUT_KINDS, "output")
    if rotations not in ("all", "proper", "improper", "none"):
        raise ValueError(f"rotations={rotations!r}: choose from 'all', 'proper', 'improper', 'none'")
    base = _as_tuple(fn(*args))
    if len(base) != len(out_types):
        raise ValueError(f"fn returned {len(base)} outputs but {len(out_types)} out_types were declared")
    sample = _sampler(args, in_types, translate, permute, translation_scale)
    kinds = {"all": (True, False), "proper": (True,), "improper": (False,), "none": (None,)}[rotations]
    for k in range(n_trials):
        for proper in kinds:
            t = sample(seed + 2 * k + (0 if proper is not False else 1), proper)
            got = _as_tuple(fn(*(t(a, kind) for a, kind in zip(args, in_types))))
            for i, (out, want, kind) in enumerate(zip(got, base, out_types)):
                expected = t(want, kind)
                out, expected = torch.as_tensor(out), torch.as_tensor(expected)
                try:
                    torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)
                except AssertionError as e:
                    what = " + ".join(w for w, on in (("a rotoreflection (det -1)", proper is False),
                                                      ("a rotation", proper is True), ("translation", translate),
                                                      ("atom permutation", permute)) if on) or "the identity"
                    err = ((out - expected).abs().max().item() if out.shape == expected.shape and out.numel()
                           else float("nan"))
                    raise AssertionError(f"output {i} does not transform as a {kind} under {what} (trial {k}, "
                                         f"seed {seed}): max abs error {err:.3g}\n{e}") from None


def assert_invariant(fn: Callable, args: Sequence | Any, in_types: Sequence[str | None] | str | None,
                     out_types: Sequence[str] | str = "invariant", **kwargs) -> None:
    """:func:`assert_equivariant` for outputs that do not rotate: ``"invariant"`` (unchanged: per-graph values,
    losses), ``"scalar"`` (per atom, only permuted with the atoms) or ``"pair"`` (per atom pair)."""
    kinds = _as_tuple(out_types)
    if any(k not in _INVARIANT_OUTPUTS for k in kinds):
        raise ValueError(f"assert_invariant checks {', '.join(_INVARIANT_OUTPUTS)} outputs, got {list(kinds)}: "
                         f"use assert_equivariant")
    assert_equivariant(fn, args, in_types, kinds, **kwargs)
