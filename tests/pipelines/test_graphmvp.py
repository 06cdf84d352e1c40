"""The GraphMVP pipeline through the CLI, checkpoints through molgen.load, and the 3D data readers."""
from __future__ import annotations

import gzip
import importlib.util
import json
import pickle

import pandas as pd
import pytest
import torch

import molgen
from molgen.cli import main
from molgen.data.conformers import geom_pairs, qm9_pairs
from molgen.data.embedded import embedded_dir
from molgen.data.moleculenet import load_moleculenet, scaffold_split
from molgen.errors import DataError
from molgen.models.graphmvp.classifier import GraphMVPEncoder, MoleculeClassifier

TINY = ["pipeline=graphmvp", "model.init_from=null", "pretrain.max_molecules=24", "pretrain.epochs=2", "trainer.batch_size=8",
        "model.num_layers=2", "model.emb_dim=16", "model.schnet_filters=8", "model.schnet_interactions=1",
        "model.schnet_gaussians=10", "finetune.epochs=2", "finetune.max_rows=600", "finetune.batch_size=64"]


def run_cli(capsys, args: list[str]) -> tuple[int, list[str], str]:
    code = main(["run", *args])
    out = capsys.readouterr()
    return code, [line for line in out.out.splitlines() if line.strip()], out.err


def test_tiny_end_to_end_run_and_load(tmp_path, capsys):
    args = [*TINY, f"out={tmp_path}", "run=tiny"]
    code, lines, err = run_cli(capsys, args)
    assert code == 0, err
    run = tmp_path / "tiny"
    assert lines[-1] == f"report: {run / 'report.md'}"
    results = json.loads((run / "finetune" / "results.json").read_text())
    runs = results["sets"]["bbbp"]["runs"]
    assert set(runs) == {"none", "graphmvp", "ecfp_rf"} and results["pretrain_data"] == "etkdg+mmff"
    assert all(0.0 <= r["test_roc_auc"] <= 1.0 for rs in runs.values() for r in rs)
    table = (run / "validate" / "table.md").read_text()
    assert "paper: GraphMVP" in table and "68.5 (0.2)" in table and "this run: ECFP4 + random forest" in table
    report = (run / "report.md").read_text()
    assert "## featurize" in report and "## validate" in report

    encoder = molgen.load(run / "train" / "encoder.ckpt")
    assert isinstance(encoder, GraphMVPEncoder)
    emb = encoder.embed(["CCO", "c1ccccc1", "CCO"])
    assert emb.shape == (3, 2 * 2 * 16) and emb.dtype == torch.float32   # 2 layers x 16, mean and sum
    assert torch.allclose(emb[0], emb[2]) and not torch.allclose(emb[0], emb[1])
    # the fine-tuned classifier, with test-split predictions beside it
    clf = molgen.load(run / "finetune" / "bbbp" / "graphmvp-seed0" / "classifier.ckpt")
    assert isinstance(clf, MoleculeClassifier) and clf.task_names == ["p_np"]
    p = clf.predict(["CCO", "CN1CCC[C@H]1c1cccnc1"])
    assert p.shape == (2, 1) and ((p >= 0) & (p <= 1)).all()
    preds = pd.read_csv(run / "finetune" / "bbbp" / "graphmvp-seed0" / "test_predictions.csv")
    assert list(preds.columns) == ["smiles", "label_p_np", "prob_p_np"] and len(preds) > 10
    assert not (run / "finetune" / "bbbp" / "graphmvp-seed0" / "last.ckpt").exists()
    # the exact scaffold split: every molecule once, no scaffold on both sides, the test predictions = its test part
    from rdkit.Chem.Scaffolds.MurckoScaffold import MurckoScaffoldSmiles

    split = pd.read_csv(run / "finetune" / "bbbp" / "split.csv")
    assert split["index"].is_unique and set(split["split"]) == {"train", "valid", "test"}
    scaffold = {part: {MurckoScaffoldSmiles(smi, includeChirality=True) for smi in g["smiles"]}
                for part, g in split.groupby("split")}
    assert not scaffold["train"] & scaffold["test"] and not scaffold["train"] & scaffold["valid"]
    assert sorted(split.loc[split["split"] == "test", "smiles"]) == sorted(preds["smiles"])
    # the chemist's baseline on the same split and seed: its test predictions score what results.json says
    from molgen.models.graphmvp.classifier import roc_auc

    rf = pd.read_csv(run / "finetune" / "bbbp" / "ecfp_rf-seed0" / "test_predictions.csv")
    assert sorted(rf["smiles"]) == sorted(preds["smiles"])
    assert roc_auc(rf["label_p_np"].to_numpy(), rf["prob_p_np"].to_numpy()) == \
        pytest.approx(runs["ecfp_rf"][0]["test_roc_auc"], abs=1e-4)

    # run again: every stage is reused
    code, lines, _ = run_cli(capsys, args)
    assert code == 0 and sum("reusing" in line for line in lines) == 4


