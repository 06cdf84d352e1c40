"""Change-of-basis constants for the Gaunt tensor product, built once per size from formulas and cached.

Coordinates. e3nn's real spherical harmonics use ``y`` as the polar axis. A point of the sphere (and of the
torus that covers it) is parametrised as

    x = sin(theta) sin(phi),   y = cos(theta),   z = sin(theta) cos(phi),

with ``theta`` in [0, pi] on the sphere and extended to [0, 2 pi) on the torus. In these coordinates e3nn's
``Y_l^m`` (``normalization="integral"``) is a trigonometric polynomial of degree <= l in ``theta`` whose
``phi``-dependence is ``cos(m phi)`` for m > 0, ``1`` for m = 0 and ``sin(|m| phi)`` for m < 0. Hence its 2D
Fourier coefficients ``y^{l,m}_{u,v}`` are non-zero only for ``|u| <= l`` and ``v = +-|m|`` (Luo et al. 2024,
sec. 3.2): this sparsity is what makes the basis changes O(L^3).

How the constants are obtained (no downloaded constant files):

* ``Y_l^m`` itself: :func:`e3nn_sh_angles` (e3nn's definition, evaluated by the stable Legendre recurrence).
* ``y^{l,m}_{u,v}``: ``Y_l^m`` sampled on a uniform (2L+1) x (2L+1) torus grid and transformed with a 2D DFT. This is exact (to rounding), because a trigonometric polynomial of degree <= L is determined
  by 2L+1 uniform samples per axis. The off-support entries are checked to vanish.
* Fourier -> SH: ``z^{l,m}_{u,v} = int e^{i(u theta + v phi)} Y_l^m sin(theta) dtheta dphi
  = 2 pi sum_{u'} y^{l,m}_{u',-v} I(u+u')`` with the closed form ``I(k) = int_0^pi e^{ik theta} sin(theta)
  dtheta`` = 2/(1-k^2) (k even), +-i pi/2 (k = +-1), 0 (other odd k).
* S2 grid: Gauss-Legendre nodes in cos(theta) and uniform phi; the separable factor ``Theta_l^m(theta_j)``
  is read off the same samples (exact projection onto cos/sin(m phi)).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from e3nn import o3

_TOL = 1e-9  # structural checks on the float64 constants


def num_sh(lmax: int) -> int:
    """Number of real SH coefficients for degrees 0..lmax."""
    return (lmax + 1) ** 2


def e3nn_sh_angles(lmax: int, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """e3nn's real SH (integral normalization), degrees 0..lmax, on the grid ``theta x phi``: ``[T, P, (L+1)^2]``.

    e3nn defines them for any degree as ``Y_l^m = S_m(phi) Pbar_l^|m|(cos theta)`` with ``S = sqrt2 sin(|m| phi)``
    (m < 0), 1, ``sqrt2 cos(m phi)`` (m > 0) and ``Pbar`` the orthonormalised associated Legendre functions
    without the Condon-Shortley phase (``o3.spherical_harmonics_alpha_beta(l, alpha=phi, beta=theta)``; equal
    to ``o3.spherical_harmonics`` at ``(sin t sin p, cos t, sin t cos p)``). e3nn expands ``Pbar`` as sympy
    polynomials, which lose digits beyond l ~ 10; here ``Pbar`` comes from the standard stable three-term
    recurrence in (cos theta, sin theta), which for theta outside [0, pi] is the trigonometric-polynomial
    continuation used on the torus. tests/nn/test_gaunt_product.py checks the two agree.
    """
    theta = np.asarray(theta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    c, s = np.cos(theta), np.sin(theta)
    pbar = {(0, 0): np.full_like(theta, 1.0 / np.sqrt(4 * np.pi))}
    for m in range(1, lmax + 1):
        pbar[m, m] = np.sqrt((2 * m + 1) / (2 * m)) * s * pbar[m - 1, m - 1]
    for m in range(lmax + 1):
        if m + 1 <= lmax:
            pbar[m + 1, m] = np.sqrt(2 * m + 3) * c * pbar[m, m]
        for l in range(m + 2, lmax + 1):
            a = np.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = np.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            pbar[l, m] = a * (c * pbar[l - 1, m] - b * pbar[l - 2, m])
    out = np.empty((len(theta), len(phi), (lmax + 1) ** 2))
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            azimuth = np.sqrt(2) * (np.cos(m * phi) if m > 0 else np.sin(-m * phi)) if m else np.ones_like(phi)
            out[:, :, l * l + l + m] = np.outer(pbar[l, abs(m)], azimuth)
    return out


def lm_of(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Degree and order of each SH index in e3nn's order (l = 0..lmax, m = -l..l)."""
    ls = np.concatenate([np.full(2 * l + 1, l) for l in range(lmax + 1)])
    ms = np.concatenate([np.arange(-l, l + 1) for l in range(lmax + 1)])
    return ls, ms


