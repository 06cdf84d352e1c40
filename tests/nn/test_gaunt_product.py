"""The Gaunt tensor product against independent references: quadrature of the product of the two spherical
functions, e3nn's Clebsch-Gordan tensor product with Gaunt path weights, Wigner-D equivariance, gradcheck."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from sympy.physics.wigner import wigner_3j

from molgen.errors import MolgenError
from molgen.nn.gaunt import (e3nn_gaunt_tensor_product, fourier_to_sh, gaunt_path_weight, gaunt_tensor_product,
                             sh_to_fourier)
from molgen.nn.gaunt._basis import e3nn_sh_angles
from molgen.nn.gaunt._reference import wigner_d
from molgen.testing import random_orthogonal

METHODS = ["grid", "fourier"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def product_by_quadrature(x1: torch.Tensor, x2: torch.Tensor, lmax_out: int) -> torch.Tensor:
    """Evaluate both functions on a generous Gauss-Legendre x uniform grid, multiply, project (float64)."""
    l1, l2 = math.isqrt(x1.shape[-1]) - 1, math.isqrt(x2.shape[-1]) - 1
    lmax = max(l1, l2, lmax_out)
    n = (l1 + l2 + lmax_out) // 2 + 4
    t, w = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * np.arange(2 * n + 3) / (2 * n + 3)
    y = torch.from_numpy(e3nn_sh_angles(lmax, np.arccos(t), phi).reshape(-1, (lmax + 1) ** 2))
    weights = torch.from_numpy(np.repeat(w, len(phi)) * 2 * np.pi / len(phi))
    f1 = x1.double() @ y[:, : x1.shape[-1]].T
    f2 = x2.double() @ y[:, : x2.shape[-1]].T
    return (f1 * f2 * weights) @ y[:, : (lmax_out + 1) ** 2]


def test_sh_basis_is_e3nn():
    theta, phi = np.random.default_rng(0).uniform(0, np.pi, 20), np.random.default_rng(1).uniform(0, 2 * np.pi, 20)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    xyz = torch.from_numpy(np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1))
    ours = e3nn_sh_angles(16, theta, phi)
    e3nn12 = o3.spherical_harmonics(list(range(13)), xyz, normalize=False, normalization="integral").numpy()
    np.testing.assert_allclose(ours[..., :169], e3nn12, atol=1e-12)
    e3nn16 = o3.spherical_harmonics_alpha_beta(list(range(17)), torch.from_numpy(p), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(ours, e3nn16, atol=1e-9)  # e3nn's sympy polynomials lose digits at high l


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("l1,l2,lmax_out", [(0, 0, None), (1, 1, None), (2, 3, None), (3, 2, 2), (4, 4, None),
                                            (5, 1, 3), (6, 6, None), (7, 8, None), (8, 8, None), (8, 8, 4)])
def test_equals_product_of_functions(method, dtype, l1, l2, lmax_out):
    x1 = torch.randn(6, (l1 + 1) ** 2, dtype=dtype)
    x2 = torch.randn(6, (l2 + 1) ** 2, dtype=dtype)
    out = gaunt_tensor_product(x1, x2, lmax_out, method=method)
    ref = product_by_quadrature(x1, x2, l1 + l2 if lmax_out is None else lmax_out)
    assert out.dtype == dtype and out.shape == ref.shape
    err = (out.double() - ref).abs().max() / ref.abs().max()
    assert err < TOL[dtype], f"relative error {err:.1e}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("l1,l2,lmax_out", [(2, 2, 4), (3, 1, 2), (4, 3, 5)])
def test_equals_e3nn_parity_even_tensor_product(method, l1, l2, lmax_out):
    tp = e3nn_gaunt_tensor_product(l1, l2, lmax_out, dtype=torch.float64)
    x1 = torch.randn(5, (l1 + 1) ** 2, dtype=torch.float64)
    x2 = torch.randn(5, (l2 + 1) ** 2, dtype=torch.float64)
    torch.testing.assert_close(gaunt_tensor_product(x1, x2, lmax_out, method=method), tp(x1, x2), rtol=0, atol=1e-11)


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 2), (2, 2, 2), (3, 2, 1), (4, 4, 6), (5, 3, 4), (1, 1, 1)])
def test_gaunt_path_weight_closed_form(l1, l2, l3):
    """|G| = sqrt((2l1+1)(2l2+1)(2l3+1)/4pi) |(l1 l2 l3; 0 0 0)| since e3nn's wigner_3j has unit norm."""
    expected = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * abs(float(wigner_3j(l1, l2, l3, 0, 0, 0)))
    assert abs(abs(gaunt_path_weight(l1, l2, l3)) - expected) < 1e-12


def test_wigner_d_reference():
    rot = random_orthogonal(0).numpy()
    d = wigner_d(3, torch.from_numpy(rot))
    torch.testing.assert_close(d @ d.T, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(d[1:4, 1:4], torch.from_numpy(rot), rtol=0, atol=1e-12)  # l = 1 is (x, y, z)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("l1,l2", [(1, 2), (3, 3), (6, 5)])
def test_equivariance_under_wigner_d(method, l1, l2):
    x1 = torch.randn(4, (l1 + 1) ** 2, dtype=torch.float64)
    x2 = torch.randn(4, (l2 + 1) ** 2, dtype=torch.float64)
    for seed in range(3):
        d_out = wigner_d(l1 + l2, random_orthogonal(seed))
        d1, d2 = d_out[: (l1 + 1) ** 2, : (l1 + 1) ** 2], d_out[: (l2 + 1) ** 2, : (l2 + 1) ** 2]
        rotated = gaunt_tensor_product(x1 @ d1.T, x2 @ d2.T, method=method)
        torch.testing.assert_close(rotated, gaunt_tensor_product(x1, x2, method=method) @ d_out.T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method):
    x1 = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 1, 16, dtype=torch.float64, requires_grad=True)  # broadcast over the channel axis
    assert torch.autograd.gradcheck(lambda a, b: gaunt_tensor_product(a, b, 4, method=method), (x1, x2))


