"""The paper's 2D-Fourier path of the Gaunt tensor product (Luo, Chen & Krishnapriyan, ICLR 2024, sec. 3.2).

SH -> 2D Fourier coefficients (sparse: column v only reads the coefficients with |m| = v) -> linear 2D
convolution by FFT on a torus grid of size (2(L1+L2)+1) x (L1+L2+Lo+1) -> projection onto SH (sparse in v).
O(L^3) per pair; plain differentiable torch ops.
"""
from __future__ import annotations

import torch
from torch import Tensor

from molgen.nn.gaunt._basis import plan_tensors


# ----------------------------------------------------------------------------------------------------------------


def _sh2f_half(x: Tensor, slots: Tensor, table: Tensor) -> Tensor:
    """Fourier coefficients ``[B, L+1 (v >= 0), 2L+1 (u = -L..L)]`` complex of SH coefficients ``x [B, n]``.

    Each column v only reads the 2(L+1-v) coefficients with |m| = v: an O(L^3) batched GEMM.
    """
    n_v, n_k = slots.shape
    xg = x.index_select(1, slots.reshape(-1)).view(x.shape[0], n_v, n_k)  # [B, V, K]
    f = torch.einsum("bvk,vkc->bvc", xg, table)  # [B, V, 2U] interleaved (re, im)
    return torch.view_as_complex(f.reshape(x.shape[0], n_v, -1, 2))


def _torus_values(f_half: Tensor, n_theta: int, n_phi: int) -> Tensor:
    """Values ``[B, n_theta, n_phi]`` on the uniform torus grid of the real function with half-plane coefficients."""
    lmax = f_half.shape[-1] // 2
    pad = f_half.new_zeros(*f_half.shape[:-1], n_theta - 2 * lmax - 1)
    in_fft_order = torch.cat([f_half[..., lmax:], pad, f_half[..., :lmax]], dim=-1)  # u = 0..L, 0.., -L..-1
    per_v = torch.fft.ifft(in_fft_order, dim=-1, norm="forward")  # [B, V, n_theta]: F_v(theta_j)
    return torch.fft.irfft(per_v.transpose(-1, -2), n=n_phi, dim=-1, norm="forward")  # v >= 0 half is enough


def _f2sh_half(values: Tensor, lmax_out: int, table: Tensor, out_index: Tensor) -> Tensor:
    """SH coefficients ``[B, (Lo+1)^2]`` of the real function sampled as ``values [B, n_theta, n_phi]``."""
    per_v = torch.fft.rfft(values, dim=-1, norm="forward")[..., : lmax_out + 1]  # [B, T, Lo+1]
    coef = torch.fft.fft(per_v, dim=-2, norm="forward")  # H[u (fft order), v]
    stacked = torch.cat([coef.real, coef.imag], dim=-2)  # [B, 2T, Lo+1]
    out = torch.einsum("bkv,vko->bvo", stacked, table)  # [B, Lo+1, 2(Lo+1)]
    return out.reshape(out.shape[0], -1).index_select(1, out_index)


def fourier_product(x1: Tensor, x2: Tensor, lmax1: int, lmax2: int, lmax_out: int) -> Tensor:
    plan = plan_tensors("fourier", lmax1, lmax2, lmax_out, x1.dtype, x1.device)
    n_theta = 2 * (lmax1 + lmax2) + 1
    n_phi = max(lmax1 + lmax2 + lmax_out + 1, 2 * max(lmax1, lmax2) + 1)
    x1, x2 = _broadcast(x1, x2)
    batch = x1.shape[:-1]
    f1 = _sh2f_half(x1.reshape(-1, x1.shape[-1]), plan["slots1"], plan["sh2f1"])
    f2 = _sh2f_half(x2.reshape(-1, x2.shape[-1]), plan["slots2"], plan["sh2f2"])
    prod = _torus_values(f1, n_theta, n_phi) * _torus_values(f2, n_theta, n_phi)  # FFT convolution
    out = _f2sh_half(prod, lmax_out, plan["f2sh"], plan["out_index"])
    return out.reshape(*batch, out.shape[-1])


def _broadcast(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
    return x1.expand(*batch, x1.shape[-1]), x2.expand(*batch, x2.shape[-1])
