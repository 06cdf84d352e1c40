"""EGNN layers: E(3) equivariance of positions, invariance of scalars, permutation equivariance, on real molecules."""
import pytest
import torch

from molgen.nn.egnn import EGNN, EGNNLayer
from molgen.nn.molecule_net import complete_graph
from molgen.testing import assert_equivariant


@pytest.fixture(scope="module")
def molecule_batch(real_graphs):
    from torch_geometric.data import Batch

    b = Batch.from_data_list([real_graphs[i] for i in range(4)])
    h = torch.cat([torch.nn.functional.one_hot(b.atom_type, 5), b.charge.unsqueeze(-1)], -1).double()
    return h, b.pos.double(), complete_graph(b.batch, b.num_graphs)[0]


@pytest.mark.parametrize("proper", [True, False])
def test_egnn_is_e3_equivariant_on_real_molecules(molecule_batch, proper):
    torch.manual_seed(0)
    h, x, ei = molecule_batch
    net = EGNN(h.shape[1], 7, hidden=32, n_layers=3).double()
    # make the coordinate updates large enough to matter (the last layer starts near zero)
    for layer in net.layers:
        torch.nn.init.normal_(layer.coord_mlp[-1].weight, std=0.3)
    h1, x1 = net(h, x, ei)
    assert (x1 - x).abs().max() > 1e-2, "positions should move"
    # rotations (proper or rotoreflections), translations and atom relabellings of the edge list alike
    assert_equivariant(net, (h, x, ei), ("scalar", "position", "edge_index"), ("scalar", "position"),
                       rotations="proper" if proper else "improper", atol=1e-9, rtol=1e-7)


def test_egnn_is_permutation_equivariant(molecule_batch):
    torch.manual_seed(0)
    h, x, _ = molecule_batch
    n = 9  # the first molecule (ethanol) alone
    h, x = h[:n], x[:n]
    ei = complete_graph(torch.zeros(n, dtype=torch.long))[0]
    net = EGNN(h.shape[1], 4, hidden=16, n_layers=2).double()
    # relabel atoms (new atom k is old atom perm[k], the edge list relabelled), with no rotation or shift
    assert_equivariant(net, (h, x, ei), ("scalar", "position", "edge_index"), ("scalar", "position"),
                       rotations="none", translate=False, seed=3)


def test_invariant_layer_keeps_positions_and_bounded_update(molecule_batch):
    h, x, ei = molecule_batch
    layer = EGNNLayer(16, update_coords=False).double()
    _, x_out = layer(torch.randn(h.shape[0], 16, dtype=torch.float64), x, ei)
    assert torch.equal(x_out, x)
    moving = EGNNLayer(16, coords_range=0.5, norm_factor=100.0).double()
    torch.nn.init.normal_(moving.coord_mlp[-1].weight, std=10.0)
    _, x_out = moving(torch.randn(h.shape[0], 16, dtype=torch.float64), x, ei)
    # each edge moves an atom by < r (tanh-bounded, unit-or-shorter direction); at most 28 edges / Z=100
    assert (x_out - x).norm(dim=-1).max() < 0.5 * 28 / 100.0
