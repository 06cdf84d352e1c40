"""The S2-grid path of the Gaunt tensor product (Xie et al., "The Price of Freedom", ICML 2025).

Both operands are synthesised on a Gauss-Legendre (in cos theta) x uniform (in phi) grid, multiplied pointwise
and projected back by quadrature, which is exact for band-limited functions (``n_theta = (L1+L2+Lo)//2 + 1``,
``n_phi >= L1+L2+Lo+1``, odd). Each transform is separable (an order-wise Legendre GEMM, then a small phi
GEMM), so it costs O(L^3) per pair, all of it in GEMMs whose long axis is the batch.

Half grid in phi (tables in ``_basis.HalfGridPlan``): a real function on an odd uniform phi grid is
``f(+-phi_k) = C(k) +- S(k)`` (cosine and sine parts), so only k = 0..n_phi//2 is synthesised, and the product
and its projection are written in (C, S): ``C_h = C_f C_g + S_f S_g``, ``S_h = C_f S_g + S_f C_g``. This halves
the phi GEMMs (most of the arithmetic) and never forms the full grid.

Why a custom autograd function: the per-pair intermediates (grid values) are ~10x larger than the inputs, so
letting autograd keep them makes the op memory-bound and memory-hungry. :class:`_GridGaunt` processes the batch
in cache-sized chunks, keeps only the inputs, and recomputes the grid values in backward (the product is
bilinear, so the gradients are two more Gaunt-like products). Its backward is itself made of differentiable
ops, so double backward works too. On CPU much of the cost is memory traffic and per-op dispatch rather than
arithmetic, so the chunk is sized to stay in cache and table views are prepared once per size (``_tables``).

On CPU (float32 / float64) the forward and the first-order backward run instead in a fused C kernel
(``_kernel.c`` via ``_cpu``; same tables, same algorithm) that takes tiles of 16 pairs through all stages while
they sit in cache, 1.3-5x faster than these torch ops. The torch ops remain the reference implementation and run
for double backward, on CUDA, and where no C compiler is found (``MOLGEN_GAUNT_KERNEL=torch`` forces them).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from molgen.nn.gaunt import _cpu
from molgen.nn.gaunt._basis import plan_tensors

#: half-grid values per chunk, both operands (2 (n_phi//2+1) n_theta per function and pair): ~1 MiB in float32,
#: one core's L2. Measured in-process at lmax 2, 4, 6, 8 (fwd+bwd, one thread): best or equal; 2^17 is ~10 %
#: slower at lmax 4 and 8, 2^20 is slower everywhere.
CHUNK_POINTS_CPU = 1 << 18
CHUNK_POINTS_CUDA = 1 << 24


@lru_cache(maxsize=None)
def _tables(lmax1: int, lmax2: int, lmax_out: int, dtype: torch.dtype, device: torch.device) -> dict:
    """The plan's tensors plus the flattened / transposed views the kernels use (built once per size)."""
    t = dict(plan_tensors("half", lmax1, lmax2, lmax_out, dtype, device))
    for k in ("1", "2", "_out"):
        t["gather_flat" + k] = t["gather" + k].reshape(-1)
    for k in ("1", "2"):
        t["legendre_t" + k] = t["legendre" + k].transpose(1, 2)
        t["phi_t" + k] = t["phi" + k].transpose(1, 2)
    t["legendre_t_out"] = t["legendre_out"].transpose(1, 2)
    t["phi_t_out"] = t["phi_out"].transpose(1, 2)
    t["points"] = 2 * t["phi1"].shape[1] * t["legendre1"].shape[1]  # half-grid values per function
    return t


# ---------------------------------------------------------------------------------------------------------------
# Transforms. Slots: cos orders 0..L, an empty slot, sin orders 1..L (``_basis._slots``); K = n_phi//2 + 1.
# ---------------------------------------------------------------------------------------------------------------


