"""Self-conditioning and warm starts: symmetry of the self-conditioned network, exactness of a warm start from a
model without it, gradients for every parameter (DDP), one-line refusals, and p(N | target) for fixed targets."""
import pytest
import torch
from torch_geometric.data import Batch

from molgen.checkpoint import metadata, save, warm_start
from molgen.errors import CheckpointError
from molgen.generative import remove_mean
from molgen.models.propmolflow.model import GVP_BACKBONE, PropMolFlow, WithProperty, self_condition_inputs
from molgen.nn.molecule_net import complete_graph
from molgen.testing import assert_equivariant

from tests.conftest import noisy_flow_state

from .test_model import _run

TINY = dict(s_dim=32, edge_dim=16, rbf_dim=8, backbone={**GVP_BACKBONE, "v_dim": 4, "n_layers": 3})


def _randomise_self_condition(model, seed=0):
    """Zero-initialised residual layers would make every check below trivial: give them random weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mlp in (model.net.sc_node, model.net.sc_edge):
            mlp[-1].weight.copy_(0.3 * torch.randn(mlp[-1].weight.shape, generator=g, dtype=mlp[-1].weight.dtype))


def _two_passes(net, a, c, dense, pos, t, batch, value=None):
    """What sampling does: a first prediction, fed back into a second."""
    ei, rev = complete_graph(batch)
    sc = self_condition_inputs(*net(a, c, pos, t, batch, ei, rev, dense[ei[0], ei[1]], value))
    x1, la, lc, le = net(a, c, pos, t, batch, ei, rev, dense[ei[0], ei[1]], value, self_cond=sc)
    n = a.shape[0]
    up = ei[0] < ei[1]
    bond = torch.zeros(n, n, le.shape[-1], dtype=le.dtype)
    bond[ei[0][up], ei[1][up]] = le
    return x1, la, lc, bond + bond.transpose(0, 1)


def test_self_conditioned_network_is_se3_and_permutation_equivariant(real_graphs):
    torch.manual_seed(0)
    model = PropMolFlow(**TINY, self_condition=True).double()
    _randomise_self_condition(model)
    a, c, dense, pos, t, batch = noisy_flow_state(real_graphs, dtype=torch.float64)
    x1, la, *_ = _two_passes(model.net, a, c, dense, pos, t, batch)
    assert torch.allclose(remove_mean(x1, batch), x1, atol=1e-10)
    _, la_first, *_ = _run(model.net, a, c, dense, pos, t, batch)
    assert (la - la_first).abs().max() > 1e-3                      # the fed-back prediction changes the output
    assert_equivariant(lambda a, c, dense, pos, t, batch: _two_passes(model.net, a, c, dense, pos, t, batch),
                       (a, c, dense, pos, t, batch), ("scalar", "scalar", "pair", "position", "scalar", "batch"),
                       ("vector", "scalar", "scalar", "pair"), rotations="proper", seed=1, atol=1e-8, rtol=1e-5)


def _checkpoint(model, path):
    save({"state_dict": model.state_dict(),
          "molgen": metadata("propmolflow", type(model), model.model_args, kind="generator")}, path)
    return path


def test_warm_start_from_a_model_without_self_conditioning_is_exact(real_graphs, tmp_path):
    torch.manual_seed(0)
    source = PropMolFlow(**TINY, property_name="gap", property_mean=6.0).double()
    ckpt = _checkpoint(source, tmp_path / "source.ckpt")
    torch.manual_seed(1)
    target = PropMolFlow(**TINY, property_name="gap", property_mean=6.0, self_condition=True).double()
    info = warm_start(target, ckpt, pipeline="propmolflow")
    assert info["loaded"] == len(source.state_dict())
    assert info["new"] and all(k.startswith(("net.sc_node.", "net.sc_edge.")) for k in info["new"])
    a, c, dense, pos, t, batch = noisy_flow_state(real_graphs, dtype=torch.float64)
    value = torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64)
    want = _run(source.net, a, c, dense, pos, t, batch, value)
    for got in (_run(target.net, a, c, dense, pos, t, batch, value),
                _two_passes(target.net, a, c, dense, pos, t, batch, value)):
        for w, g in zip(want, got):
            assert torch.allclose(w, g, atol=1e-12)
    # sampling too: the same molecules, step for step
    source, target = source.float(), target.float()
    mols_a = source.sample_molecules([6, 9], [6.0, 7.5], steps=4, seed=3, progress=False)
    mols_b = target.sample_molecules([6, 9], [6.0, 7.5], steps=4, seed=3, progress=False)
    for m, n in zip(mols_a, mols_b):
        assert torch.allclose(torch.as_tensor(m.positions), torch.as_tensor(n.positions), atol=1e-9)
        assert (m.atomic_numbers == n.atomic_numbers).all()


def test_warm_start_refuses_other_architectures_and_pipelines(tmp_path):
    torch.manual_seed(0)
    ckpt = _checkpoint(PropMolFlow(**TINY), tmp_path / "a.ckpt")
    wider = PropMolFlow(**{**TINY, "s_dim": 48})
    with pytest.raises(CheckpointError, match="has shape .* the architecture differs"):
        warm_start(wider, ckpt)
    conditional = PropMolFlow(**TINY, property_name="gap")
    cond_ckpt = _checkpoint(conditional, tmp_path / "b.ckpt")
    with pytest.raises(CheckpointError, match="does not have"):
        warm_start(PropMolFlow(**TINY), cond_ckpt)                  # the property embedding has no place
    with pytest.raises(CheckpointError, match="cannot initialise a sild model"):
        warm_start(PropMolFlow(**TINY), ckpt, pipeline="sild")


def test_every_parameter_gets_a_gradient_with_or_without_the_first_pass(real_graphs):
    """DDP needs every parameter in every step: the self-conditioning layers take part also when a batch is
    trained without a first prediction (their input is then the positions themselves and zero probabilities)."""
    torch.manual_seed(0)
    model = PropMolFlow(**TINY, property_name="gap", property_mean=6.0, self_condition=True)
    batch = Batch.from_data_list([WithProperty(real_graphs, "gap")[k] for k in range(4)])
    branches = set()
    for seed in range(12):
        torch.manual_seed(seed)
        took_first_pass = bool(torch.rand(()) < 0.5)
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert missing == [], (took_first_pass, missing)
        branches.add(took_first_pass)
    assert branches == {True, False}


def test_fixed_targets_draw_atom_counts_near_the_target():
    from molgen.conditioning import PropertySampler

    # small molecules have small values, large ones large values
    n_atoms = torch.tensor([5] * 200 + [12] * 200 + [20] * 200)
    values = torch.cat([torch.rand(200) + 1.0, torch.rand(200) + 4.0, torch.rand(200) + 8.0])
    s = PropertySampler(max_atoms=29, n_bins=50, conditional=True).fit(n_atoms, values)
    g = torch.Generator().manual_seed(0)
    assert set(s.sample_n_atoms_given(1.5, 100, g)) == {5}
    assert set(s.sample_n_atoms_given(8.5, 100, g)) == {20}
    assert set(s.sample_n_atoms_given(4.5, 100, g)) == {12}
    marginal = s.sample_n_atoms_given(100.0, 300, g)                 # nothing near: the marginal histogram
    assert set(marginal) == {5, 12, 20}


def test_lagged_self_conditioning_predicts_first_at_an_earlier_time_of_the_same_path(real_graphs):
    """With ``self_condition_lag``, the no-gradient first prediction sees the molecule at s <= t: less revealed
    tokens (a subset of those revealed at t), positions on the same prior-to-data line, as a sampler's
    previous step would."""
    torch.manual_seed(0)
    model = PropMolFlow(**TINY, property_name="gap", property_mean=6.0, self_condition=True,
                        self_condition_lag=0.5)
    batch = Batch.from_data_list([WithProperty(real_graphs, "gap")[k] for k in range(4)])
    calls = []
    real_net = model.net

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = real_net

        def forward(self, a, c, x, t_atom, *args, **kwargs):
            calls.append((a.clone(), c.clone(), x.clone(), t_atom.clone(), args[3].clone(), "self_cond" in kwargs
                          and kwargs["self_cond"] is not None))
            return self.inner(a, c, x, t_atom, *args, **kwargs)

    model.net = Spy()
    seen_lag = False
    for seed in range(8):
        calls.clear()
        torch.manual_seed(seed)
        model(batch)["loss"].backward()
        if len(calls) == 1:
            assert not calls[0][-1]
            continue
        (a_s, c_s, x_s, s, e_s, sc1), (a_t, c_t, x_t, t, e_t, sc2) = calls
        assert not sc1 and sc2
        assert torch.all(s <= t) and torch.all(s >= 0) and torch.all(t - s <= 0.5 + 1e-6)
        mask_a = model.ctmc["a"].mask_index
        assert torch.all(a_s[a_t == mask_a] == mask_a) and torch.all((a_s == a_t) | (a_s == mask_a))
        mask_e = model.ctmc["e"].mask_index
        assert torch.all(e_s[e_t == mask_e] == mask_e) and torch.all((e_s == e_t) | (e_s == mask_e))
        # positions: x_s - x1 = (1 - s) / (1 - t) (x_t - x1) on the straight path, atom by atom
        x1 = batch.pos
        ratio = ((1 - s) / (1 - t)).unsqueeze(-1)
        assert torch.allclose(x_s - x1, ratio * (x_t - x1), atol=1e-4)
        seen_lag |= bool((t - s).max() > 1e-3)
    assert seen_lag


def test_self_condition_lag_out_of_range_is_refused():
    from molgen.errors import ConfigError

    with pytest.raises(ConfigError, match="self_condition_lag"):
        PropMolFlow(**TINY, self_condition=True, self_condition_lag=1.5)
