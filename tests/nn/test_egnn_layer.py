"""The configurable EGNNLayer in every mode molgen uses (EDM, invariant, CPDiffusion-SS edge update, EGNO
velocity, paper-style linear step; sparse and dense graphs): E(3) equivariance of positions and velocities
(rotations, reflections, translations), invariance of node and edge features, permutation equivariance, in
float64 on real molecules."""
import pytest
import torch
from torch_geometric.utils import to_dense_batch

from molgen.nn.egnn import EGNNLayer
from molgen.nn.graph import complete_graph
from molgen.testing import random_orthogonal

H = 16
MODES = {
    "edm": dict(),
    "edm_edge_attr": dict(edge_attr_dim=3, norm_factor=5.0, coords_range=2.0),
    "invariant": dict(update_coords=False),
    "ss_edge_update": dict(update_coords=False, attention=False, edge_attr_dim=H, update_edges=True,
                           message_hidden=4 * H, node_hidden=2 * H, dropout=0.0, distance_last=True),
    "linear_step": dict(attention=False, coord_step="linear", edge_attr_dim=2),
    "velocity": dict(attention=False, coord_step="linear", velocity=True, edge_attr_dim=4),
    "velocity_edm_step": dict(velocity=True),
}


@pytest.fixture(scope="module")
def molecules(real_graphs):
    from torch_geometric.data import Batch

    b = Batch.from_data_list([real_graphs[i] for i in range(4)])
    return b.pos.double(), b.batch


def make_layer(mode: str, seed: int = 0) -> EGNNLayer:
    torch.manual_seed(seed)
    layer = EGNNLayer(H, **MODES[mode]).double().eval()
    with torch.no_grad():  # make every update large enough to matter (coordinate heads start near zero)
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
    return layer


def inputs(layer: EGNNLayer, n_nodes: int, n_edges_shape, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*n_nodes, H, generator=g, dtype=torch.float64)
    e = (torch.randn(*n_edges_shape, layer.edge_attr_dim, generator=g, dtype=torch.float64)
         if layer.edge_attr_dim else None)
    v = torch.randn(*n_nodes, 3, generator=g, dtype=torch.float64) if layer.velocity else None
    return h, e, v


def unpack(layer: EGNNLayer, out):
    names = ["h", "x"] + (["v"] if layer.velocity else []) + (["e"] if layer.update_edges else [])
    assert len(out) == len(names)
    return dict(zip(names, out))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("proper", [True, False])
def test_sparse_layer_is_e3_equivariant(molecules, mode, proper):
    pos, batch = molecules
    ei = complete_graph(batch)[0]
    layer = make_layer(mode)
    h, e, v = inputs(layer, (pos.shape[0],), (ei.shape[1],))
    R, t = random_orthogonal(3, proper), torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)
    a = unpack(layer, layer(h, pos, ei, e, v=v))
    b = unpack(layer, layer(h, pos @ R.T + t, ei, e, v=None if v is None else v @ R.T))
    tol = dict(atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(b["h"], a["h"], **tol)
    torch.testing.assert_close(b["x"], a["x"] @ R.T + t, **tol)
    if layer.velocity:
        torch.testing.assert_close(b["v"], a["v"] @ R.T, **tol)
    if layer.update_edges:
        torch.testing.assert_close(b["e"], a["e"], **tol)
    if layer.update_coords:
        assert (a["x"] - pos).abs().max() > 1e-2, "positions should move"
    else:
        assert torch.equal(a["x"], pos)
    assert (a["h"] - h).abs().max() > 1e-2


@pytest.mark.parametrize("mode", sorted(MODES))
def test_sparse_layer_is_permutation_equivariant(molecules, mode):
    pos, batch = molecules
    ei = complete_graph(batch)[0]
    n = pos.shape[0]
    layer = make_layer(mode)
    h, e, v = inputs(layer, (n,), (ei.shape[1],))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    a = unpack(layer, layer(h, pos, ei, e, v=v))
    # relabel atoms (new atom k = old atom perm[k]) and shuffle the edge list
    eperm = torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(4))
    b = unpack(layer, layer(h[perm], pos[perm], inv[ei][:, eperm], None if e is None else e[eperm],
                            v=None if v is None else v[perm]))
    for key in ("h", "x", "v"):
        if key in a:
            torch.testing.assert_close(b[key], a[key][perm])
    if "e" in a:
        torch.testing.assert_close(b["e"], a["e"][eperm])


def dense_graph(pos, batch):
    x, mask = to_dense_batch(pos, batch)                                       # [G, N, 3], [G, N]
    N = x.shape[1]
    adj = mask[:, :, None] & mask[:, None, :] & ~torch.eye(N, dtype=torch.bool)
    return x, mask, adj


