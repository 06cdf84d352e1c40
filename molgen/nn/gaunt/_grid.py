"""The S2-grid path of the Gaunt tensor product (Xie et al., "The Price of Freedom", ICML 2025).

Both operands are synthesised on a Gauss-Legendre (in cos theta) x uniform (in phi) grid, multiplied pointwise
and projected back by quadrature, which is exact for band-limited functions (``n_theta = (L1+L2+Lo)//2 + 1``,
``n_phi = L1+L2+Lo+1``). Each transform is separable (order-wise Legendre step, then a small phi matrix), so
it costs O(L^3) per pair, all of it in GEMMs whose long axis is the batch.

Why a custom autograd function: the per-pair intermediates (grid values) are ~10x larger than the inputs, so
letting autograd keep them makes the op memory-bound and memory-hungry. :class:`_GridGaunt` processes the batch
in cache-sized chunks, keeps only the inputs, and recomputes the grid values in backward (the product is
bilinear, so the gradients are two more Gaunt-like products). Its backward is itself made of differentiable
ops, so double backward works too.
"""
from __future__ import annotations

import torch
from torch import Tensor

from molgen.nn.gaunt._basis import plan_tensors

#: grid values per chunk (floats); ~1 MiB in float32 keeps a chunk's intermediates in cache on CPU
CHUNK_POINTS_CPU = 1 << 18
CHUNK_POINTS_CUDA = 1 << 26


def _synthesize(x: Tensor, t: dict[str, Tensor], k: str) -> Tensor:
    """Grid values ``[P, T, B]`` of the functions with SH coefficients ``x [B, n]`` (operand ``k`` = "1"/"2")."""
    index, theta, phi = t["index" + k], t["theta" + k], t["phi" + k]
    n_slots, n_l = index.shape
    xg = x.t().index_select(0, index.reshape(-1)).view(n_slots, n_l, x.shape[0])  # [S, L+1, B]; empty slots: row 0 x 0
    per_order = torch.matmul(theta, xg)  # [S, T, L+1] @ [S, L+1, B] -> [S, T, B]
    values = torch.matmul(phi, per_order.view(n_slots, -1))  # [P, S] @ [S, T*B] -> [P, T*B]
    return values.view(phi.shape[0], theta.shape[1], x.shape[0])


def _synthesize_adjoint(values: Tensor, t: dict[str, Tensor], k: str) -> Tensor:
    """Transpose of :func:`_synthesize`: ``[P, T, B] -> [B, n]``."""
    theta, phi, position = t["theta" + k], t["phi" + k], t["position" + k]
    n_phi, n_theta, batch = values.shape
    per_order = torch.matmul(phi.t(), values.reshape(n_phi, -1))  # [S, T*B]
    coeffs = torch.matmul(theta.transpose(1, 2), per_order.view(-1, n_theta, batch))  # [S, L+1, B]
    return coeffs.view(-1, batch).index_select(0, position).t()


def _project(values: Tensor, t: dict[str, Tensor]) -> Tensor:
    """SH coefficients ``[B, (Lo+1)^2]`` of the function with grid ``values [P, T, B]`` (quadrature)."""
    n_phi, n_theta, batch = values.shape
    per_order = torch.matmul(t["phi_out"], values.reshape(n_phi, -1))  # [S, P] @ [P, T*B] -> [S, T*B]
    coeffs = torch.matmul(t["theta_out"], per_order.view(-1, n_theta, batch))  # [S, Lo+1, T] @ [S, T, B]
    return coeffs.view(-1, batch).index_select(0, t["out_index"]).t()


def _project_adjoint(grad: Tensor, t: dict[str, Tensor]) -> Tensor:
    """Transpose of :func:`_project`: ``[B, (Lo+1)^2] -> [P, T, B]``."""
    theta_out, phi_out = t["theta_out"], t["phi_out"]
    n_slots, n_l, n_theta = theta_out.shape
    batch = grad.shape[0]
    coeffs = grad.new_zeros(n_slots * n_l, batch).index_copy(0, t["out_index"], grad.t())
    per_order = torch.matmul(theta_out.transpose(1, 2), coeffs.view(n_slots, n_l, batch))  # [S, T, B]
    values = torch.matmul(phi_out.t(), per_order.view(n_slots, -1))  # [P, T*B]
    return values.view(phi_out.shape[1], n_theta, batch)