def _gather_slots(x: Tensor, t: dict, k: str) -> Tensor:
    """SH coefficients ``x [B, n]`` as per-slot columns ``[S, L+1, B]`` (table ``gather{k}``).

    From degree 3 on, the gather runs along x's contiguous rows and the GEMM reads the result through a
    transposed view; for smaller tables gathering rows of ``x.t()`` is faster (measured: 6 vs 12 ns per pair at
    lmax 1, 126 vs 138 at lmax 6).
    """
    gather = t["gather" + k]
    if gather.shape[1] <= 3:
        return x.t().index_select(0, t["gather_flat" + k]).view(*gather.shape, x.shape[0])
    xg = x.index_select(1, t["gather_flat" + k]).view(x.shape[0], *gather.shape)
    return xg.permute(1, 2, 0)


def _synthesize_half(x: Tensor, t: dict, k: str) -> Tensor:
    """Cosine and sine parts ``[2, K, T, B]`` of the functions with SH coefficients ``x [B, n]`` (operand k)."""
    batch = x.shape[0]
    nodes = torch.bmm(t["legendre" + k], _gather_slots(x, t, k))  # [S, T, Kl] @ [S, Kl, B] -> [S, T, B]
    phi = t["phi" + k]  # [2, K, L+1]
    return torch.bmm(phi, nodes.view(2, phi.shape[2], -1)).view(2, phi.shape[1], nodes.shape[1], batch)


def _synthesize_half_adjoint(f: Tensor, t: dict, k: str) -> Tensor:
    """Transpose of :func:`_synthesize_half`: ``[2, K, T, B] -> [B, n]``."""
    phi_t, legendre_t = t["phi_t" + k], t["legendre_t" + k]
    batch = f.shape[-1]
    nodes = torch.bmm(phi_t, f.reshape(2, f.shape[1], -1))  # [2, L+1, T*B]
    coeffs = torch.bmm(legendre_t, nodes.view(legendre_t.shape[0], -1, batch))  # [S, Kl, B]
    return coeffs.view(-1, batch).index_select(0, t["position" + k]).t()


def _project_half(h: Tensor, t: dict) -> Tensor:
    """SH coefficients ``[B, (Lo+1)^2]`` of the function with cosine and sine parts ``h [2, K, T, B]``."""
    table = t["legendre_out"]  # [S, Kl, T]
    batch = h.shape[-1]
    nodes = torch.bmm(t["phi_out"], h.reshape(2, h.shape[1], -1))  # [2, Lo+1, T*B]
    coeffs = torch.bmm(table, nodes.view(table.shape[0], -1, batch))  # [S, Kl, B]
    return coeffs.view(-1, batch).index_select(0, t["out_index"]).t()


def _project_half_adjoint(grad: Tensor, t: dict) -> Tensor:
    """Transpose of :func:`_project_half`: ``[B, (Lo+1)^2] -> [2, K, T, B]``."""
    phi_t = t["phi_t_out"]
    batch = grad.shape[0]
    nodes = torch.bmm(t["legendre_t_out"], _gather_slots(grad, t, "_out"))  # [S, T, B]
    return torch.bmm(phi_t, nodes.view(2, phi_t.shape[2], -1)).view(2, phi_t.shape[1], nodes.shape[1], batch)


def _times(f: Tensor, g: Tensor) -> Tensor:
    """(C, S) parts ``[2, ...]`` of the pointwise product: ``(Cf Cg + Sf Sg, Cf Sg + Sf Cg)`` (broadcasting)."""
    h = f[0] * g  # (Cf Cg, Cf Sg); the second terms are added in place (no copy of g with its halves swapped)
    h[0].addcmul_(f[1], g[1])
    h[1].addcmul_(f[1], g[0])
    return h


# ---------------------------------------------------------------------------------------------------------------
# Chunked forward / backward and the autograd function
# ---------------------------------------------------------------------------------------------------------------


