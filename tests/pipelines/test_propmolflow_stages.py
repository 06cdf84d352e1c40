"""The propmolflow train / regressor / sample stages on a tiny featurized folder of real molecules."""
import copy
from pathlib import Path

import pytest
import torch

from molgen.config import compose
from molgen.data.io import read_molecules
from molgen.errors import CheckpointError, ConfigError
from molgen.pipelines.shared.regressor import regressor as shared_regressor
from molgen.runner import StageContext



@pytest.fixture()
def featurized(tmp_path, real_molecules):
    from molgen.data.graph import GraphDataset, MoleculeVocab

    names = ("alpha", "gap", "homo", "lumo", "mu", "Cv")
    mols = [copy.copy(m) for m in real_molecules]   # the session's molecules stay as they are for other tests
    for m in mols:
        m.properties = {p: m.properties.get(p, 1.0 + 0.1 * m.num_atoms) for p in names}
    d = tmp_path / "featurize"
    d.mkdir()
    for name, sel in (("generator.pt", slice(0, 5)), ("regressor.pt", slice(3, 8)), ("valid.pt", slice(5, 8))):
        GraphDataset.from_molecules(mols[sel], MoleculeVocab(), names).save(d / name)
    return d


def _ctx(stage_name, run_dir: Path, inputs: dict) -> StageContext:
    from molgen.pipelines import propmolflow

    stage = {s.name: s for s in propmolflow.STAGES}[stage_name]
    (run_dir / stage_name).mkdir(parents=True, exist_ok=True)
    return StageContext(stage, run_dir / stage_name, run_dir, inputs)


def test_train_regressor_sample_conditional(featurized, tmp_path, tiny_propmolflow):
    TINY = tiny_propmolflow
    from molgen.pipelines import propmolflow

    cfg = compose(["pipeline=propmolflow", "condition=gap", *TINY])
    run = tmp_path
    m = propmolflow.train(cfg, _ctx("train", run, {"featurize": featurized}))
    assert m["steps"] == 2 and (run / "train" / "model.ckpt").exists() and (run / "train" / "last.ckpt").exists()
    r = shared_regressor(cfg, _ctx("regressor", run, {"featurize": featurized}))
    assert r["property"] == "gap" and r["mae_unit"] == "meV" and (run / "regressor" / "regressor.ckpt").exists()
    assert {"regressor_mae", "naive_shuffled_mae", "atoms_only_mae"} <= set(r)
    s = propmolflow.sample(cfg, _ctx("sample", run, {"train": run / "train"}))
    assert s["molecules"] == 5 and s["molecules_per_second"] > 0
    mols, _ = read_molecules(run / "sample" / "samples.sdf")
    assert len(mols) == 5 - s["sdf_unwritable"] and all("gap" in mol.properties for mol in mols)
    assert (run / "sample" / "samples.xyz").read_text().count("propmolflow_") == 5
    # OOD task: every target is the 99th percentile of the generator half's values
    cfg_ood = compose(["pipeline=propmolflow", "condition=gap", "sample.ood=true", *TINY])
    s = propmolflow.sample(cfg_ood, _ctx("sample", tmp_path / "ood", {"train": run / "train"}))
    assert s["mode"].startswith("out of distribution")
    # the few-step settings reach the sampler and are recorded: each one alone changes the molecules of the same seed
    default_xyz = (run / "sample" / "samples.xyz").read_text()
    for name, override, recorded in (("grid", "sample.grid_power=2", (2.0, None)),
                                     ("eta", "sample.stochasticity=0", (1.0, 0.0))):
        s = propmolflow.sample(compose(["pipeline=propmolflow", "condition=gap", *TINY, override]),
                               _ctx("sample", tmp_path / name, {"train": run / "train"}))
        assert (s["grid_power"], s["stochasticity"]) == recorded
        assert (tmp_path / name / "sample" / "samples.xyz").read_text() != default_xyz
    with pytest.raises(ConfigError, match="sample.stochasticity"):
        compose(["pipeline=propmolflow", "sample.stochasticity=-1"])
    # valence decoding reaches the sampler and its counts are recorded with the stage
    s = propmolflow.sample(compose(["pipeline=propmolflow", "condition=gap", *TINY, "sample.valence_decode=true"]),
                           _ctx("sample", tmp_path / "vd", {"train": run / "train"}))
    counts = s["valence_decode_counts"]
    assert s["valence_decode"] and s["net_charge"] == 0 and counts["molecules"] == 5
    assert "valence_decode_counts" not in propmolflow.sample(cfg, _ctx("sample", tmp_path / "plain", {"train": run / "train"}))
    # the regressor checkpoint is not a generator; a wrong property is refused
    with pytest.raises(CheckpointError, match="not a PropMolFlow generator"):
        propmolflow.sample(compose(["pipeline=propmolflow", f"ckpt={run / 'regressor' / 'regressor.ckpt'}", *TINY]),
                           _ctx("sample", tmp_path / "x", {}))
    with pytest.raises(ConfigError, match="condition.property=mu"):
        propmolflow.sample(compose(["pipeline=propmolflow", "condition=mu", *TINY]),
                           _ctx("sample", tmp_path / "y", {"train": run / "train"}))


