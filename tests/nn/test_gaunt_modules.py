"""The Gaunt layers: each equals its definition through gaunt_tensor_product and is rotation-equivariant."""
from __future__ import annotations

import pytest
import torch
from e3nn import o3

from molgen.errors import ConfigError
from molgen.nn.gaunt import GauntConvolution, GauntFeatureInteraction, GauntManyBody, gaunt_tensor_product
from molgen.nn.gaunt._modules import expand_degrees
from molgen.nn.gaunt._reference import wigner_d
from molgen.testing import random_orthogonal


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module.double()


def test_feature_interaction_is_weighted_gaunt_product():
    layer = _randomize(GauntFeatureInteraction(channels=3, lmax_in=2, lmax_out=3))
    x, y = torch.randn(5, 3, 9, dtype=torch.float64), torch.randn(5, 3, 9, dtype=torch.float64)
    expected = gaunt_tensor_product(x * expand_degrees(layer.weight1, 2), y * expand_degrees(layer.weight2, 2), 3)
    torch.testing.assert_close(layer(x, y), expected * expand_degrees(layer.weight_out, 3))
    d = wigner_d(3, random_orthogonal(1))
    torch.testing.assert_close(layer(x @ d[:9, :9].T, y @ d[:9, :9].T), layer(x, y) @ d.T, rtol=0, atol=1e-10)


def test_many_body_powers_are_repeated_products():
    layer = _randomize(GauntManyBody(channels=2, lmax=2, correlation=3, num_elements=2))
    a = torch.randn(4, 2, 9, dtype=torch.float64)
    basis = layer.power_basis(a)
    torch.testing.assert_close(basis[0], a)
    torch.testing.assert_close(basis[1], gaunt_tensor_product(a, a, 2))
    torch.testing.assert_close(basis[2], gaunt_tensor_product(gaunt_tensor_product(a, a), a, 2))
    species = torch.tensor([0, 1, 1, 0])
    d = wigner_d(2, random_orthogonal(2))
    torch.testing.assert_close(layer(a @ d.T, species), layer(a, species) @ d.T, rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="needs the species"):
        layer(a)


def test_convolution_matches_edge_loop_and_is_equivariant():
    conv = _randomize(GauntConvolution(channels=2, lmax_in=2, lmax_sh=2, lmax_out=3, edge_features=4,
                                       avg_neighbors=2.0))
    n = 5
    h = torch.randn(n, 2, 9, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 0, 0, 2, 2, 4]])
    vec = torch.randn(edge_index.shape[1], 3, dtype=torch.float64)
    feats = torch.randn(edge_index.shape[1], 4, dtype=torch.float64)
    sh = o3.spherical_harmonics([0, 1, 2], vec, normalize=True, normalization="integral")
    out = conv(h, sh, feats, edge_index)
    # slow reference: one edge at a time
    expected = torch.zeros(n, 2, 16, dtype=torch.float64)
    for e, (j, i) in enumerate(edge_index.t().tolist()):
        w = conv.radial(feats[e]).view(2, 7)
        msg = gaunt_tensor_product(h[j] * expand_degrees(w[:, :3], 2), sh[e], 3) * expand_degrees(w[:, 3:], 3)
        expected[i] += msg / 2.0
    torch.testing.assert_close(out, expected)
    rot = random_orthogonal(3)
    d = wigner_d(3, rot)
    sh_rot = o3.spherical_harmonics([0, 1, 2], vec @ rot.T, normalize=True, normalization="integral")
    torch.testing.assert_close(conv(h @ d[:9, :9].T, sh_rot, feats, edge_index), out @ d.T, rtol=0, atol=1e-6)


def test_bad_sizes_raise_config_error():
    with pytest.raises(ConfigError, match="channels must be >= 1"):
        GauntFeatureInteraction(channels=0, lmax_in=2)
    with pytest.raises(ConfigError, match="correlation must be >= 1"):
        GauntManyBody(channels=4, lmax=2, correlation=0)