@lru_cache(maxsize=None)
def sh2f_coefficients(lmax: int) -> np.ndarray:
    """Dense 2D Fourier coefficients of each real SH: ``[(lmax+1)^2, 2 lmax+1 (u), 2 lmax+1 (v)]`` complex128.

    Index ``[i, u + lmax, v + lmax]`` holds ``y^{l,m}_{u,v}`` such that
    ``Y_l^m(theta, phi) = sum_{u,v} y_{u,v} exp(i (u theta + v phi))``. Used to build the sparse tables; the
    dense array is O(L^4) memory and only meant for construction and tests.
    """
    m_grid = 2 * lmax + 1
    ang = 2 * np.pi * np.arange(m_grid) / m_grid
    vals = e3nn_sh_angles(lmax, ang, ang)  # [M (theta), M (phi), n]
    coef = np.fft.fft2(vals, axes=(0, 1)) / m_grid**2  # [u (fft order), v (fft order), n]
    coef = np.fft.fftshift(coef, axes=(0, 1)).transpose(2, 0, 1)  # [n, u + L, v + L]
    ls, ms = lm_of(lmax)
    u = np.arange(-lmax, lmax + 1)
    for i, (l, m) in enumerate(zip(ls, ms)):
        support = (np.abs(u)[:, None] <= l) & (np.abs(u)[None, :] == abs(m))
        off = np.abs(coef[i][~support]).max(initial=0.0)
        if off > _TOL:  # pragma: no cover - would mean e3nn changed its SH convention
            raise RuntimeError(f"SH (l={l}, m={m}) is not sparse in the 2D Fourier basis (off-support {off:.1e})")
        coef[i][~support] = 0.0
    return coef


def _sin_moment(k: np.ndarray) -> np.ndarray:
    """``I(k) = int_0^pi exp(i k theta) sin(theta) dtheta`` for integer ``k`` (closed form), complex128."""
    k = np.asarray(k)
    out = np.zeros(k.shape, dtype=np.complex128)
    even = k % 2 == 0
    out[even] = 2.0 / (1.0 - k[even].astype(np.float64) ** 2)
    out[k == 1] = 1j * np.pi / 2
    out[k == -1] = -1j * np.pi / 2
    return out


@lru_cache(maxsize=None)
def f2sh_coefficients(lmax_out: int, umax: int) -> np.ndarray:
    """Projection of Fourier modes onto SH: ``[(lmax_out+1)^2, 2 umax+1 (u), 2 lmax_out+1 (v)]`` complex128.

    ``z[i, u + umax, v + lmax_out] = int exp(i (u theta + v phi)) Y_i(theta, phi) dOmega`` over the sphere
    (theta in [0, pi]); so ``sh_i = sum_{u,v} H_{u,v} z[i, u, v]`` for a function with coefficients ``H``.
    Non-zero only for ``v = +-|m|``; dense in ``u``.
    """
    y = sh2f_coefficients(lmax_out)  # [n, 2Lo+1 (u'), 2Lo+1 (v')]
    u = np.arange(-umax, umax + 1)
    up = np.arange(-lmax_out, lmax_out + 1)
    moment = _sin_moment(u[:, None] + up[None, :])  # [u, u']
    # z[i, u, v] = 2 pi sum_u' y[i, u', -v] I(u + u')
    z = 2 * np.pi * np.einsum("iaw,ua->iuw", y[:, :, ::-1], moment)
    return z


# --------------------------------------------------------------------------------------------------------------
# Sparse tables in the layouts the kernels use. Built in float64 numpy, turned into tensors per dtype/device.
# --------------------------------------------------------------------------------------------------------------


