"""The shipped ``sild-qm9`` (gap-conditioned latent flow on full QM9): loads by name offline, samples like
PropMolFlow's API."""
import pytest
import torch
from rdkit import Chem

import molgen
from molgen.errors import ConfigError


@pytest.fixture(scope="module")
def model():
    return molgen.load("sild-qm9")


def test_sild_qm9_is_a_gap_conditioned_flow_prior_on_means(model):
    assert model.conditional and model.property_name == model.hparams.property_name == "gap"
    assert model.hparams.prior == "flow" and model.hparams.prior_latents == "mean"


def test_sild_qm9_samples_by_seed_with_3d_bonded_molecules(model):
    a = model.sample(4, condition={"gap": 6.8}, steps=20, seed=3, progress=False)
    b = model.sample(4, condition={"gap": 6.8}, steps=20, seed=3, progress=False)
    assert len(a) == 4
    for m, n in zip(a, b):
        assert m.GetNumConformers() == 1 and m.GetNumAtoms() == n.GetNumAtoms()
        assert Chem.MolToSmiles(m) == Chem.MolToSmiles(n)
        assert {atom.GetSymbol() for atom in m.GetAtoms()} <= {"H", "C", "N", "O", "F"}
    with pytest.raises(ConfigError, match="conditioned on 'gap'"):
        model.sample(1, condition={"mu": 1.0}, steps=2)


def test_sample_stage_runs_propmolflows_target_protocol_on_the_shipped_checkpoint(model, tmp_path):
    """sample.ood / condition.value: every target is the 99th percentile (N from the molecules above the 97th),
    or the fixed value; a run that trains an unconditional model refuses a target before anything runs."""
    from molgen.config import compose
    from molgen.data.io import read_molecules
    from molgen.pipelines import sild
    from molgen.pipelines.shared.regressor import check_sample
    from molgen.runner import StageContext

    stage = {s.name: s for s in sild.STAGES}["sample"]
    base = ["pipeline=sild", "condition=gap", "model=sild_flow", "ckpt=sild-qm9", "sample.n=3", "sample.steps=4",
            "sample.sampler=euler"]
    p99 = float(model.sampler.ood_target)
    for extra, want, mode in ((["sample.ood=true"], p99, "out of distribution"),
                              (["condition.value=5.5"], 5.5, "fixed target")):
        cfg = compose(base + extra)
        check_sample(cfg)
        out = tmp_path / extra[0]
        out.mkdir()
        m = sild.sample(cfg, StageContext(stage, out, tmp_path, {}))
        assert m["mode"].startswith(mode) and m["molecules"] == 3
        mols, _ = read_molecules(out / "samples.sdf")
        assert mols and all(abs(float(x.properties["gap"]) - want) < 1e-4 for x in mols)
    for extra in (["sample.ood=true"], ["condition.value=5.5"]):
        with pytest.raises(ConfigError, match="need a conditional model"):
            check_sample(compose(["pipeline=sild", "condition=none", *extra]))