def test_predictor_stage_trains_on_the_generator_half_and_feeds_best_of_k_sampling(featurized, tmp_path,
                                                                                   tiny_propmolflow):
    from molgen.checkpoint import load_model
    from molgen.data.graph import GraphDataset
    from molgen.pipelines import propmolflow
    from molgen.pipelines.shared.regressor import predictor

    small = [o.replace("regressor.", "predictor.") for o in tiny_propmolflow if o.startswith("regressor.")]
    cfg = compose(["pipeline=propmolflow", "condition=gap", *tiny_propmolflow])
    assert "skipped" in predictor(cfg, _ctx("predictor", tmp_path / "none", {"featurize": featurized}))
    best_of = compose(["pipeline=propmolflow", "condition=gap", *tiny_propmolflow, "predictor=gvp_small", *small,
                       "sample.rerank=3"])
    p = predictor(best_of, _ctx("predictor", tmp_path, {"featurize": featurized}))
    assert p["evaluated_on"] == "regressor half (5 molecules)" and p["mae_unit"] == "meV"
    fitted = load_model(tmp_path / "predictor" / "predictor.ckpt")
    gen, reg = (GraphDataset.load(featurized / f) for f in ("generator.pt", "regressor.pt"))
    gap = lambda d: d.properties()[:, d.property_names.index("gap")].double().mean().item()  # noqa: E731
    assert gap(gen) != pytest.approx(gap(reg))                          # the halves differ, so this tells them apart
    assert fitted.property_name == "gap" and fitted.hparams.property_mean == pytest.approx(gap(gen))
    propmolflow.train(cfg, _ctx("train", tmp_path, {"featurize": featurized}))
    s = propmolflow.sample(best_of, _ctx("sample", tmp_path, {"train": tmp_path / "train",
                                                              "predictor": tmp_path / "predictor"}))
    assert s["rerank"] == 3 and s["molecules"] == 5


def test_unconditional_train_resume_and_regressor_skip(featurized, tmp_path, tiny_propmolflow):
    TINY = tiny_propmolflow
    from molgen.pipelines import propmolflow

    cfg = compose(["pipeline=propmolflow", "condition=none", *TINY])
    assert "skipped" in shared_regressor(cfg, _ctx("regressor", tmp_path, {"featurize": featurized}))
    propmolflow.train(cfg, _ctx("train", tmp_path, {"featurize": featurized}))
    cfg_more = compose(["pipeline=propmolflow", "condition=none", *TINY, "trainer.max_steps=4", "trainer.max_epochs=3"])
    ctx = _ctx("train", tmp_path, {"featurize": featurized})
    ctx.resuming = True
    m = propmolflow.train(cfg_more, ctx)
    assert m["steps"] == 4 and m["resumed_from"].endswith("last.ckpt")
    ckpt = torch.load(tmp_path / "train" / "model.ckpt", weights_only=True)
    assert ckpt["molgen"]["model_args"]["property_name"] is None and ckpt["molgen"]["pipeline"] == "propmolflow"
    s = propmolflow.sample(compose(["pipeline=propmolflow", "condition=none", *TINY, "sample.solver=heun"]),
                           _ctx("sample", tmp_path, {"train": tmp_path / "train"}))
    assert s["molecules"] == 5 and s["property"] == "none"