def _chunks(outer: int, per_outer: int, device: torch.device) -> list[slice]:
    target = CHUNK_POINTS_CUDA if device.type == "cuda" else CHUNK_POINTS_CPU
    step = max(1, target // max(1, per_outer))
    return [slice(i, min(i + step, outer)) for i in range(0, outer, step)]


def _collect(parts: list[Tensor], out: Tensor | None) -> Tensor:
    return out if out is not None else (torch.cat(parts) if len(parts) > 1 else parts[0])


def _forward(x1: Tensor, x2: Tensor, t: dict[str, Tensor]) -> Tensor:
    """``x1 [O, I1, n1], x2 [O, I2, n2]`` (I1, I2 in {1, I}) -> ``[O, I, n_out]``, chunked over O."""
    outer, inner = x1.shape[0], max(x1.shape[1], x2.shape[1])
    grid = t["phi1"].shape[0] * t["theta1"].shape[1]
    # without autograd recording, chunks are written into one buffer (no concatenation of transposed chunks)
    out = None if torch.is_grad_enabled() else x1.new_empty(outer, inner, t["out_index"].numel())
    parts = []
    for c in _chunks(outer, grid * inner, x1.device):
        a, b = x1[c], x2[c]
        v1 = _synthesize(a.reshape(-1, a.shape[-1]), t, "1").unflatten(-1, a.shape[:2])  # [P, T, o, I1]
        v2 = _synthesize(b.reshape(-1, b.shape[-1]), t, "2").unflatten(-1, b.shape[:2])  # [P, T, o, I2]
        res = _project((v1 * v2).flatten(2), t).view(a.shape[0], inner, -1)
        if out is None:
            parts.append(res)
        else:
            out[c] = res
    return _collect(parts, out)


def _backward(grad: Tensor, x1: Tensor, x2: Tensor, t: dict[str, Tensor], need1: bool, need2: bool):
    outer, inner = grad.shape[0], grad.shape[1]
    grid = t["phi1"].shape[0] * t["theta1"].shape[1]
    record = torch.is_grad_enabled()  # double backward: build the result from differentiable ops
    out1 = None if record or not need1 else torch.empty_like(x1)
    out2 = None if record or not need2 else torch.empty_like(x2)
    g1, g2 = [], []
    for c in _chunks(outer, grid * inner, grad.device):
        a, b, g = x1[c], x2[c], grad[c]
        gv = _project_adjoint(g.reshape(-1, g.shape[-1]), t).unflatten(-1, g.shape[:2])  # [P, T, o, I]
        v1 = _synthesize(a.reshape(-1, a.shape[-1]), t, "1").unflatten(-1, a.shape[:2]) if need2 else None
        v2 = _synthesize(b.reshape(-1, b.shape[-1]), t, "2").unflatten(-1, b.shape[:2]) if need1 else None
        if need1:
            w = gv * v2
            w = w.sum(-1, keepdim=True) if a.shape[1] == 1 else w  # operand broadcast over I
            res = _synthesize_adjoint(w.flatten(2), t, "1").view(a.shape)
            g1.append(res) if out1 is None else out1[c].copy_(res)
        if need2:
            w = gv * v1
            w = w.sum(-1, keepdim=True) if b.shape[1] == 1 else w
            res = _synthesize_adjoint(w.flatten(2), t, "2").view(b.shape)
            g2.append(res) if out2 is None else out2[c].copy_(res)
    return (_collect(g1, out1) if need1 else None), (_collect(g2, out2) if need2 else None)


class _GridGaunt(torch.autograd.Function):
    """Chunked S2-grid Gaunt product that saves only its inputs (see module docstring)."""

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, t: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x1, x2)
        ctx.tables = t
        return _forward(x1, x2, t)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x1, x2 = ctx.saved_tensors
        g1, g2 = _backward(grad, x1, x2, ctx.tables, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return g1, g2, None


def _outer_inner(x: Tensor, batch: torch.Size) -> Tensor:
    """``x [..., n]`` as ``[O, I or 1, n]``: leading batch axes expanded to ``batch``, the last one kept."""
    x = x.reshape((1,) * (len(batch) + 1 - x.dim()) + tuple(x.shape))
    x = x.expand(*batch[:-1], x.shape[-2], x.shape[-1])
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def grid_product(x1: Tensor, x2: Tensor, lmax1: int, lmax2: int, lmax_out: int) -> Tensor:
    """Gaunt product by S2 quadrature. ``x1 [..., n1], x2 [..., n2]`` (broadcasting) -> ``[..., (Lo+1)^2]``."""
    t = plan_tensors("grid", lmax1, lmax2, lmax_out, x1.dtype, x1.device)
    batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    if len(batch) == 0:
        return grid_product(x1[None], x2[None], lmax1, lmax2, lmax_out)[0]
    a, b = _outer_inner(x1, batch), _outer_inner(x2, batch)
    out = _GridGaunt.apply(a, b, t)
    return out.reshape(*batch, out.shape[-1])
