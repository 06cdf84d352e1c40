"""The Gaunt tensor product: SH coefficients of the pointwise product of two spherical functions.

Luo, Chen & Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt Tensor
Products", ICLR 2024 (https://arxiv.org/abs/2401.10216); S2-grid variant after Xie et al., "The Price of
Freedom", ICML 2025 (https://arxiv.org/abs/2506.13523).

    (x1 (x)_G x2)_{l3 m3} = sum G^{l1 l2 l3}_{m1 m2 m3} x1_{l1 m1} x2_{l2 m2},
    G^{l1 l2 l3}_{m1 m2 m3} = int Y_{l1 m1} Y_{l2 m2} Y_{l3 m3} dOmega,

i.e. the coefficients of ``F1 F2`` where ``Fi = sum x_i Y``. Two exact O(L^3) algorithms are provided:

* ``"fourier"`` (the paper's): SH -> 2D Fourier coefficients (sparse: v = +-m only) -> linear 2D convolution
  by FFT on a torus grid -> projection back to SH (sparse in v again).
* ``"grid"`` (the follow-up's): SH -> values on a Gauss-Legendre x uniform S2 grid (separable: an order-wise
  Legendre step, then a small phi matrix) -> pointwise product -> quadrature back to SH.

Both are plain differentiable torch ops (autograd, double backward, float32/float64, CPU/CUDA).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from molgen.errors import MolgenError
from molgen.nn.gaunt._basis import plan_tensors
from molgen.nn.gaunt._fourier import _sh2f_half, fourier_product
from molgen.nn.gaunt._grid import grid_product

METHODS = ("auto", "grid", "fourier")


def degree_of(dim: int, name: str = "input") -> int:
    """``L`` such that ``dim == (L+1)^2``, or a :class:`MolgenError` naming ``name``."""
    lmax = math.isqrt(dim) - 1
    if dim < 1 or (lmax + 1) ** 2 != dim:
        raise MolgenError(f"{name} has last dimension {dim}, which is not (L+1)^2 SH coefficients for any L")
    return lmax


def choose_method(lmax1: int, lmax2: int, lmax_out: int, device: torch.device) -> str:
    """The faster exact path for these sizes (see docs/gaunt.md, "Which path").

    On CPU the S2-grid path was faster than the 2D-Fourier path at every size measured (lmax 1..8, forward and
    forward+backward, scripts/bench_gaunt.py --impls grid fourier), because it needs about half the theta
    samples (Gauss-Legendre nodes on [0, pi] instead of a uniform torus grid on [0, 2 pi)), only half the phi
    circle (cosine and sine parts) and no complex arithmetic. Without GPU measurements the same rule is used on
    CUDA.
    """
    return "grid"


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def gaunt_tensor_product(x1: Tensor, x2: Tensor, lmax_out: int | None = None, method: str = "auto") -> Tensor:
    r"""Gaunt tensor product: SH coefficients of the pointwise product of two spherical functions.

    .. math::
        z_{l_3 m_3} = \sum G^{l_1 l_2 l_3}_{m_1 m_2 m_3} x^{(1)}_{l_1 m_1} x^{(2)}_{l_2 m_2},\qquad
        G = \int Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}\, d\Omega

    Equals e3nn's tensor product restricted to parity-even paths (l1+l2+l3 even) with path weights
    ``G / wigner_3j``. Coefficients are in e3nn's basis and order (``o3.spherical_harmonics(...,
    normalization="integral")``: l = 0..L, m = -l..l, orthonormal on the sphere).

    Args:
        x1: SH coefficients of the first function, degrees 0..L1.
        x2: SH coefficients of the second function, degrees 0..L2.
        lmax_out: highest output degree (default ``L1 + L2``, which is exact; lower degrees are a truncation).
        method: ``"grid"`` (S2 quadrature), ``"fourier"`` (2D FFT, the paper's) or ``"auto"`` (the faster one for
            the sizes given, see :func:`choose_method`). All are exact to rounding.

    Shapes:
        x1 ``[..., (L1+1)^2]``, x2 ``[..., (L2+1)^2]`` (leading dimensions broadcast) -> ``[..., (lmax_out+1)^2]``.

    Example:
        >>> import torch
        >>> from molgen.nn.gaunt import gaunt_tensor_product
        >>> x1, x2 = torch.randn(10, 16), torch.randn(10, 9)       # L1 = 3, L2 = 2
        >>> gaunt_tensor_product(x1, x2).shape                     # up to L1 + L2 = 5
        torch.Size([10, 36])
    """
    lmax1 = degree_of(x1.shape[-1], "x1")
    lmax2 = degree_of(x2.shape[-1], "x2")
    if lmax_out is None:
        lmax_out = lmax1 + lmax2
    if lmax_out < 0:
        raise MolgenError(f"lmax_out must be >= 0, got {lmax_out}")
    if method not in METHODS:
        raise MolgenError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if x1.dtype != x2.dtype or not x1.is_floating_point():
        raise MolgenError(f"x1 and x2 must share a floating dtype, got {x1.dtype} and {x2.dtype}")
    if method == "auto":
        method = choose_method(lmax1, lmax2, lmax_out, x1.device)
    if lmax_out > lmax1 + lmax2:  # higher degrees of the product are exactly zero
        out = gaunt_tensor_product(x1, x2, lmax1 + lmax2, method)
        return torch.nn.functional.pad(out, (0, (lmax_out + 1) ** 2 - out.shape[-1]))
    product = grid_product if method == "grid" else fourier_product
    return product(x1, x2, lmax1, lmax2, lmax_out)


def sh_to_fourier(x: Tensor) -> Tensor:
    """2D Fourier coefficients of the spherical function with real SH coefficients ``x`` (sparse change of basis).

    ``F(theta, phi) = sum_{u,v} out[..., u + L, v + L] exp(i (u theta + v phi))`` in molgen's torus coordinates
    (polar axis y: ``x = sin(theta) sin(phi), y = cos(theta), z = sin(theta) cos(phi)``).

    Shapes:
        x ``[..., (L+1)^2]`` -> ``[..., 2L+1 (u), 2L+1 (v)]`` complex.
    """
    lmax = degree_of(x.shape[-1], "x")
    plan = plan_tensors("fourier", lmax, 0, 0, x.dtype, x.device)
    half = _sh2f_half(x.reshape(-1, x.shape[-1]), plan["slots1"], plan["sh2f1"]).transpose(-1, -2)  # [B, u, v>=0]
    # F[u, -v] = conj(F[-u, v]) for a real function
    negative = half[:, :, 1:].flip(1).flip(2).conj()
    return torch.cat([negative, half], dim=-1).reshape(*x.shape[:-1], 2 * lmax + 1, 2 * lmax + 1)


def fourier_to_sh(coefficients: Tensor, lmax_out: int) -> Tensor:
    """SH coefficients (degrees 0..lmax_out) of the real function with 2D Fourier ``coefficients``.

    The inverse of :func:`sh_to_fourier` on band-limited functions, and the projection onto degrees <= lmax_out
    of any real trigonometric polynomial on the torus (only its restriction to theta in [0, pi] matters).

    Shapes:
        coefficients ``[..., 2K+1 (u), 2K+1 (v)]`` complex, Hermitian (``F[-u, -v] = conj F[u, v]``)
        -> ``[..., (lmax_out+1)^2]``.
    """
    size = coefficients.shape[-1]
    if coefficients.shape[-2] != size or size % 2 != 1:
        raise MolgenError(f"coefficients must be [..., 2K+1, 2K+1], got {tuple(coefficients.shape)}")
    k = size // 2
    real_dtype = coefficients.real.dtype
    batch = coefficients.shape[:-2]
    flat = coefficients.reshape(-1, size, size)
    if lmax_out > k:
        flat = torch.nn.functional.pad(flat, (lmax_out - k,) * 4)
        k = lmax_out
    # plan "fourier" with L1 + L2 = K: n_theta = 2K+1 and u in FFT order; keep v = 0..lmax_out
    lmax1, lmax2 = k - k // 2, k // 2
    plan = plan_tensors("fourier", lmax1, lmax2, lmax_out, real_dtype, coefficients.device)
    half = flat[:, :, k : k + lmax_out + 1]  # [B, u (centered), v >= 0]
    half = torch.fft.ifftshift(half, dim=1)  # u in FFT order
    stacked = torch.cat([half.real, half.imag], dim=-2)
    out = torch.einsum("bkv,vko->bvo", stacked, plan["f2sh"])
    return out.reshape(out.shape[0], -1)[:, plan["out_index"]].reshape(*batch, -1)