def test_one_class_test_split_and_bad_task_are_one_line_errors(tmp_path, capsys):
    data = load_moleculenet("bbbp", max_rows=600)
    test = scaffold_split(data.smiles)[2]
    df = pd.read_csv(embedded_dir("moleculenet") / "BBBP.csv.gz", nrows=600)
    df.loc[data.rows[test], "p_np"] = 1  # every test molecule of the scaffold split is positive
    root = tmp_path / "mnet"
    root.mkdir()
    with gzip.open(root / "BBBP.csv.gz", "wt") as f:
        df.to_csv(f, index=False)
    code, lines, err = run_cli(capsys, [*TINY, f"out={tmp_path}", "run=oneclass", f"data.root={root}",
                                        "pretrain.max_molecules=8", "pretrain.epochs=1"])
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: bbbp: no task has both classes in the test scaffold split (60 molecules); ROC-AUC is undefined")
    assert "Traceback" not in err
    # featurize and train finished and are kept
    assert (tmp_path / "oneclass" / "train" / "encoder.ckpt").is_file()
    code, _, err = run_cli(capsys, [*TINY, f"out={tmp_path}", "run=oneclass", "finetune.task=tox22"])
    assert code == 2 and err.strip().splitlines()[-1] == "error: finetune.task=tox22: unknown set (choose from all, bbbp, tox21, " \
                                        "toxcast, sider, clintox, muv, hiv, bace)"
    # a list of sets is a valid task whichever finetune group set the default (paper: `all`); a bad init is named
    # before any stage runs (a fresh run folder stays without featurize and train)
    code, _, err = run_cli(capsys, [*TINY, f"out={tmp_path}", "run=badinit", "finetune=paper",
                                    "finetune.task=[bbbp,bace]", "finetune.init=[none,rf]"])
    assert code == 2 and err.strip().splitlines()[-1] == \
        "error: finetune.init=rf: choose from none, pretrained, ecfp_rf"
    assert not (tmp_path / "badinit" / "featurize").exists()


def test_load_rejects_a_pretrainer_of_another_kind(tmp_path):
    from molgen.errors import CheckpointError
    from molgen.checkpoint import load_model

    with pytest.raises(CheckpointError, match="unknown kind"):
        load_model({"molgen": {"pipeline": "graphmvp", "kind": "sampler"}, "state_dict": {}})


@pytest.mark.skipif("graphmvp-pretrained" not in molgen.list_checkpoints(), reason="checkpoint not shipped")
def test_shipped_pretrained_encoder_embeds_offline():
    encoder = molgen.load("graphmvp-pretrained")
    emb = encoder.embed(["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"])
    assert emb.shape == (3, 3000) and torch.isfinite(emb).all()       # default readout: every layer, mean + sum
    last = encoder.embed(["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"], readout="mean")
    assert last.shape == (3, 300) and torch.allclose(last, emb[:, 1200:1500], atol=1e-5)
    assert (molgen.checkpoint.resolve("graphmvp-pretrained").stat().st_size) <= 20 * 2**20
    # a SMILES RDKit cannot parse: one error naming it and its index, or a NaN row on request
    with pytest.raises(DataError, match=r"SMILES #1 'C1CC' cannot be parsed"):
        encoder.embed(["CCO", "C1CC", "CCN"])
    rows = encoder.embed(["CCO", "C1CC", "CCN", None], invalid="nan")
    assert rows.shape == (4, 3000) and torch.isnan(rows[[1, 3]]).all() and torch.isfinite(rows[[0, 2]]).all()
    assert torch.allclose(rows[0], emb[0], atol=1e-5)             # the same row as in a batch without failures