def _v_slots(lmax: int) -> np.ndarray:
    """Index table ``[lmax+1 (v), 2(lmax+1) (slot)]`` of the SH indices with |m| = v (m = +v then m = -v, l = v..lmax).

    Empty slots hold the sentinel ``(lmax+1)^2`` (a zero row appended to the input).
    """
    n = num_sh(lmax)
    table = np.full((lmax + 1, 2 * (lmax + 1)), n, dtype=np.int64)
    for v in range(lmax + 1):
        k = 0
        for sign in ((1, -1) if v else (1,)):
            for l in range(v, lmax + 1):
                table[v, k] = l * l + l + sign * v
                k += 1
    return table


@dataclass(frozen=True)
class FourierPlan:
    """Tables of the 2D-Fourier path for inputs of degrees ``lmax1``, ``lmax2`` and output degree ``lmax_out``.

    Attributes:
        n_theta, n_phi: torus FFT sizes; ``n_theta = 2(L1+L2)+1`` (exact linear convolution in u) and
            ``n_phi = L1+L2+Lout+1`` (no aliasing onto the kept orders |v| <= Lout).
        slots1, slots2: ``[L+1, 2(L+1)]`` SH index per (v, slot), see :func:`_v_slots`.
        sh2f1, sh2f2: ``[L+1 (v), 2(L+1) (slot), 2(2L+1)]`` real; interleaved (re, im) of ``y_{u,v}`` for
            u = -L..L (the v >= 0 half-plane; v < 0 follows from Hermitian symmetry).
        f2sh: ``[Lo+1 (v), 2 n_theta, 2(Lo+1) (slot)]`` real; rows ``c_v Re z`` then ``-c_v Im z`` over u in
            FFT order, with ``c_0 = 1``, ``c_v = 2`` (the v and -v halves are complex conjugates).
        out_index: ``[(Lo+1)^2]`` position of each output SH in the flattened ``[Lo+1, 2(Lo+1)]`` result.
    """

    lmax1: int
    lmax2: int
    lmax_out: int
    n_theta: int
    n_phi: int
    slots1: np.ndarray
    slots2: np.ndarray
    sh2f1: np.ndarray
    sh2f2: np.ndarray
    f2sh: np.ndarray
    out_index: np.ndarray


def _sh2f_table(lmax: int) -> np.ndarray:
    y = sh2f_coefficients(lmax)  # [n, u, v]
    slots = _v_slots(lmax)
    table = np.zeros((lmax + 1, slots.shape[1], 2 * lmax + 1), dtype=np.complex128)
    for v in range(lmax + 1):
        for k, i in enumerate(slots[v]):
            if i < y.shape[0]:
                table[v, k] = y[i, :, v + lmax]
    return np.stack([table.real, table.imag], axis=-1).reshape(lmax + 1, slots.shape[1], -1)


def _out_index(lmax_out: int) -> np.ndarray:
    slots = _v_slots(lmax_out)
    index = np.zeros(num_sh(lmax_out), dtype=np.int64)
    for v in range(lmax_out + 1):
        for k, i in enumerate(slots[v]):
            if i < index.shape[0]:
                index[i] = v * slots.shape[1] + k
    return index


@lru_cache(maxsize=None)
def fourier_plan(lmax1: int, lmax2: int, lmax_out: int) -> FourierPlan:
    """The (cached) :class:`FourierPlan` for the given degrees."""
    n_theta = 2 * (lmax1 + lmax2) + 1
    n_phi = lmax1 + lmax2 + lmax_out + 1
    umax = n_theta // 2
    z = f2sh_coefficients(lmax_out, umax)  # [n_out, u + umax, v + Lo]
    z = np.fft.ifftshift(z, axes=1)  # u in FFT order (0..umax, -umax..-1)
    slots = _v_slots(lmax_out)
    f2sh = np.zeros((lmax_out + 1, 2 * n_theta, slots.shape[1]))
    for v in range(lmax_out + 1):
        c = 1.0 if v == 0 else 2.0
        for k, i in enumerate(slots[v]):
            if i < z.shape[0]:
                f2sh[v, :n_theta, k] = c * z[i, :, v + lmax_out].real
                f2sh[v, n_theta:, k] = -c * z[i, :, v + lmax_out].imag
    return FourierPlan(lmax1, lmax2, lmax_out, n_theta, n_phi, _v_slots(lmax1), _v_slots(lmax2),
                       _sh2f_table(lmax1), _sh2f_table(lmax2), f2sh, _out_index(lmax_out))


