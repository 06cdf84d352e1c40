"""Slow references for the Gaunt tensor product: Gaunt path weights and the equivalent e3nn tensor product.

Used by the tests and by scripts/bench_gaunt.py; independent of the Fourier/grid kernels (the Gaunt
coefficients come from brute-force quadrature of three spherical harmonics).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from e3nn import o3

from molgen.nn.gaunt._basis import e3nn_sh_angles, gauss_legendre


@lru_cache(maxsize=None)
def _quadrature_sh(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """SH ``[points, (lmax+1)^2]`` on a grid exact for triple products of degree <= lmax, and the weights."""
    n = 3 * lmax // 2 + 1
    theta, w_theta = gauss_legendre(n)
    n_phi = 3 * lmax + 1
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    y = e3nn_sh_angles(lmax, theta, phi).reshape(-1, (lmax + 1) ** 2)
    weights = np.repeat(w_theta, n_phi) * (2 * np.pi / n_phi)
    return y, weights


def gaunt_coefficients(l1: int, l2: int, l3: int) -> np.ndarray:
    """``G[m1, m2, m3] = int Y_{l1 m1} Y_{l2 m2} Y_{l3 m3} dOmega`` by exact quadrature, float64 ``[2l1+1, 2l2+1, 2l3+1]``."""
    y, w = _quadrature_sh(max(l1, l2, l3))
    y1, y2, y3 = (y[:, l * l : (l + 1) ** 2] for l in (l1, l2, l3))
    return np.einsum("p,pa,pb,pc->abc", w, y1, y2, y3)


@lru_cache(maxsize=None)
def gaunt_path_weight(l1: int, l2: int, l3: int) -> float:
    """The constant ``c`` with ``G^{l1 l2 l3} = c * o3.wigner_3j(l1, l2, l3)`` (Wigner-Eckart); 0 for odd paths."""
    if (l1 + l2 + l3) % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
        return 0.0
    w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
    return float((gaunt_coefficients(l1, l2, l3) * w3j).sum() / (w3j * w3j).sum())


def sh_irreps(lmax: int) -> o3.Irreps:
    """``1x0e + 1x1o + 1x2e + ...``: the irreps of SH coefficients (parity (-1)^l)."""
    return o3.Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])


def e3nn_gaunt_tensor_product(lmax1: int, lmax2: int, lmax_out: int,
                              dtype: torch.dtype = torch.float32) -> o3.TensorProduct:
    """e3nn's full tensor product restricted to parity-even paths, with Gaunt path weights.

    Computes the same function as ``gaunt_tensor_product(x1, x2, lmax_out)``, at the O(L^6) cost of a
    Clebsch-Gordan tensor product. The weights are fixed (``requires_grad=False``).

    Shapes:
        ``tp(x1 [..., (L1+1)^2], x2 [..., (L2+1)^2]) -> [..., (lmax_out+1)^2]``
    """
    irreps1, irreps2, irreps_out = sh_irreps(lmax1), sh_irreps(lmax2), sh_irreps(lmax_out)
    instructions, weights = [], []
    for l1 in range(lmax1 + 1):
        for l2 in range(lmax2 + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax_out) + 1):
                if (l1 + l2 + l3) % 2 == 0:
                    instructions.append((l1, l2, l3, "uuu", True))
                    weights.append(gaunt_path_weight(l1, l2, l3))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn stores its wigner_3j buffers in the default dtype
    try:
        tp = o3.TensorProduct(irreps1, irreps2, irreps_out, instructions, irrep_normalization="none",
                              path_normalization="none", internal_weights=True)
    finally:
        torch.set_default_dtype(default)
    tp = tp.to(dtype)
    with torch.no_grad():
        tp.weight.copy_(torch.tensor(weights, dtype=torch.float64))
    tp.weight.requires_grad_(False)
    return tp


def wigner_d(lmax: int, rotation: torch.Tensor) -> torch.Tensor:
    """Wigner-D ``[(L+1)^2, (L+1)^2]`` (block-diagonal, float64) in e3nn's SH basis: ``Y(R s) = D Y(s)``.

    Computed by exact quadrature of ``int Y(R s) Y(s)^T ds``; accurate to ~1e-14, whereas e3nn's
    ``Irreps.D_from_matrix`` agrees with its own spherical harmonics only to ~1e-6 (float32 constants).

    Shapes:
        rotation ``[3, 3]`` -> ``[(L+1)^2, (L+1)^2]``.
    """
    rot = rotation.detach().cpu().double().numpy()
    n = lmax + 2
    theta, w_theta = gauss_legendre(n)
    phi = 2 * np.pi * np.arange(2 * n + 1) / (2 * n + 1)
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    xyz = np.stack([np.sin(tt) * np.sin(pp), np.cos(tt), np.sin(tt) * np.cos(pp)], -1).reshape(-1, 3)
    weights = np.repeat(w_theta, len(phi)) * 2 * np.pi / len(phi)
    return torch.from_numpy((_sh_at(lmax, xyz @ rot.T) * weights[:, None]).T @ _sh_at(lmax, xyz))


def _sh_at(lmax: int, xyz: np.ndarray) -> np.ndarray:
    """e3nn SH ``[K, (L+1)^2]`` at unit points ``[K, 3]`` (float64, any degree)."""
    theta = np.arccos(np.clip(xyz[:, 1], -1.0, 1.0))
    phi = np.arctan2(xyz[:, 0], xyz[:, 2])
    return np.stack([e3nn_sh_angles(lmax, theta[k : k + 1], phi[k : k + 1])[0, 0] for k in range(len(xyz))])