def _chunks(outer: int, per_outer: int, device: torch.device) -> list[slice]:
    target = CHUNK_POINTS_CUDA if device.type == "cuda" else CHUNK_POINTS_CPU
    step = max(1, target // max(1, per_outer))
    return [slice(i, min(i + step, outer)) for i in range(0, outer, step)]


def _collect(parts: list[Tensor], out: Tensor | None) -> Tensor:
    return out if out is not None else (torch.cat(parts) if len(parts) > 1 else parts[0])


def _grid_values(x: Tensor, t: dict, k: str) -> Tensor:
    """``x [o, I, n]`` -> cosine and sine parts ``[2, K, T, o, I]``."""
    return _synthesize_half(x.reshape(-1, x.shape[-1]), t, k).unflatten(-1, x.shape[:2])


def _forward(x1: Tensor, x2: Tensor, t: dict) -> Tensor:
    """``x1 [O, I1, n1], x2 [O, I2, n2]`` (I1, I2 in {1, I}) -> ``[O, I, n_out]``, chunked over O."""
    outer, inner = x1.shape[0], max(x1.shape[1], x2.shape[1])
    # without autograd recording, chunks are written into one buffer (no concatenation of transposed chunks)
    out = None if torch.is_grad_enabled() else x1.new_empty(outer, inner, t["out_index"].numel())
    parts = []
    for c in _chunks(outer, t["points"] * inner * 2, x1.device):
        a, b = x1[c], x2[c]
        h = _times(_grid_values(a, t, "1"), _grid_values(b, t, "2"))  # [2, K, T, o, I]
        res = _project_half(h.flatten(3), t).view(a.shape[0], inner, -1)
        if out is None:
            parts.append(res)
        else:
            out[c] = res
    return _collect(parts, out)


def _backward(grad: Tensor, x1: Tensor, x2: Tensor, t: dict, need1: bool, need2: bool):
    outer, inner = grad.shape[0], grad.shape[1]
    record = torch.is_grad_enabled()  # double backward: build the result from differentiable ops
    out1 = None if record or not need1 else torch.empty_like(x1)
    out2 = None if record or not need2 else torch.empty_like(x2)
    g1, g2 = [], []
    for c in _chunks(outer, t["points"] * inner * 2, grad.device):
        a, b, g = x1[c], x2[c], grad[c]
        gh = _project_half_adjoint(g.reshape(-1, g.shape[-1]), t).unflatten(-1, g.shape[:2])  # [2, K, T, o, I]
        for need, x, other, k, parts, out in ((need1, a, b, "2", g1, out1), (need2, b, a, "1", g2, out2)):
            if not need:
                continue
            d = _times(gh, _grid_values(other, t, k))  # product rule: [2, K, T, o, I]
            if x.shape[1] == 1 and inner > 1:  # operand broadcast over I
                d = d.sum(-1, keepdim=True)
            res = _synthesize_half_adjoint(d.flatten(3), t, "1" if k == "2" else "2").view(x.shape)
            parts.append(res) if out is None else out[c].copy_(res)
    return (_collect(g1, out1) if need1 else None), (_collect(g2, out2) if need2 else None)


def _pairs(x: Tensor, inner: int) -> Tensor:
    """``x [O, I or 1, n]`` as contiguous rows ``[O * I, n]`` (a broadcast operand is expanded)."""
    return x.expand(x.shape[0], inner, x.shape[2]).reshape(-1, x.shape[2]).contiguous()


def _forward_c(x1: Tensor, x2: Tensor, t: dict) -> Tensor:
    outer, inner = x1.shape[0], max(x1.shape[1], x2.shape[1])
    out = _cpu.forward(_pairs(x1, inner), _pairs(x2, inner), t)
    return out.view(outer, inner, out.shape[-1])


def _backward_c(grad: Tensor, x1: Tensor, x2: Tensor, t: dict, need1: bool, need2: bool):
    outer, inner = grad.shape[0], grad.shape[1]
    g1, g2 = _cpu.backward(grad.reshape(outer * inner, grad.shape[-1]).contiguous(), _pairs(x1, inner),
                           _pairs(x2, inner), t, need1, need2)
    out = []
    for g, x in ((g1, x1), (g2, x2)):
        if g is not None:
            g = g.view(outer, inner, x.shape[-1])
            g = g.sum(1, keepdim=True) if x.shape[1] == 1 and inner > 1 else g  # operand broadcast over I
        out.append(g)
    return out


class _GridGaunt(torch.autograd.Function):
    """Chunked S2-grid Gaunt product that saves only its inputs (see module docstring).

    On CPU (float32/float64) forward and first-order backward run in the fused C kernel (``_cpu``) when it is
    available; double backward (``create_graph=True``) and other devices use the torch ops below.
    """

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, t: dict) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x1, x2)
        ctx.tables = t
        if _cpu.available(x1):
            return _forward_c(x1, x2, t)
        return _forward(x1, x2, t)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x1, x2 = ctx.saved_tensors
        need1, need2 = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not torch.is_grad_enabled() and _cpu.available(grad):
            g1, g2 = _backward_c(grad, x1, x2, ctx.tables, need1, need2)
        else:
            g1, g2 = _backward(grad, x1, x2, ctx.tables, need1, need2)
        return g1, g2, None


