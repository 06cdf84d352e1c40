"""The Gaunt backbone inside molgen's generators: PropMolFlow ``model.backbone=gaunt`` and SiLD
``model/encoder=gaunt``: symmetries on real molecules, the cross-product path, training, checkpoints, the CLI."""
import os
import subprocess
import sys

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from molgen.errors import ConfigError
from molgen.generative import remove_mean
from molgen.models.propmolflow.model import PropMolFlow, WithProperty
from molgen.models.propmolflow.net import GauntEndpointNet
from molgen.models.sild.model import SiLD
from molgen.models.sild.nets import GauntLatentEncoder
from molgen.nn.gaunt import GauntBackbone
from molgen.nn.molecule_net import complete_graph
from molgen.testing import assert_equivariant
from tests.conftest import noisy_flow_state

GAUNT_NET = {"_target_": "molgen.models.propmolflow.net.GauntEndpointNet", "lmax": 2, "hidden": 12, "n_layers": 2}
GAUNT = dict(s_dim=32, edge_dim=16, rbf_dim=8, backbone=GAUNT_NET)


def _run(net, a, c, dense, pos, t, batch, value=None):
    """Network outputs with the bond logits as a dense symmetric ``[n, n, K]`` tensor (order-free comparison)."""
    ei, rev = complete_graph(batch)
    x1, la, lc, le = net(a, c, pos, t, batch, ei, rev, dense[ei[0], ei[1]], value)
    n = a.shape[0]
    up = ei[0] < ei[1]
    bond = torch.zeros(n, n, le.shape[-1], dtype=le.dtype)
    bond[ei[0][up], ei[1][up]] = le
    return x1, la, lc, bond + bond.transpose(0, 1)


def _nontrivial(backbone: GauntBackbone) -> None:
    """Make the vector output and the cross-product path visibly non-zero at initialisation."""
    torch.nn.init.normal_(backbone.out_vector.weight, std=1.0)
    for layer in backbone.layers:
        torch.nn.init.normal_(layer.vector_mix.weight, std=1.0)


@pytest.mark.parametrize("cond", [None, "gap"])
def test_propmolflow_gaunt_net_is_se3_equivariant(real_graphs, cond):
    torch.manual_seed(0)
    model = PropMolFlow(**GAUNT, property_name=cond, embedding="concatenate_sum", property_mean=5.0).double()
    net = model.net.eval()          # float64: the check does not depend on the float summation order
    assert isinstance(net, GauntEndpointNet)
    _nontrivial(net.trunk)
    a, c, dense, pos, t, batch = noisy_flow_state(real_graphs)
    pos, t = pos.double(), t.double()
    value = torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64) if cond else None
    x1, la, lc, bond = _run(net, a, c, dense, pos, t, batch, value)
    assert torch.allclose(remove_mean(x1, batch), x1, atol=1e-5)                     # zero centre of mass
    assert (x1 - remove_mean(pos, batch)).abs().max() > 1e-2                          # the trunk moves atoms
    # rotations (proper: the cross-product path sees chirality), one shift per molecule, atoms shuffled inside
    # every molecule: centred positions rotate, logits and the dense bond logits follow the atoms
    assert_equivariant(lambda a, c, dense, pos, t, batch: _run(net, a, c, dense, pos, t, batch, value),
                       (a, c, dense, pos, t, batch), ("scalar", "scalar", "pair", "position", "scalar", "batch"),
                       ("vector", "scalar", "scalar", "pair"), rotations="proper", seed=1, atol=1e-4, rtol=1e-4)


def test_the_cross_product_path_is_what_breaks_mirror_symmetry(real_graphs):
    """docs/gaunt.md: Gaunt products lack the parity-odd 1 x 1 -> 1 path; the backbone adds it as a cross product.
    With it the backbone sees chirality (a mirror image is not a symmetry); with it zeroed it is E(3)-equivariant."""
    b = Batch.from_data_list([real_graphs[k] for k in range(3)])
    ei, _ = complete_graph(b.batch)
    h = torch.nn.functional.one_hot(b.atom_type, 5).double()
    torch.manual_seed(0)
    net = GauntBackbone(5, 8, hidden_channels=8, lmax=2, num_layers=2, num_vectors=2, cutoff=10.0).double()
    _nontrivial(net)
    for live in (True, False):
        if not live:
            for layer in net.layers:
                torch.nn.init.zeros_(layer.vector_mix.weight)

        def mirror_check():
            assert_equivariant(net, (h, b.pos.double(), ei, None, b.batch),
                               ("scalar", "position", "edge_index", None, "batch"), ("scalar", "vector"),
                               rotations="improper", seed=3, atol=1e-8, rtol=1e-5)

        if live:
            with pytest.raises(AssertionError, match="rotoreflection"):
                mirror_check()
        else:
            mirror_check()
        assert_equivariant(net, (h, b.pos.double(), ei, None, b.batch),              # proper rotations: always
                           ("scalar", "position", "edge_index", None, "batch"), ("scalar", "vector"),
                           rotations="proper", seed=3, atol=1e-8, rtol=1e-5)