@dataclass(frozen=True)
class GridPlan:
    """Tables of the S2-grid path (Gauss-Legendre in cos(theta) x uniform phi), separable per order m.

    Orders are stored in slots ``s = m + L``; a function is ``f(theta_j, phi_k) = sum_s Phi[k, s] A[s, j]`` with
    ``A[s, j] = sum_l Theta[s, j, l] x[l, m]``.

    Attributes:
        n_theta: ``ceil((L1+L2+Lo+1)/2)`` nodes, exact for the projection integrals in theta.
        n_phi: ``L1+L2+Lo+1`` uniform angles, exact for the projection integrals in phi.
        index1, index2: ``[2L+1 (m slot), L+1 (l)]`` SH index (sentinel ``(L+1)^2`` where l < |m|).
        theta1, theta2: ``[2L+1, n_theta, L+1]`` Theta_l^m(theta_j).
        phi1, phi2: ``[n_phi, 2L+1]`` cos(m phi_k) / 1 / sin(|m| phi_k).
        phi_out: ``[2Lo+1, n_phi]`` (2 pi / n_phi) Phi_m(phi_k): the phi quadrature of the projection.
        theta_out: ``[2Lo+1, Lo+1, n_theta]`` quadrature weight x Theta_l^m(theta_j) (zero where l < |m|).
        out_index: ``[(Lo+1)^2]`` position of each output SH in the flattened ``[2Lo+1, Lo+1]`` result.
        position1, position2: the same for the inputs (used by the adjoint of the synthesis).
    """

    lmax1: int
    lmax2: int
    lmax_out: int
    n_theta: int
    n_phi: int
    index1: np.ndarray
    index2: np.ndarray
    theta1: np.ndarray
    theta2: np.ndarray
    phi1: np.ndarray
    phi2: np.ndarray
    phi_out: np.ndarray
    theta_out: np.ndarray
    out_index: np.ndarray
    position1: np.ndarray
    position2: np.ndarray


def _phi_basis(lmax: int, phi: np.ndarray) -> np.ndarray:
    """``[len(phi), 2L+1]``: column ``m + L`` is cos(m phi) (m > 0), 1 (m = 0), sin(|m| phi) (m < 0)."""
    m = np.arange(-lmax, lmax + 1)
    return np.where(m > 0, np.cos(np.outer(phi, m)), np.where(m < 0, np.sin(np.outer(phi, -m)), 1.0))


@lru_cache(maxsize=None)
def theta_factors(lmax: int, theta: tuple[float, ...]) -> np.ndarray:
    """Separable factors ``[len(theta), (L+1)^2]`` with ``Y_l^m(theta, phi) = Theta_l^m(theta) Phi_m(phi)``."""
    m_grid = 2 * lmax + 1
    phi = 2 * np.pi * np.arange(m_grid) / m_grid
    vals = e3nn_sh_angles(lmax, np.asarray(theta), phi)  # [T, P, n]
    _, ms = lm_of(lmax)
    basis = _phi_basis(lmax, phi)[:, ms + lmax]  # [P, n]
    norm = np.where(ms == 0, m_grid, m_grid / 2)
    fac = np.einsum("tpn,pn->tn", vals, basis) / norm
    resid = np.abs(vals - fac[:, None, :] * basis[None]).max(initial=0.0)
    if resid > _TOL:  # pragma: no cover - would mean e3nn changed its SH convention
        raise RuntimeError(f"e3nn SH do not separate as Theta(theta) Phi_m(phi) (residual {resid:.1e})")
    return fac


def _m_index(lmax: int) -> np.ndarray:
    index = np.full((2 * lmax + 1, lmax + 1), num_sh(lmax), dtype=np.int64)
    for m in range(-lmax, lmax + 1):
        for l in range(abs(m), lmax + 1):
            index[m + lmax, l] = l * l + l + m
    return index


def _positions(lmax: int) -> np.ndarray:
    """Position of each SH index in the flattened ``[2L+1, L+1]`` table of :func:`_m_index`."""
    flat = _m_index(lmax).reshape(-1)
    position = np.zeros(num_sh(lmax), dtype=np.int64)
    for pos, i in enumerate(flat):
        if i < position.shape[0]:
            position[i] = pos
    return position


def _theta_table(lmax: int, factors: np.ndarray) -> np.ndarray:
    index = _m_index(lmax)
    padded = np.concatenate([factors, np.zeros((factors.shape[0], 1))], axis=1)  # sentinel column
    return padded[:, index].transpose(1, 0, 2)  # [2L+1, T, L+1]