def test_gradgradcheck_grid():
    x1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(1, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: gaunt_tensor_product(a, b, 2, method="grid"), (x1, x2))


@pytest.mark.parametrize("needs", [(True, True), (False, True)])
def test_gradcheck_grid_equal_degrees(needs):
    """First and second order with operands of equal degree and shape, with one or both inputs needing grads."""
    x1 = torch.randn(3, 2, 16, dtype=torch.float64, requires_grad=needs[0])
    x2 = torch.randn(3, 2, 16, dtype=torch.float64, requires_grad=needs[1])
    product = lambda a, b: gaunt_tensor_product(a, b, 5, method="grid")  # noqa: E731
    assert torch.autograd.gradcheck(product, (x1, x2))
    assert torch.autograd.gradgradcheck(product, (x1, x2))


@pytest.mark.parametrize("l2,i2", [(3, 3), (2, 1)])
def test_grid_chunking_does_not_change_results(monkeypatch, l2, i2):
    import molgen.nn.gaunt._grid as grid

    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "torch")  # the chunked torch path (the C kernel has fixed tiles)

    x1 = torch.randn(5, 3, 16, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(5, i2, (l2 + 1) ** 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, (l2 + 4) ** 2, dtype=torch.float64)

    def run():
        out = gaunt_tensor_product(x1, x2, method="grid")
        return (out, *torch.autograd.grad((out * weight).sum(), (x1, x2)))

    whole = run()
    monkeypatch.setattr(grid, "CHUNK_POINTS_CPU", 1)  # one batch row per chunk
    for a, b in zip(whole, run()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_broadcasting_and_truncation(method):
    x1 = torch.randn(4, 3, 16, dtype=torch.float64)
    x2 = torch.randn(3, 9, dtype=torch.float64)
    out = gaunt_tensor_product(x1, x2, method=method)
    assert out.shape == (4, 3, 36)
    torch.testing.assert_close(out, gaunt_tensor_product(x1, x2.expand(4, 3, 9), method=method))
    torch.testing.assert_close(gaunt_tensor_product(x1, x2, 2, method=method), out[..., :9])
    padded = gaunt_tensor_product(x1, x2, 7, method=method)  # degrees above L1+L2 are exactly zero
    torch.testing.assert_close(padded[..., :36], out)
    assert padded[..., 36:].abs().max() == 0
    unbatched = gaunt_tensor_product(x1[0, 0], x2[0], method=method)
    torch.testing.assert_close(unbatched, out[0, 0])


def test_sh_to_fourier_is_sparse_and_exact():
    lmax = 5
    x = torch.randn(3, 36, dtype=torch.float64)
    coeffs = sh_to_fourier(x)  # [3, u, v]
    assert coeffs.shape == (3, 11, 11)
    # a single SH of order m only touches the columns v = +-m and rows |u| <= l
    for l, m in [(3, -2), (4, 0), (5, 5)]:
        single = torch.zeros(1, 36, dtype=torch.float64)
        single[0, l * l + l + m] = 1.0
        nz = sh_to_fourier(single)[0].abs() > 1e-12
        u, v = torch.nonzero(nz, as_tuple=True)
        assert set((v - lmax).abs().tolist()) == {abs(m)} and (u - lmax).abs().max() <= l
    # the Fourier series equals the SH expansion on the sphere
    theta, phi = np.array([0.3, 1.2, 2.9]), np.array([0.1, 2.0, 4.4, 6.0])
    y = torch.from_numpy(e3nn_sh_angles(lmax, theta, phi))  # [T, P, n]
    k = torch.arange(-lmax, lmax + 1, dtype=torch.float64)
    basis = torch.exp(1j * (torch.from_numpy(theta)[:, None, None, None] * k[:, None]
                            + torch.from_numpy(phi)[None, :, None, None] * k[None, :]))  # [T, P, u, v]
    series = torch.einsum("tpuv,buv->btp", basis, coeffs)
    torch.testing.assert_close(series.real, torch.einsum("tpn,bn->btp", y, x))
    assert series.imag.abs().max() < 1e-12
    torch.testing.assert_close(fourier_to_sh(coeffs, lmax), x)
    torch.testing.assert_close(fourier_to_sh(coeffs, lmax + 2)[:, :36], x)


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(MolgenError, match="x1 has last dimension 5"):
        gaunt_tensor_product(torch.randn(2, 5), torch.randn(2, 4))
    with pytest.raises(MolgenError, match="method must be one of"):
        gaunt_tensor_product(torch.randn(2, 4), torch.randn(2, 4), method="cg")
    with pytest.raises(MolgenError, match="share a floating dtype"):
        gaunt_tensor_product(torch.randn(2, 4), torch.randn(2, 4, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    x1, x2 = torch.randn(8, 4, 25), torch.randn(8, 4, 16)
    out = gaunt_tensor_product(x1.cuda(), x2.cuda(), method=method).cpu()
    torch.testing.assert_close(out, gaunt_tensor_product(x1, x2, method=method), rtol=1e-4, atol=1e-5)