def test_sild_gaunt_encoder_is_se3_equivariant(real_graphs):
    batch = Batch.from_data_list(list(real_graphs))
    torch.manual_seed(0)
    encoder = {"_target_": "molgen.models.sild.nets.GauntLatentEncoder", "hidden": 12, "n_layers": 2}
    model = SiLD(encoder=encoder, ae_hidden=16, decoder_layers=1, bond_hidden=16, denoiser_hidden=16,
                 denoiser_layers=1, timesteps=50).eval()
    assert isinstance(model.encoder, GauntLatentEncoder)
    _nontrivial(model.encoder.backbone)
    ei = complete_graph(batch.batch, batch.num_graphs)[0]
    mu_x, mu_h, kl = model.encode(batch, ei, sample=False)
    assert (mu_x - batch.pos).abs().max() > 1e-2 and torch.isfinite(kl).all()

    def encode(pos):
        moved = batch.clone()
        moved.pos = pos
        return model.encode(moved, ei, sample=False)

    # centred: translation drops out (float32, 1e-4: SiLD's atom features are float32 whatever the module's dtype)
    assert_equivariant(encode, batch.pos, "position", ("vector", "invariant", "invariant"), rotations="proper",
                       permute=False, seed=5, atol=1e-4, rtol=1e-4)


def test_unknown_backbone_or_encoder_is_one_config_error():
    with pytest.raises(ConfigError, match=r"molgen.models.propmolflow.net.EGNNEndpointNet: .*"):
        PropMolFlow(backbone={"_target_": "molgen.models.propmolflow.net.EGNNEndpointNet"})
    with pytest.raises(ConfigError, match=r"model.backbone=egnn: unknown backbone \(choose from gvp, gaunt\)"):
        PropMolFlow.from_checkpoint({"molgen": {"model_args": {"backbone": "egnn"}}, "state_dict": {}})
    with pytest.raises(ConfigError, match="model.encoder=gauntt: not an encoder spec"):
        SiLD(encoder="gauntt")
    with pytest.raises(ConfigError, match="unknown encoder"):
        SiLD.from_checkpoint({"molgen": {"model_args": {"encoder": "gauntt"}}, "state_dict": {}})
    with pytest.raises(ConfigError, match="lmax >= 1"):
        PropMolFlow(**{**GAUNT, "backbone": {**GAUNT_NET, "lmax": 0}})


def test_gaunt_propmolflow_trains_and_round_trips_through_molgen_load(real_graphs, tmp_path):
    import molgen
    from molgen.training import fit

    torch.manual_seed(0)
    model = PropMolFlow(**GAUNT, property_name="gap", property_mean=6.0, property_std=1.0, lr=1e-3)
    model.sampler.fit(real_graphs.num_atoms(), real_graphs.properties()[:, 0])
    loader = DataLoader(WithProperty(real_graphs, "gap"), batch_size=4)
    trainer_cfg = {"max_steps": 2, "max_epochs": 1, "ema_decay": None, "log_every_n_steps": 1, "seed": 0}
    metrics = fit(model, loader, None, trainer_cfg, tmp_path, pipeline="propmolflow", model_args=model.model_args)
    assert metrics["steps"] == 2 and "train/loss" in metrics      # fit() drops non-finite metrics
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["molgen"]["model_args"]["backbone"] == GAUNT_NET                 # the spec, plain values
    loaded = molgen.load(tmp_path / "last.ckpt", pipeline="propmolflow")
    assert isinstance(loaded.net, GauntEndpointNet) and loaded.hparams.backbone["hidden"] == 12
    model.eval()
    a, c, dense, pos, t, batch = noisy_flow_state(real_graphs)
    value = torch.tensor([5.0, 6.0, 7.0])
    for x, y in zip(_run(model.net, a, c, dense, pos, t, batch, value), _run(loaded.net, a, c, dense, pos, t, batch, value)):
        assert torch.equal(x, y)
    mols = loaded.sample(2, condition={"gap": 6.5}, steps=2, seed=0, progress=False)
    assert len(mols) == 2 and all(m.GetNumConformers() == 1 for m in mols)


TINY_CLI = ["pipeline=propmolflow", "data.max_molecules=60", "model.init_from=null", "model.s_dim=16", "model.edge_dim=8", "model.rbf_dim=8",
            "trainer.max_steps=2", "trainer.max_epochs=1",
            "trainer.batch_size=4", "trainer.val_every_n_epochs=1", "stage=train"]


def _molgen_run(args):
    return subprocess.run([sys.executable, "-m", "molgen.cli", "run", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_selects_the_backbone_and_refuses_unknown_names(tmp_path):
    """`molgen run ... model/backbone=gaunt`: a 2-step run with finite loss whose checkpoint rebuilds the Gaunt
    net; `model/backbone=nope`: exit code 2 and one error line naming the group."""
    import json

    import molgen

    bad = _molgen_run([*TINY_CLI, f"out={tmp_path}", "run=tiny", "model/backbone=nope"])
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "model/backbone" in last and "nope" in last and "gaunt" in last, last
    assert not (tmp_path / "tiny").exists()                        # refused before anything ran
    ok = _molgen_run([*TINY_CLI, f"out={tmp_path}", "run=tiny", "model/backbone=gaunt", "model.backbone.hidden=8",
                      "model.backbone.n_layers=1"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "featurize: running" in ok.stdout                       # the bad name stopped the first run before any stage
    metrics = json.loads((tmp_path / "tiny" / "metrics.json").read_text())["train"]
    assert metrics["steps"] == 2 and "train/loss" in metrics      # fit() drops non-finite metrics
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    model = molgen.load(tmp_path / "tiny" / "train" / "model.ckpt")
    assert isinstance(model.net, GauntEndpointNet) and model.hparams.backbone["n_layers"] == 1