@lru_cache(maxsize=None)
def grid_plan(lmax1: int, lmax2: int, lmax_out: int) -> GridPlan:
    """The (cached) :class:`GridPlan` for the given degrees."""
    total = lmax1 + lmax2 + lmax_out
    n_theta = total // 2 + 1
    n_phi = total + 1
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    theta = tuple(np.arccos(nodes).tolist())
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    lmax_all = max(lmax1, lmax2, lmax_out)
    fac = theta_factors(lmax_all, theta)
    t1 = _theta_table(lmax1, fac[:, : num_sh(lmax1)])
    t2 = _theta_table(lmax2, fac[:, : num_sh(lmax2)])
    t_out = _theta_table(lmax_out, fac[:, : num_sh(lmax_out)]) * weights[None, :, None]
    m_out = np.arange(-lmax_out, lmax_out + 1)
    # out_lm = sum_j w_j Theta_lm(theta_j) sum_k (2 pi / n_phi) Phi_m(phi_k) h(theta_j, phi_k)
    phi_out = _phi_basis(lmax_out, phi).T * (2 * np.pi / n_phi)
    return GridPlan(lmax1, lmax2, lmax_out, n_theta, n_phi, _m_index(lmax1), _m_index(lmax2), t1, t2,
                    _phi_basis(lmax1, phi), _phi_basis(lmax2, phi), phi_out, t_out.transpose(0, 2, 1),
                    _positions(lmax_out), _positions(lmax1), _positions(lmax2))


