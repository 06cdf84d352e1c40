r"""Property conditioning for PropMolFlow (Zeng, Jin et al. 2025, https://arxiv.org/abs/2505.21469).

* :data:`PROPERTIES`: the six QM9 targets in molgen's user units and the ranges of the fixed Gaussian expansion
  (PropMolFlow's hard-coded min/max, Hartree values converted to eV).
* :class:`GaussianExpansion`: a scalar onto 5 fixed Gaussians (cG-SchNet style, not trainable).
* :class:`PropertyEmbedding`: the property as a ``dim`` vector ``p``, combined with the initial node scalars
  ``h0`` by one of five methods (:data:`COMBINERS`).
* :class:`PropertySampler`: (number of atoms, target value) pairs drawn jointly from the training histograms as
  EDM's ``DistributionProperty`` / PropMolFlow do, plus the out-of-distribution task. Everything lives in
  buffers, so it travels in the model checkpoint.
* :func:`best_of_k`: best-of-K sampling for any conditional generator: K candidates per (N, target), the one a
  property predictor puts closest to the target is kept (PropMolFlow's and SiLD's ``rerank``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from molgen.errors import ConfigError

HARTREE_EV = 27.211386


@dataclass(frozen=True)
class PropertyInfo:
    """One QM9 target: unit (user units) and the Gaussian-expansion range in that unit."""

    unit: str
    gaussian_min: float
    gaussian_max: float


PROPERTIES: dict[str, PropertyInfo] = {
    "alpha": PropertyInfo("Bohr^3", 6.31, 196.62),
    "gap": PropertyInfo("eV", 0.0246 * HARTREE_EV, 0.6221 * HARTREE_EV),
    "homo": PropertyInfo("eV", -0.4286 * HARTREE_EV, -0.1017 * HARTREE_EV),
    "lumo": PropertyInfo("eV", -0.175 * HARTREE_EV, 0.1935 * HARTREE_EV),
    "mu": PropertyInfo("Debye", 0.0, 29.556),
    "Cv": PropertyInfo("cal/(mol K)", 6.002, 46.969),
}


def report_unit(name: str) -> tuple[float, str]:
    """``(scale, unit)`` in which errors of property ``name`` are reported: energies in meV, as the papers do
    (``error_in_report_unit = error_in_user_units * scale``); other properties in their user units."""
    unit = check_property(name).unit
    return (1000.0, "meV") if unit == "eV" else (1.0, unit)


def check_property(name: str) -> PropertyInfo:
    if name not in PROPERTIES:
        raise ValueError(f"unknown property '{name}' (choose from {', '.join(PROPERTIES)})")
    return PROPERTIES[name]


def guided(cond: tuple, free: tuple, w: float) -> tuple:
    """Classifier-free guidance (Ho & Salimans 2022) of continuous predictions: ``u + w (c - u)`` per output, from
    the conditional ``cond`` and the unconditional (null-embedding) ``free`` predictions (w = 1: ``cond``, w = 0:
    ``free``)."""
    return tuple(u + w * (c - u) for c, u in zip(cond, free))


def best_of_k(generate: Callable[[list[int], list[float]], list], n_atoms: Sequence[int],
              values: Sequence[float] | None, k: int, predictor, property_name: str | None) -> list:
    """Best-of-``k`` sampling: ``k`` candidates per (N, target), the one ``predictor`` puts closest to the target kept.

    Args:
        generate: ``generate(sizes, targets) -> molecules``, one molecule per entry, in order (the generator's
            own sampler with its seed and settings bound); the ``k`` candidates of one molecule are consecutive,
            so they share a batch.
        n_atoms, values: atom count and target value of each wanted molecule.
        k: candidates per molecule (``k`` times the sampling cost).
        predictor: a property model with ``property_name`` and ``predict(molecules) -> [n]`` (NaN for a molecule
            it cannot read: ranked last), e.g. :class:`~molgen.models.regressor.GVPRegressor`; it should be trained
            on the generator's own half, never on the data that evaluates the samples.
        property_name: the generator's conditioning property (None: unconditional, refused).

    Returns:
        ``len(n_atoms)`` molecules, each the chosen candidate of its (N, target).
    """
    if property_name is None:
        raise ConfigError(f"rerank={k} needs a conditional model (it selects candidates by their property)")
    if predictor is None:
        raise ConfigError(f"rerank={k} needs a predictor of '{property_name}' (a regressor trained on the "
                          "generator's half: predictor=gvp_small in a run, or a checkpoint path / name)")
    if isinstance(predictor, (str, Path)):
        raise ConfigError(f"predictor={predictor}: pass the loaded model, molgen.load({str(predictor)!r})")
    if getattr(predictor, "property_name", None) != property_name:
        raise ConfigError(f"the predictor predicts '{getattr(predictor, 'property_name', None)}', this model is "
                          f"conditioned on '{property_name}'")
    if values is None or len(values) != len(n_atoms):
        raise ConfigError(f"a model conditioned on '{property_name}' needs one target value per molecule")
    sizes = [int(n) for n in n_atoms for _ in range(k)]
    targets = [float(v) for v in values for _ in range(k)]
    candidates = generate(sizes, targets)
    err = np.abs(np.asarray(predictor.predict(candidates), dtype=float) - np.asarray(targets)).reshape(len(n_atoms), k)
    err[~np.isfinite(err)] = np.inf
    return [candidates[i * k + int(np.argmin(err[i]))] for i in range(len(n_atoms))]


class GaussianExpansion(nn.Module):
    r""":math:`g_k(c) = \exp(-(c-\mu_k)^2 / (2\sigma^2))`, ``n`` centres ``linspace(lo, hi, n)``, :math:`\sigma` =
    centre spacing. Shapes: ``c [B]`` -> ``[B, n]``."""

    def __init__(self, lo: float, hi: float, n: int = 5):
        super().__init__()
        self.register_buffer("centres", torch.linspace(lo, hi, n), persistent=False)
        self.sigma = (hi - lo) / (n - 1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((c.unsqueeze(-1) - self.centres) ** 2) / (2 * self.sigma**2))


# ------------------------------------------------------------------------------------ combining h0 and p
def _mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.SiLU(), nn.Linear(d, d))


class Concatenate(nn.Module):
    """``h = W([h0 || p])``."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = _mlp(2 * dim, dim)

    def forward(self, h0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.w(torch.cat([h0, p], -1))


class Sum(nn.Module):
    """``h = h0 + p``."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, h0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return h0 + p


class Multiply(nn.Module):
    """``h = h0 * (sigmoid(p) + 0.5)`` (a gate in (0.5, 1.5))."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, h0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return h0 * (torch.sigmoid(p) + 0.5)


class ConcatenateSum(Concatenate):
    """``h = h0 + W([h0 || p])``."""

    def forward(self, h0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return h0 + self.w(torch.cat([h0, p], -1))


class ConcatenateMultiply(Concatenate):
    """``h = h0 * (sigmoid(W([h0 || p])) + 0.5)`` -- the method as the paper describes it.

    Note: PropMolFlow's reference code computes ``W([h0 || p])`` and then overwrites it with ``sigmoid(p) + 0.5``,
    so there it behaves like :class:`Multiply` and ``W`` gets no gradient; the published numbers for
    ``concatenate_multiply`` were produced with that behaviour. molgen implements the intended gate.
    """

    def forward(self, h0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return h0 * (torch.sigmoid(self.w(torch.cat([h0, p], -1))) + 0.5)


COMBINERS: dict[str, type[nn.Module]] = {
    "concatenate": Concatenate, "sum": Sum, "multiply": Multiply,
    "concatenate_sum": ConcatenateSum, "concatenate_multiply": ConcatenateMultiply,
}


class PropertyEmbedding(nn.Module):
    r"""Embed one scalar property and inject it into the initial node scalars (once, before the first layer).

    Without Gaussian expansion: ``p = LN(MLP((c - mean) / std))`` with MLP ``1 -> dim -> dim``. With it:
    ``p = MLP(GaussianExpansion(c))`` with MLP ``5 -> dim -> dim`` on the raw value (no LayerNorm).

    Args:
        name: property key in :data:`PROPERTIES`.
        dim: node scalar width.
        method: one of :data:`COMBINERS`.
        gaussian_expansion: expand the raw value on 5 fixed Gaussians instead of z-scoring it.
        mean, std: z-score statistics (training split, user units).
        null_token: learn a "no property" embedding, selected by a NaN value (classifier-free guidance: the
            model is trained with the property dropped for some molecules and sampled with both predictions).

    Shapes:
        h0 ``[n, dim]``, value ``[B]`` (user units), batch ``[n]`` -> ``[n, dim]``.
    """

    def __init__(self, name: str, dim: int, method: str = "concatenate", gaussian_expansion: bool = False,
                 mean: float = 0.0, std: float = 1.0, null_token: bool = False):
        super().__init__()
        info = check_property(name)
        if method not in COMBINERS:
            raise ValueError(f"unknown embedding method '{method}' (choose from {', '.join(COMBINERS)})")
        if not std > 0:
            raise ValueError(f"property std must be > 0, got {std}")
        self.name, self.method, self.mean, self.std = name, method, float(mean), float(std)
        if gaussian_expansion:
            self.expand: nn.Module | None = GaussianExpansion(info.gaussian_min, info.gaussian_max, 5)
            self.embed = _mlp(5, dim)
        else:
            self.expand = None
            self.embed = nn.Sequential(_mlp(1, dim), nn.LayerNorm(dim))
        self.combine = COMBINERS[method](dim)
        # the "no property" embedding of classifier-free guidance: a NaN value selects it
        self.null = nn.Parameter(torch.zeros(dim)) if null_token else None

    def embed_value(self, value: torch.Tensor) -> torch.Tensor:
        """``p [B, dim]`` from ``value [B]``; a NaN value gives the learned null embedding (``null_token``)."""
        missing = torch.isnan(value)
        if missing.any() and self.null is None:
            raise ValueError(f"a {self.name} value is NaN and this embedding has no null token (train with "
                             "property dropout for classifier-free guidance)")
        clean = torch.where(missing, torch.full_like(value, self.mean), value)
        if self.expand is not None:
            p = self.embed(self.expand(clean))
        else:
            p = self.embed(((clean - self.mean) / self.std).unsqueeze(-1))
        if self.null is not None:
            p = torch.where(missing.unsqueeze(-1), self.null.to(p.dtype).expand_as(p), p)
        return p

    def forward(self, h0: torch.Tensor, value: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return self.combine(h0, self.embed_value(value)[batch])

    def __repr__(self) -> str:
        return f"PropertyEmbedding({self.name}, {self.method}, gaussian_expansion={self.expand is not None})"


# ------------------------------------------------------------------------------------ sampling (N, value)
class PropertySampler(nn.Module):
    """Draw the number of atoms (and the target value) for sampling from the generator's training half.

    In distribution (EDM ``DistributionProperty``, PropMolFlow ``str2prop_sampler``): N from the atom-count
    histogram; the value from an ``n_bins`` histogram of the training values *of molecules with that N*,
    uniformly within the chosen bin. Out of distribution (PropMolFlow's OOD task): the target is the 99th
    percentile of the training values; N is drawn from the molecules whose value lies between the 97th
    percentile and the maximum.

    Args:
        max_atoms: largest atom count held (QM9: 29).
        n_bins: value bins per atom count (1000).
        conditional: hold the value histograms (False: atom counts only).

    Call :meth:`fit` once with the training data; the histograms are buffers saved with the model.
    """

    def __init__(self, max_atoms: int = 29, n_bins: int = 1000, conditional: bool = False):
        super().__init__()
        self.max_atoms, self.n_bins, self.conditional = max_atoms, n_bins, conditional
        self.register_buffer("n_atoms_counts", torch.zeros(max_atoms + 1, dtype=torch.float64))
        if conditional:
            self.register_buffer("value_counts", torch.zeros(max_atoms + 1, n_bins, dtype=torch.float64))
            self.register_buffer("value_edges", torch.zeros(max_atoms + 1, n_bins + 1, dtype=torch.float64))
            self.register_buffer("ood_target", torch.zeros((), dtype=torch.float64))
            self.register_buffer("ood_n_atoms_counts", torch.zeros(max_atoms + 1, dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return bool(self.n_atoms_counts.sum() > 0)

    @torch.no_grad()
    def fit(self, n_atoms: torch.Tensor, values: torch.Tensor | None = None) -> "PropertySampler":
        """Fill the histograms from training molecules: ``n_atoms [M]`` long, ``values [M]`` (user units)."""
        n_atoms = torch.as_tensor(n_atoms).long()
        if n_atoms.numel() == 0:
            raise ValueError("cannot fit a PropertySampler on zero molecules")
        if int(n_atoms.max()) > self.max_atoms or int(n_atoms.min()) < 1:
            raise ValueError(f"atom counts must lie in 1..{self.max_atoms}, got {int(n_atoms.min())}..{int(n_atoms.max())}")
        self.n_atoms_counts.copy_(torch.bincount(n_atoms, minlength=self.max_atoms + 1).double())
        if not self.conditional:
            return self
        if values is None:
            raise ValueError("a conditional PropertySampler needs the property values")
        values = torch.as_tensor(values).double()
        ok = torch.isfinite(values)
        n_atoms, values = n_atoms[ok], values[ok]
        self.n_atoms_counts.copy_(torch.bincount(n_atoms, minlength=self.max_atoms + 1).double())
        for n in n_atoms.unique().tolist():
            v = values[n_atoms == n]
            lo, hi = float(v.min()), float(v.max())
            if hi <= lo:
                hi = lo + 1e-9
            self.value_edges[n] = torch.linspace(lo, hi, self.n_bins + 1, dtype=torch.float64)
            self.value_counts[n] = torch.histc(v, bins=self.n_bins, min=lo, max=hi)
        self.ood_target.fill_(float(torch.quantile(values, 0.99)))
        p97 = float(torch.quantile(values, 0.97))
        self.ood_n_atoms_counts.copy_(torch.bincount(n_atoms[values >= p97], minlength=self.max_atoms + 1).double())
        return self

    def _require(self, conditional: bool = False) -> None:
        if not self.fitted:
            raise RuntimeError("PropertySampler has no histogram (call fit() on the training data first)")
        if conditional and not self.conditional:
            raise RuntimeError("this PropertySampler holds no property values (unconditional model)")

    def sample_n_atoms(self, n: int, generator: torch.Generator | None = None) -> list[int]:
        """``n`` atom counts from the training histogram."""
        self._require()
        return torch.multinomial(self.n_atoms_counts.cpu(), n, replacement=True, generator=generator).tolist()

    def sample_n_atoms_given(self, value: float, n: int, generator: torch.Generator | None = None,
                             width: float | None = None) -> list[int]:
        """``n`` atom counts from the training molecules whose value lies within ``value +- width`` (default width:
        5 % of the training range), i.e. from p(N | value): what a fixed target should be sampled with, since
        atom count and property are correlated (QM9's large-gap molecules are small). Falls back to the
        marginal histogram when no training molecule is that close."""
        self._require(conditional=True)
        counts, edges = self.value_counts.cpu(), self.value_edges.cpu()
        used = self.n_atoms_counts.cpu() > 0
        lo_all, hi_all = float(edges[used, 0].min()), float(edges[used, -1].max())
        w = 0.05 * (hi_all - lo_all) if width is None else float(width)
        centres = 0.5 * (edges[:, 1:] + edges[:, :-1])                               # [max_atoms+1, n_bins]
        near = ((centres - value).abs() <= w) & used[:, None]
        weights = (counts * near).sum(1)                                             # [max_atoms+1]
        if float(weights.sum()) <= 0:
            return self.sample_n_atoms(n, generator)
        return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[list[int], list[float]]:
        """``n`` in-distribution (atom count, value) pairs."""
        self._require(conditional=True)
        sizes = self.sample_n_atoms(n, generator)
        counts, edges = self.value_counts.cpu(), self.value_edges.cpu()
        values = []
        for size in sizes:
            b = int(torch.multinomial(counts[size], 1, generator=generator))
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            values.append(float(edges[size, b] + u * (edges[size, b + 1] - edges[size, b])))
        return sizes, values

    def sample_ood(self, n: int, generator: torch.Generator | None = None) -> tuple[list[int], list[float]]:
        """``n`` out-of-distribution pairs: the 99th-percentile target, N from molecules above the 97th."""
        self._require(conditional=True)
        sizes = torch.multinomial(self.ood_n_atoms_counts.cpu(), n, replacement=True, generator=generator).tolist()
        return sizes, [float(self.ood_target)] * n

    def draw(self, n: int, target: float | None = None, generator: torch.Generator | None = None,
             ood: bool = False) -> tuple[list[int], list[float] | None]:
        """Atom counts and target values for ``n`` molecules, as every QM9 generator samples them: unconditional ->
        N from the histogram (values None); ``target`` -> N from p(N | target); ``ood`` -> the out-of-distribution
        task (:meth:`sample_ood`); otherwise in-distribution (N, value) pairs (:meth:`sample`)."""
        if not self.conditional:
            if target is not None or ood:
                raise RuntimeError("this PropertySampler holds no property values (unconditional model)")
            return self.sample_n_atoms(n, generator), None
        if ood:
            return self.sample_ood(n, generator)
        if target is not None:
            return self.sample_n_atoms_given(float(target), n, generator), [float(target)] * n
        return self.sample(n, generator)

    def extra_repr(self) -> str:
        return f"max_atoms={self.max_atoms}, n_bins={self.n_bins}, conditional={self.conditional}"