def _outer_inner(x: Tensor, batch: torch.Size) -> Tensor:
    """``x [..., n]`` as ``[O, I or 1, n]``: leading batch axes expanded to ``batch``, the last one kept."""
    x = x.reshape((1,) * (len(batch) + 1 - x.dim()) + tuple(x.shape))
    x = x.expand(*batch[:-1], x.shape[-2], x.shape[-1])
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def grid_product(x1: Tensor, x2: Tensor, lmax1: int, lmax2: int, lmax_out: int) -> Tensor:
    """Gaunt product by S2 quadrature. ``x1 [..., n1], x2 [..., n2]`` (broadcasting) -> ``[..., (Lo+1)^2]``."""
    t = _tables(lmax1, lmax2, lmax_out, x1.dtype, x1.device)
    batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    if len(batch) == 0:
        return grid_product(x1[None], x2[None], lmax1, lmax2, lmax_out)[0]
    a, b = _outer_inner(x1, batch), _outer_inner(x2, batch)
    out = _GridGaunt.apply(a, b, t)
    return out.reshape(*batch, out.shape[-1])


# ---------------------------------------------------------------------------------------------------------------
# Full-grid transforms (plan "grid"), used by GauntManyBody for pointwise powers of one function
# ---------------------------------------------------------------------------------------------------------------


def _synthesize(x: Tensor, t: dict[str, Tensor], k: str) -> Tensor:
    """Grid values ``[P, T, B]`` of the functions with SH coefficients ``x [B, n]`` (operand ``k`` = "1"/"2")."""
    index, theta, phi = t["index" + k], t["theta" + k], t["phi" + k]
    n_slots, n_l = index.shape
    xg = x.t().index_select(0, index.reshape(-1)).view(n_slots, n_l, x.shape[0])  # [S, L+1, B]; empty slots: row 0 x 0
    per_order = torch.matmul(theta, xg)  # [S, T, L+1] @ [S, L+1, B] -> [S, T, B]
    values = torch.matmul(phi, per_order.view(n_slots, -1))  # [P, S] @ [S, T*B] -> [P, T*B]
    return values.view(phi.shape[0], theta.shape[1], x.shape[0])


def _project(values: Tensor, t: dict[str, Tensor]) -> Tensor:
    """SH coefficients ``[B, (Lo+1)^2]`` of the function with grid ``values [P, T, B]`` (quadrature)."""
    n_phi, n_theta, batch = values.shape
    per_order = torch.matmul(t["phi_out"], values.reshape(n_phi, -1))  # [S, P] @ [P, T*B] -> [S, T*B]
    coeffs = torch.matmul(t["theta_out"], per_order.view(-1, n_theta, batch))  # [S, Lo+1, T] @ [S, T, B]
    return coeffs.view(-1, batch).index_select(0, t["out_index"]).t()
