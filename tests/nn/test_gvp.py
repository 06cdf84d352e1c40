"""GVP layers: rotation equivariance of vectors, invariance of scalars, and chirality from cross products."""
import pytest
import torch

from molgen.nn.gvp import GVP, GVPConv, GVPLayerNorm
from molgen.nn.molecule_net import complete_graph, edge_geometry
from molgen.nn.radial import GaussianRBF
from molgen.testing import assert_equivariant


@pytest.mark.parametrize("n_cp", [0, 4])
def test_gvp_rotation_equivariance(n_cp):
    torch.manual_seed(0)
    gvp = GVP(7, 5, 6, 3, n_cp_feats=n_cp).double()
    s, v = torch.randn(10, 7, dtype=torch.float64), torch.randn(10, 5, 3, dtype=torch.float64)
    # with cross products the layer is chirality-aware: its outputs follow proper rotations only
    assert_equivariant(gvp, (s, v), ("scalar", "vector"), ("scalar", "vector"),
                       rotations="proper" if n_cp else "all", atol=1e-10, rtol=1e-5)


def test_cross_products_break_reflection_symmetry():
    torch.manual_seed(0)
    s, v = torch.randn(10, 7, dtype=torch.float64), torch.randn(10, 5, 3, dtype=torch.float64)
    plain, chiral = GVP(7, 5, 6, 3, n_cp_feats=0).double(), GVP(7, 5, 6, 3, n_cp_feats=4).double()
    assert_equivariant(plain, (s, v), ("scalar", "vector"), ("scalar", "vector"), rotations="improper",
                       atol=1e-10, rtol=1e-5)                                        # E(3)
    with pytest.raises(AssertionError, match="output 1 does not transform as a vector under a rotoreflection"):
        assert_equivariant(chiral, (s, v), ("scalar", "vector"), ("scalar", "vector"), rotations="improper",
                           atol=1e-4, rtol=1e-5)                                     # a mirror image is told apart


def test_gvp_layer_norm_and_rbf():
    ln = GVPLayerNorm(4).double()
    s, v = ln(torch.randn(3, 4, dtype=torch.float64), 7 * torch.randn(3, 6, 3, dtype=torch.float64))
    assert torch.allclose((v**2).sum(-1).mean(-1), torch.ones(3, dtype=torch.float64), atol=1e-3)
    rbf = GaussianRBF(32, 0.0, 14.0)
    out = rbf(torch.tensor([0.0, 7.0, 14.0]))
    assert out.shape == (3, 32) and int(out[1].argmax()) in (15, 16)


def test_gvp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vector_gate"):
        GVP(3, 2, 3, 2, vector_gate="tanh")
    with pytest.raises(ValueError, match="message_norm"):
        GVPConv(8, 4, 0, 8, message_norm="max")


@pytest.mark.parametrize("norm", [100.0, "mean"])
def test_gvpconv_equivariance_and_permutation(norm):
    torch.manual_seed(0)
    n = 7
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    edge_index, _ = complete_graph(batch)
    conv = GVPConv(8, 4, 5, 6, n_cp_feats=2, message_norm=norm).double()
    pos = torch.randn(n, 3, dtype=torch.float64)
    s, v = torch.randn(n, 8, dtype=torch.float64), torch.randn(n, 4, 3, dtype=torch.float64)
    e = torch.randn(edge_index.shape[1], 5, dtype=torch.float64)
    rbf = GaussianRBF(6, 0, 5).double()

    def run(s, pos, v, edge_index, batch):
        unit, d = edge_geometry(pos, edge_index)
        return conv(s, v, edge_index, unit, rbf(d), e)

    # n_cp_feats=2: chirality-aware, so proper rotations; translations per molecule, atoms relabelled in each
    assert_equivariant(run, (s, pos, v, edge_index, batch), ("scalar", "position", "vector", "edge_index", "batch"),
                       ("scalar", "vector"), rotations="proper", seed=3, atol=1e-9, rtol=1e-5)


def test_complete_graph_pairs_and_reverse():
    batch = torch.tensor([0, 0, 1, 1, 1])
    ei, rev = complete_graph(batch)
    pairs = set(map(tuple, ei.T.tolist()))
    assert pairs == {(0, 1), (1, 0), (2, 3), (2, 4), (3, 2), (3, 4), (4, 2), (4, 3)}
    assert torch.equal(ei[:, rev], ei.flip(0))
    keys = ei[0] * 5 + ei[1]
    assert torch.all(keys[1:] > keys[:-1])  # sorted by (source, target)