@lru_cache(maxsize=None)
def plan_tensors(kind: str, lmax1: int, lmax2: int, lmax_out: int, dtype: torch.dtype,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """The arrays of ``fourier_plan`` (kind "fourier"), ``grid_plan`` (kind "grid", full grid, used by
    ``GauntManyBody``) or ``half_grid_plan`` (kind "half", the product's kernel) as cached tensors."""
    if kind == "half":
        plan = half_grid_plan(lmax1, lmax2, lmax_out)
    else:
        plan = (fourier_plan if kind == "fourier" else grid_plan)(lmax1, lmax2, lmax_out)
    out = {}
    for name, value in vars(plan).items():
        if isinstance(value, np.ndarray):
            if name in ("index1", "index2", "slots1", "slots2"):
                # empty slots (l < |m|) read row 0; their table entries are zero
                value = np.where(value >= num_sh(getattr(plan, "lmax" + name[-1])), 0, value)
            t = torch.as_tensor(np.ascontiguousarray(value))
            out[name] = t.to(device=device) if value.dtype.kind in "iu" else t.to(dtype=dtype, device=device)
    return out


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes ``theta`` (arccos of the cos-nodes) and weights for ``int_0^pi . sin(theta) dtheta``."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return np.arccos(nodes), weights





# --------------------------------------------------------------------------------------------------------------
# Tables of the fast S2-grid kernel (``_grid.py``): cos/sin halves in phi, optional equatorial parity in theta.
# --------------------------------------------------------------------------------------------------------------


def _slots(lmax: int) -> list[int | None]:
    """Signed order of each slot: cos orders m = 0..L, an empty slot (None), then sin orders m = -1..-L.

    The empty slot makes both halves L+1 long, so each phi step is one batched GEMM over (cos, sin).
    """
    return list(range(lmax + 1)) + [None] + [-m for m in range(1, lmax + 1)]


def _legendre_tables(lmax: int, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices ``[S, K]`` and Legendre matrices ``[S, T, K]`` (degrees l = |m|..L of each slot's order,
    zero-padded to K = L+1; pads and the empty slot read SH row 0 with a zero factor)."""
    slots = _slots(lmax)
    gather = np.zeros((len(slots), lmax + 1), dtype=np.int64)
    table = np.zeros((len(slots), factors.shape[0], lmax + 1))
    for s, m in enumerate(slots):
        for j, l in enumerate(range(abs(m), lmax + 1) if m is not None else []):
            gather[s, j] = l * l + l + m
            table[s, :, j] = factors[:, l * l + l + m]
    return gather, table


def _slot_positions(gather: np.ndarray, table: np.ndarray, n: int) -> np.ndarray:
    """Position of each SH index ``0..n-1`` in a flattened ``[S, K]`` gather table (ignoring pads)."""
    position = np.full(n, -1, dtype=np.int64)
    used = np.abs(table).max(axis=-2) > 0  # [S, K]
    for pos, (i, u) in enumerate(zip(gather.reshape(-1), used.reshape(-1))):
        if u:
            position[i] = pos
    assert (position >= 0).all()
    return position


@dataclass(frozen=True)
class HalfGridPlan:
    """Tables of the S2-grid kernel (``_grid.py``): Gauss-Legendre x uniform phi, stored as cos and sin halves.

    A real function on the uniform phi grid (odd ``n_phi``, ``phi_k = 2 pi k / n_phi``) is
    ``f(+-phi_k) = C(k) +- S(k)`` with ``C = sum_m cos(m phi_k) A_m`` and ``S = sum_m sin(m phi_k) A_-m``, so
    only k = 0..n_phi//2 is stored (half the phi transform). The product of two functions has
    ``C_h = C_f C_g + S_f S_g`` and ``S_h = C_f S_g + S_f C_g`` (the factor 2 of the folded halves goes into
    the projection): its quadrature over all k is ``sum_{k >= 0} c_k (cos, sin)(m phi_k) (C_h, S_h)(k)`` with
    c_0 = 1, c_k = 2. Slots: cos orders m = 0..L, an empty slot, sin orders m = 1..L (:func:`_slots`).

    Attributes:
        n_theta: ``(L1+L2+Lo)//2 + 1`` Gauss-Legendre nodes, exact for the projection integrals in theta.
        n_phi: ``L1+L2+Lo+1`` rounded up to odd, exact for the projection integrals in phi.
        gather{1,2}, gather_out: ``[S, L+1]`` SH index read per slot and degree (pads read index 0).
        legendre{1,2}: ``[S, T, L+1]`` Theta_l^m at the nodes (zero for pads).
        legendre_out: ``[S, Lo+1, T]`` quadrature weight x Theta_l^m.
        phi{1,2}: ``[2, n_phi//2+1, L+1]``: cos(m phi_k) (m = 0..L) and sin(m phi_k) (m = 0..L; the m = 0
            column, zero, meets the empty slot).
        phi_out: ``[2, Lo+1, n_phi//2+1]``: c_k (2 pi / n_phi) cos(m phi_k), and the same with sin.
        out_index, position{1,2}: position of each SH index in the flattened ``[S, L+1]`` gather tables.
    """

    lmax1: int
    lmax2: int
    lmax_out: int
    n_theta: int
    n_phi: int
    gather1: np.ndarray
    gather2: np.ndarray
    legendre1: np.ndarray
    legendre2: np.ndarray
    phi1: np.ndarray
    phi2: np.ndarray
    phi_out: np.ndarray
    legendre_out: np.ndarray
    gather_out: np.ndarray
    out_index: np.ndarray
    position1: np.ndarray
    position2: np.ndarray


@lru_cache(maxsize=None)
def half_grid_plan(lmax1: int, lmax2: int, lmax_out: int) -> HalfGridPlan:
    """The (cached) :class:`HalfGridPlan` for the given degrees."""
    total = lmax1 + lmax2 + lmax_out
    n_theta = total // 2 + 1
    n_phi = total + 1 + total % 2  # odd: no angle at phi = pi that is its own mirror image
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    fac = theta_factors(max(lmax1, lmax2, lmax_out), tuple(np.arccos(nodes).tolist()))
    half = n_phi // 2 + 1
    phi = 2 * np.pi * np.arange(half) / n_phi
    weight_phi = np.where(np.arange(half) == 0, 1.0, 2.0) * (2 * np.pi / n_phi)

    def operand(lmax: int):
        m = np.arange(lmax + 1)
        phi_table = np.stack([np.cos(np.outer(phi, m)), np.sin(np.outer(phi, m))])  # [2, K, L+1]
        return (*_legendre_tables(lmax, fac[:, : num_sh(lmax)]), phi_table)

    g1, t1, p1 = operand(lmax1)
    g2, t2, p2 = operand(lmax2)
    g_out, t_out, p_out = operand(lmax_out)
    legendre_out = np.swapaxes(t_out * weights[:, None], 1, 2)  # [S, Lo+1, T]
    phi_out = np.swapaxes(p_out * weight_phi[:, None], 1, 2)  # [2, Lo+1, K]
    return HalfGridPlan(lmax1, lmax2, lmax_out, n_theta, n_phi, g1, g2, t1, t2, p1, p2, phi_out, legendre_out,
                        g_out, _slot_positions(g_out, t_out, num_sh(lmax_out)),
                        _slot_positions(g1, t1, num_sh(lmax1)), _slot_positions(g2, t2, num_sh(lmax2)))