def test_geom_rdkit_folder_reader(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    # GEOM's published layout: summary_drugs.json -> drugs/<name>.pickle with {"conformers": [{"rd_mol"}]}
    (tmp_path / "drugs").mkdir()
    summary = {}
    for k, smi in enumerate(["CCO", "c1ccccc1O", "CC(=O)N"]):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        ids = AllChem.EmbedMultipleConfs(mol, 3, randomSeed=k)
        confs = []
        for cid in ids:
            m = Chem.Mol(mol, confId=cid)
            one = Chem.Mol(m)
            one.RemoveAllConformers()
            one.AddConformer(m.GetConformer(cid), assignId=True)
            confs.append({"rd_mol": one, "boltzmannweight": 1 / 3})
        with open(tmp_path / "drugs" / f"m{k}.pickle", "wb") as f:
            pickle.dump({"conformers": confs, "smiles": smi}, f)
        summary[smi] = {"pickle_path": f"drugs/m{k}.pickle", "uniqueconfs": 3}
    summary["broken"] = {"pickle_path": "drugs/missing.pickle"}
    (tmp_path / "summary_drugs.json").write_text(json.dumps(summary))
    pairs, report = geom_pairs(tmp_path, max_molecules=10, n_conformers=2, progress=False)
    assert report.kept == 3 and report.failures == {"unreadable_pickle": 1} and len(pairs) == 6
    ethanol = [p for p in pairs if p.num_nodes == 3]
    assert len(ethanol) == 2 and ethanol[0].pos.shape == (3, 3) and ethanol[0].z.tolist() == [6, 6, 8]


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed")
def test_qm9_pairs_keep_dft_heavy_atom_geometry():
    pairs, report = qm9_pairs(60, progress=False)
    assert report.tried == 60 and report.kept == len(pairs) > 45
    assert report.failures.get("single_heavy_atom", 0) >= 3  # CH4, NH3, H2O
    for g in pairs:
        assert g.pos.shape == (g.num_nodes, 3) and (g.z > 1).all() and g.x.shape == (g.num_nodes, 2)
        assert (g.x[:, 0] == g.z - 1).all()
        d = torch.cdist(g.pos, g.pos)[g.edge_index[0], g.edge_index[1]]
        assert ((d > 1.0) & (d < 1.8)).all()  # perceived bonds are bond-length apart in the DFT geometry


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed")
def test_featurize_joins_qm9_and_etkdg_pairs(tmp_path):
    from molgen.config import compose
    from molgen.errors import ConfigError
    from molgen.pipelines import graphmvp
    from molgen.runner import StageContext

    cfg = compose(["pipeline=graphmvp", "pretrain=qm9", "pretrain.data=[qm9,etkdg]", "pretrain.max_molecules=12",
                   "pretrain.workers=1"])
    stage = {s.name: s for s in graphmvp.STAGES}["featurize"]
    (tmp_path / "featurize").mkdir()
    m = graphmvp.featurize(cfg, StageContext(stage, tmp_path / "featurize", tmp_path, {}))
    qm9, etkdg = m["parts"]
    assert m["source"] == "qm9_dft+etkdg+mmff" and qm9["tried"] == etkdg["tried"] == 12
    assert m["pairs"] == qm9["kept"] + etkdg["kept"] and etkdg["kept"] >= 10
    assert qm9["failed_single_heavy_atom"] >= 3            # CH4, NH3, H2O have no 2D structure
    # BBBP's molecules are larger than QM9's (at most 9 heavy atoms): both sources are in the file
    from molgen.data.packed import PackedGraphs
    packed = PackedGraphs.load(tmp_path / "featurize" / "pairs.pt")
    sizes = [packed[i].num_nodes for i in range(len(packed))]
    assert max(sizes[:qm9["kept"]]) <= 9 < max(sizes[qm9["kept"]:])
    assert "qm9_dft" in (tmp_path / "featurize" / "report.md").read_text()
    with pytest.raises(ConfigError, match="pretrain.data=xyz"):
        graphmvp.featurize(compose(["pipeline=graphmvp", "pretrain.data=[qm9,xyz]"]),
                           StageContext(stage, tmp_path / "featurize", tmp_path, {}))


def test_pretraining_continues_from_an_encoder(tmp_path, capsys):
    """model.init_from: the GIN starts from a pretrained encoder (with lr 0 its weights come out unchanged); an
    encoder of another size is one line before anything trains."""
    first = [*TINY, f"out={tmp_path}", "run=first", "stage=train"]
    assert run_cli(capsys, first)[0] == 0
    source = tmp_path / "first" / "train" / "encoder.ckpt"
    code, lines, err = run_cli(capsys, [*TINY, f"out={tmp_path}", "run=second", "stage=train",
                                        f"model.init_from={source}", "trainer.lr=0.0"])
    assert code == 0, err
    assert any("GIN initialised from" in line for line in lines)
    before = torch.load(source, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "second" / "train" / "encoder.ckpt", weights_only=True)["state_dict"]
    weights = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
    state = json.loads((tmp_path / "second" / "train" / "_stage.json").read_text())
    assert state["metrics"]["initialised_from"] == str(source)

    code, _, err = run_cli(capsys, [*TINY, f"out={tmp_path}", "run=third", "stage=train",
                                    "model.init_from=graphmvp-pretrained"])
    assert code == 2 and "the architecture differs" in err.strip().splitlines()[-1]


def test_finetuning_a_given_encoder_does_not_depend_on_how_pretraining_would_start():
    """model.init_from is read by the train stage only: with ckpt= the finetune stage's key ignores it, so a
    finished fine-tuning table is reused whatever the pretraining default."""
    from molgen.config import compose, pipeline_module
    from molgen.runner import stage_key

    stage = next(s for s in pipeline_module("graphmvp").STAGES if s.name == "finetune")
    keys = {stage_key(stage, compose(["pipeline=graphmvp", "ckpt=graphmvp-pretrained", f"model.init_from={v}"]),
                      {})[0] for v in ("null", "graphmvp-pretrained")}
    assert len(keys) == 1
    other = stage_key(stage, compose(["pipeline=graphmvp", "ckpt=graphmvp-pretrained", "finetune.epochs=3"]), {})[0]
    assert other not in keys