@pytest.mark.parametrize("mode", ["edm", "velocity", "linear_step", "ss_edge_update"])
@pytest.mark.parametrize("proper", [True, False])
def test_dense_layer_is_e3_and_permutation_equivariant(molecules, mode, proper):
    x, mask, adj = dense_graph(*molecules)
    G, N, _ = x.shape
    layer = make_layer(mode)
    h, e, v = inputs(layer, (G, N), (G, N, N))
    R, t = random_orthogonal(5, proper), torch.tensor([-0.3, 2.0, 1.1], dtype=torch.float64)
    m = mask[..., None]
    a = unpack(layer, layer(h, x, edge_attr=e, v=v, adj=adj))
    b = unpack(layer, layer(h, x @ R.T + t, edge_attr=e, v=None if v is None else v @ R.T, adj=adj))
    tol = dict(atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(b["h"], a["h"], **tol)
    torch.testing.assert_close(b["x"] * m, (a["x"] @ R.T + t) * m, **tol)
    if layer.velocity:
        torch.testing.assert_close(b["v"] * m, a["v"] @ R.T * m, **tol)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(6))
    c = unpack(layer, layer(h[:, perm], x[:, perm], edge_attr=None if e is None else e[:, perm][:, :, perm],
                            v=None if v is None else v[:, perm], adj=adj[:, perm][:, :, perm]))
    for key in ("h", "x", "v"):
        if key in a:
            torch.testing.assert_close(c[key], a[key][:, perm])
    if "e" in a:
        torch.testing.assert_close(c["e"], a["e"][:, perm][:, :, perm])


@pytest.mark.parametrize("mode", ["edm", "velocity", "ss_edge_update"])
def test_dense_and_sparse_graphs_agree(molecules, mode):
    x, mask, adj = dense_graph(*molecules)
    G, N, _ = x.shape
    layer = make_layer(mode)
    h, e, v = inputs(layer, (G, N), (G, N, N))
    dense = unpack(layer, layer(h, x, edge_attr=e, v=v, adj=adj))
    g, i, j = adj.nonzero(as_tuple=True)
    ei = torch.stack([g * N + i, g * N + j])
    sparse = unpack(layer, layer(h.reshape(G * N, H), x.reshape(G * N, 3), ei, None if e is None else e[g, i, j],
                                 v=None if v is None else v.reshape(G * N, 3)))
    for key in ("h", "x", "v"):
        if key in dense:
            torch.testing.assert_close(sparse[key].view(dense[key].shape), dense[key])
    if "e" in dense:
        torch.testing.assert_close(sparse["e"], dense["e"][g, i, j])


def test_linear_step_is_the_clamped_neighbour_mean():
    layer = make_layer("linear_step")
    x = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]], dtype=torch.float64)
    ei = torch.tensor([[0, 0, 1], [1, 2, 0]])                                  # atom 0 hears 1 and 2, atom 1 hears 0
    h, e, _ = inputs(layer, (3,), (3,))
    _, x_out = layer(h, x, ei, e)
    m = layer.edge_mlp(torch.cat([h[ei[0]], h[ei[1]], ((x[ei[0]] - x[ei[1]]) ** 2).sum(-1, keepdim=True), e], -1))
    step = ((x[ei[0]] - x[ei[1]]) * layer.coord_mlp(m)).clamp(-100, 100)
    torch.testing.assert_close(x_out[0], x[0] + (step[0] + step[1]) / 2)
    torch.testing.assert_close(x_out[1], x[1] + step[2])
    torch.testing.assert_close(x_out[2], x[2])                                 # no incoming edge: no move


def test_module_names_set_the_state_dict_keys():
    layer = EGNNLayer(8, edge_attr_dim=4, attention=False, coord_step="linear", velocity=True,
                      module_names={"message": "phi_e", "coord": "phi_x", "velocity": "phi_v", "node": "phi_h"})
    assert {k.split(".")[0] for k in layer.state_dict()} == {"phi_e", "phi_x", "phi_v", "phi_h"}
    ss = EGNNLayer(8, edge_attr_dim=8, update_coords=False, attention=False, update_edges=True, dropout=0.1,
                   module_names={"message": "message", "node": "node", "edge": "edge"})
    assert sorted({k.rsplit(".", 2)[0] for k in ss.state_dict()}) == ["edge", "edge_norm", "message", "node"]
    assert "message.3.weight" in ss.state_dict()                               # Linear, SiLU, Dropout, Linear, SiLU
    edm = EGNNLayer(8)
    assert {k.split(".")[0] for k in edm.state_dict()} == {"edge_mlp", "attention", "node_mlp", "coord_mlp"}


def test_bad_configurations_and_calls_are_rejected():
    with pytest.raises(ValueError, match="coord_step"):
        EGNNLayer(8, coord_step="cubic")
    with pytest.raises(ValueError, match="velocity"):
        EGNNLayer(8, update_coords=False, velocity=True)
    with pytest.raises(ValueError, match="edge_attr_dim == hidden"):
        EGNNLayer(8, edge_attr_dim=3, update_edges=True)
    with pytest.raises(ValueError, match="roles"):
        EGNNLayer(8, module_names={"gate": "g"})
    layer = EGNNLayer(8, velocity=True)
    h, x = torch.randn(3, 8), torch.randn(3, 3)
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="exactly one"):
        layer(h, x, v=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="pass v"):
        layer(h, x, ei)
    with pytest.raises(ValueError, match="edge_attr_dim=0"):
        layer(h, x, ei, torch.randn(2, 1), v=torch.zeros(3, 3))
