"""GraphMVP: 2D-3D multi-view pretraining of a GIN, fine-tuned on MoleculeNet (Liu et al., ICLR 2022).

Stages (``molgen run pipeline=graphmvp [stage=...]``):

* ``featurize``: (2D graph, 3D geometry) pairs for pretraining: RDKit ETKDG+MMFF conformers of a SMILES set
  (the train splits of ``pretrain.smiles_from``), QM9's DFT geometries, or GEOM's rdkit_folder.
* ``train``: GraphMVP pretraining (EBM-NCE + VRR, optionally AttrMask/ContextPred) -> ``encoder.ckpt``.
* ``finetune``: for each set of ``finetune.task``, each ``finetune.init`` (``none`` = no pretraining,
  ``pretrained`` = the pretrained encoder, ``ecfp_rf`` = the chemist's baseline, ECFP4 + a random forest per
  task) and each seed: fine-tune on the scaffold split, keep the best-validation epoch, write its test ROC-AUC,
  the classifier checkpoint and test-split predictions (the baseline: its test ROC-AUC and predictions).
* ``validate``: the benchmark table, ROC-AUC mean +- std over seeds per set and the average, beside the paper.

``ckpt=<encoder.ckpt>`` replaces the train stage (fine-tune a given pretrained encoder).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from molgen.errors import CheckpointError, ConfigError, DataError
from molgen.formatting import markdown_table, mean_std
from molgen.config import plain
from molgen.runner import Stage, StageContext, say

PIPELINE = "graphmvp"
ENCODER_KIND, CLASSIFIER_KIND = "pretrained_encoder", "classifier"

#: GraphMVP Table 1 (ROC-AUC %, mean (std) over seeds 0-2), from ../shared/research/molecules.md section 4.5.
#: "none" and "graphmvp" rows are verified there; GraphMVP-G and most GraphMVP-C cells are marked unverified.
PAPER_ROC_AUC = {
    "none": {"bbbp": (65.4, 2.4), "tox21": (74.9, 0.8), "toxcast": (61.6, 1.2), "sider": (58.0, 2.4),
             "clintox": (58.8, 5.5), "muv": (71.0, 2.5), "hiv": (75.3, 0.5), "bace": (72.6, 4.9), "avg": 67.21},
    "graphmvp": {"bbbp": (68.5, 0.2), "tox21": (74.5, 0.4), "toxcast": (62.7, 0.1), "sider": (62.3, 1.6),
                 "clintox": (79.0, 2.5), "muv": (75.0, 1.4), "hiv": (74.8, 1.4), "bace": (76.8, 1.1), "avg": 71.69},
    "graphmvp_g": {"bbbp": (70.8, 0.5), "tox21": (75.9, 0.5), "toxcast": (63.1, 0.2), "sider": (60.2, 1.1),
                   "clintox": (79.1, 2.8), "muv": (77.7, 0.6), "hiv": (76.0, 0.1), "bace": (79.3, 1.5), "avg": 72.76},
    "graphmvp_c": {"bbbp": (72.4, 1.6), "tox21": (74.4, 0.2), "toxcast": (63.1, 0.4), "sider": (63.9, 1.2),
                   "clintox": (77.5, 4.2), "muv": (75.0, 1.0), "hiv": (77.0, 1.2), "bace": (81.2, 0.9), "avg": 73.07},
}
ROW_LABEL = {"none": "no pretraining", "graphmvp": "GraphMVP", "graphmvp_g": "GraphMVP-G", "graphmvp_c": "GraphMVP-C",
             "ecfp_rf": "ECFP4 + random forest"}
INITS = ("none", "pretrained", "ecfp_rf")


# --------------------------------------------------------------------------------------------- featurize
def featurize(cfg: DictConfig, ctx: StageContext) -> dict:
    """Build the 3D pretraining pairs (``pairs.pt``) from ``pretrain.data``."""
    from molgen.data.conformers import etkdg_pairs, geom_pairs, qm9_pairs
    from molgen.data.moleculenet import load_moleculenet, scaffold_split
    from molgen.data.packed import PackedGraphs

    p = cfg.pretrain
    sources = [str(p.data)] if isinstance(p.data, str) else [str(x) for x in p.data]
    unknown = [x for x in sources if x not in ("etkdg", "qm9", "geom")]
    if unknown or not sources:
        raise ConfigError(f"pretrain.data={unknown[0] if unknown else '[]'}: choose from etkdg, qm9, geom "
                          "(or a list of them, e.g. [qm9,etkdg])")
    if "geom" in sources and not p.get("root"):
        raise ConfigError("pretrain.data=geom needs pretrain.root=<GEOM rdkit_folder>")
    n_max = None if p.max_molecules is None else int(p.max_molecules)
    pairs: list = []
    reports = []
    for source in sources:
        if source == "etkdg":
            names = [p.smiles_from] if isinstance(p.smiles_from, str) else list(p.smiles_from)
            smiles: list[str] = []
            seen: set[str] = set()
            for name in names:
                data = load_moleculenet(name, cfg.data.root)
                train, _, _ = scaffold_split(data.smiles)  # train split only: no valid/test molecule is pretrained on
                for i in train:
                    if data.smiles[i] not in seen:
                        seen.add(data.smiles[i])
                        smiles.append(data.smiles[i])
            order = np.random.default_rng(int(p.seed)).permutation(len(smiles))
            smiles = [smiles[i] for i in order[:n_max]]
            say(f"  ETKDG+MMFF conformers for {len(smiles)} SMILES from the train splits of {', '.join(names)}")
            got, report = etkdg_pairs(smiles, seed=int(p.seed), mmff=bool(p.mmff))
        elif source == "qm9":
            say(f"  QM9 DFT geometries ({'all' if n_max is None else f'the first {n_max}'} records of qm9pack)")
            got, report = qm9_pairs(n_max, processes=int(p.get("workers", 1)))
        else:
            got, report = geom_pairs(p.root, n_max or 50000, int(p.n_conformers))
        pairs += got
        reports.append(report)
    if len(pairs) < 2:
        raise DataError(f"pretrain.data={'+'.join(sources)}: only {len(pairs)} usable 3D structures (need at least 2)")
    meta = reports[0].as_dict() if len(reports) == 1 else {
        "source": "+".join(r.source for r in reports), "tried": sum(r.tried for r in reports),
        "kept": sum(r.kept for r in reports), "parts": [r.as_dict() for r in reports]}
    PackedGraphs.from_graphs(pairs, meta=meta).save(ctx.dir / "pairs.pt")
    atoms = np.array([g.num_nodes for g in pairs])
    metrics = {**meta, "pairs": len(pairs), "mean_heavy_atoms": float(atoms.mean())}
    lines = []
    for report in reports:
        fails = ", ".join(f"{k}: {v}" for k, v in report.failures.items()) or "none"
        lines.append(f"**{report.source}**: {report.kept} molecules out of {report.tried} tried; failures: {fails}"
                     + (f"; {report.no_mmff} kept unoptimised (no MMFF94 parameters)" if report.no_mmff else ""))
    (ctx.dir / "report.md").write_text(
        f"Pretraining data: {len(pairs)} (2D graph, 3D structure) pairs. " + "; ".join(lines)
        + f". Mean {atoms.mean():.1f} heavy atoms.\n")
    return metrics


# --------------------------------------------------------------------------------------------- train
def _model_kwargs(cfg: DictConfig) -> dict:
    m = (plain(cfg.model) or {})
    m.pop("name", None)
    m.pop("init_from", None)
    return m


def _epoch_losses(log_dir: Path) -> dict[str, list[float]]:
    """Per-epoch ``train/*`` means from Lightning's CSV log."""
    import csv

    path = log_dir / "logs" / "metrics.csv"
    out: dict[str, list[float]] = {}
    if not path.is_file():
        return out
    with open(path) as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k.startswith("train/") and v not in ("", None):
                    out.setdefault(k[len("train/"):], []).append(float(v))
    return out


def train(cfg: DictConfig, ctx: StageContext) -> dict:
    """GraphMVP pretraining through :func:`molgen.training.fit`; exports ``encoder.ckpt`` (GIN weights)."""
    from torch_geometric.loader import DataLoader

    from molgen.data.packed import PackedGraphs
    from molgen.checkpoint import export_weights
    from molgen.models.graphmvp.classifier import GraphMVPEncoder
    from molgen.spec import build
    from molgen.training import fit

    pairs = PackedGraphs.load(ctx.input("featurize") / "pairs.pt")
    tcfg = (plain(cfg.trainer) or {})
    torch.manual_seed(int(tcfg.get("seed", cfg.seed)))
    spec = {"_target_": "molgen.models.graphmvp.pretrainer.GraphMVPPretrainer", **_model_kwargs(cfg)}
    module = build(spec, lr=float(tcfg.get("lr", 1e-3)))  # the model group's _target_ with these arguments
    init = cfg.model.get("init_from")
    if init and not ctx.resuming:  # continue from a pretrained encoder (GIN weights; SchNet and heads start fresh)
        from molgen.checkpoint import warm_start

        warm = warm_start(module, str(init), pipeline=PIPELINE)
        say(f"  GIN initialised from {warm['source']} ({warm['loaded']} tensors; SchNet and the VRR heads fresh)")
    loader = DataLoader(pairs, batch_size=int(tcfg.get("batch_size", 256)), shuffle=True, drop_last=len(pairs) > 2 *
                        int(tcfg.get("batch_size", 256)), num_workers=int(tcfg.get("num_workers", 0)))
    say(f"  pretraining {cfg.model.name} on {len(pairs)} pairs ({pairs.meta.get('source')}), "
        f"{tcfg.get('max_epochs')} epochs, batch {tcfg.get('batch_size')}")
    metrics = fit(module, loader, None, tcfg, ctx.dir, pipeline=PIPELINE, model_args=module.model_args(),
                  extra_metadata={"kind": "pretrainer", "pretrain_data": str(pairs.meta.get("source")),
                                  "pretrain_pairs": len(pairs), "variant": str(cfg.model.name)},
                  resume=ctx.resuming, target=GraphMVPEncoder)  # molgen.load(train/last.ckpt) -> its encoder
    export_weights(ctx.dir / "last.ckpt", ctx.dir / "encoder.ckpt", keep="gin.", kind=ENCODER_KIND,
                   target=GraphMVPEncoder,
                   model_args={"num_layers": int(cfg.model.num_layers), "emb_dim": int(cfg.model.emb_dim)})
    curves = _epoch_losses(ctx.dir)
    rows = [[k, f"{v[0]:.4f}", f"{v[-1]:.4f}"] for k, v in curves.items() if v]
    (ctx.dir / "report.md").write_text("\n".join([
        f"Pretrained **{cfg.model.name}** on {len(pairs)} pairs ({pairs.meta.get('source')}) for "
        f"{metrics.get('epochs', 0)} epochs ({metrics.get('steps')} steps, {metrics.get('seconds')} s). "
        "Encoder: [`encoder.ckpt`](./encoder.ckpt).", "",
        markdown_table(["loss term", "first epoch", "last epoch"], rows), ""]))
    metrics.update({f"first_epoch_{k}": v[0] for k, v in curves.items() if v})
    metrics.update({f"last_epoch_{k}": v[-1] for k, v in curves.items() if v})
    if init:
        metrics["initialised_from"] = str(init)
        metrics["note"] = (f"pretraining continued from {init} (its GIN), not from scratch; from scratch: "
                           "model.init_from=null")
    return metrics


# --------------------------------------------------------------------------------------------- finetune
def _task_list(task) -> list[str]:
    from molgen.data.moleculenet import BENCHMARK, DATASETS

    names = list(BENCHMARK) if task == "all" else [task] if isinstance(task, str) else list(task)
    bad = [n for n in names if n not in DATASETS]
    if bad:
        raise ConfigError(f"finetune.task={bad[0]}: unknown set (choose from all, {', '.join(DATASETS)})")
    return names


def check_finetune(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The sets and inits of ``finetune`` (one line naming a bad one, and scikit-learn missing for ``ecfp_rf``),
    checked before any stage runs."""
    names = _task_list(cfg.finetune.task)
    init = plain(cfg.finetune.init)
    inits = [init] if isinstance(init, str) else list(init)
    for item in inits:
        if item not in INITS:
            raise ConfigError(f"finetune.init={item}: choose from {', '.join(INITS)}")
    if "ecfp_rf" in inits:
        from molgen.models.graphmvp.baselines import random_forest

        random_forest(0)   # raises the one-line ConfigError when scikit-learn is not installed
    return names, inits


def _encoder_path(cfg: DictConfig, ctx: StageContext) -> Path:
    if cfg.get("ckpt"):
        return Path(str(cfg.ckpt)).expanduser()
    return ctx.input("train") / "encoder.ckpt"


def _load_encoder_state(path: Path) -> tuple[dict, dict]:
    from molgen.checkpoint import read

    ckpt = read(path)
    if ckpt["molgen"].get("pipeline") != PIPELINE or ckpt["molgen"].get("kind") not in (ENCODER_KIND, "pretrainer"):
        raise CheckpointError(f"{path}: not a GraphMVP pretrained-encoder checkpoint "
                              f"(pipeline={ckpt['molgen'].get('pipeline')}, kind={ckpt['molgen'].get('kind')})")
    return {k[len("gin."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("gin.")}, ckpt["molgen"]


def subsample_train(split: tuple, max_train: int | None, seed: int = 0) -> tuple:
    """Keep a seeded random ``max_train`` of the scaffold train split (for HIV / MUV on a CPU); the valid and
    test splits stay whole, so test figures stay comparable with the full protocol's."""
    train = np.asarray(split[0])
    if max_train is None or int(max_train) >= len(train):
        return split
    if int(max_train) < 1:
        raise ConfigError(f"finetune.max_train must be >= 1 or null, got {max_train}")
    keep = np.sort(np.random.RandomState(seed).choice(len(train), int(max_train), replace=False))
    return (train[keep], *split[1:])


def finetune_one(data, split, init_state: dict | None, seed: int, fcfg: dict, model_cfg: DictConfig,
                 out: Path) -> dict:
    """Fine-tune one (set, init, seed) in ``out``; returns the best-validation epoch's scores."""
    from torch_geometric.loader import DataLoader

    from molgen.data.moleculenet import labelled_graphs
    from molgen.models.graphmvp.classifier import MoleculeClassifier
    from molgen.checkpoint import export_weights
    from molgen.training import fit

    torch.manual_seed(seed)
    train_idx, valid_idx, test_idx = split
    loaders = [DataLoader(labelled_graphs(data, idx), batch_size=int(fcfg["batch_size"]), shuffle=shuffle)
               for idx, shuffle in ((train_idx, True), (valid_idx, False), (test_idx, False))]
    module = MoleculeClassifier(len(data.tasks), int(model_cfg.num_layers), int(model_cfg.emb_dim),
                                float(fcfg["dropout"]), float(fcfg["lr"]), float(fcfg.get("weight_decay", 0.0)),
                                list(data.tasks))
    if init_state is not None:
        module.gin.load_state_dict(init_state)
    tcfg = {"accelerator": fcfg.get("accelerator", "cpu"), "devices": fcfg.get("devices", 1),
            "max_epochs": int(fcfg["epochs"]), "seed": seed, "log_every_n_steps": 10, "ema_decay": None}
    fit(module, loaders[0], loaders[1:], tcfg, out, pipeline=PIPELINE, model_args=module.model_args(),
        extra_metadata={"kind": CLASSIFIER_KIND, "dataset": data.name}, resume=True)
    best = dict(module.best_scores)
    if (out / "best.ckpt").is_file():  # the best-validation epoch's weights for predict()
        export_weights(out / "best.ckpt", out / "classifier.ckpt")
        module.load_state_dict(torch.load(out / "classifier.ckpt", weights_only=True)["state_dict"])
    write_predictions(data, test_idx, module.predict([data.smiles[i] for i in test_idx]).numpy(),
                      out / "test_predictions.csv")
    if not fcfg.get("keep_training_checkpoints", False):
        for name in ("last.ckpt", "best.ckpt"):  # optimizer state; classifier.ckpt keeps the weights
            (out / name).unlink(missing_ok=True)
    best.update(epochs=int(fcfg["epochs"]), history=module.history)
    (out / "result.json").write_text(json.dumps(best, indent=1))
    return best


def write_predictions(data, test_idx, probs: np.ndarray, path: Path) -> Path:
    """``test_predictions.csv``: SMILES, then each task's label (empty when missing) and predicted probability."""
    rows = ["smiles," + ",".join(f"label_{t},prob_{t}" for t in data.tasks)]
    for k, i in enumerate(test_idx):
        cells = [f"{'' if np.isnan(data.labels[i, t]) else int(data.labels[i, t])},{probs[k, t]:.5f}"
                 for t in range(len(data.tasks))]
        rows.append(f"\"{data.smiles[i]}\"," + ",".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def baseline_one(data, fingerprints: np.ndarray, split, seed: int, fcfg: dict, out: Path) -> dict:
    """ECFP4 + random forest (``finetune.rf_trees`` trees per task, ``random_state=seed``) on the same split."""
    from molgen.models.graphmvp.baselines import ecfp_random_forest

    trees = int(fcfg.get("rf_trees") or 500)
    got = ecfp_random_forest(fingerprints, data.labels, split, seed, n_trees=trees, n_jobs=torch.get_num_threads())
    write_predictions(data, split[2], got.pop("test_probs"), out / "test_predictions.csv")
    best = {**got, "epoch": None, "model": f"ECFP4 (radius 2, 2048 bits) + random forest ({trees} trees per task)"}
    (out / "result.json").write_text(json.dumps(best, indent=1))
    return best


def write_split(data, split: tuple, path: Path) -> Path:
    """The exact split as a CSV: ``index`` (row among the parsed molecules), ``smiles``, ``split``
    (train/valid/test); molecules the split left out (``finetune.max_train``) are not listed."""
    import pandas as pd

    rows = [(int(i), data.smiles[int(i)], part) for part, idx in zip(("train", "valid", "test"), split) for i in idx]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["index", "smiles", "split"]).sort_values("index").to_csv(path, index=False)
    return path


def finetune(cfg: DictConfig, ctx: StageContext) -> dict:
    """Fine-tune on every requested set x init x seed; ``results.json`` gathers the best-validation scores."""
    from molgen.data.moleculenet import load_moleculenet, scaffold_split
    from molgen.models.graphmvp.classifier import mean_roc_auc
    from molgen.settings import quiet_rdkit

    fcfg = (plain(cfg.finetune) or {})
    names, inits = check_finetune(cfg)
    seeds = [int(s) for s in fcfg["seeds"]]
    encoder_state, encoder_meta = (None, {})
    if "pretrained" in inits:
        encoder_state, encoder_meta = _load_encoder_state(_encoder_path(cfg, ctx))
    variant = str(encoder_meta.get("variant", cfg.model.name))
    results: dict = {"variant": variant, "pretrain_data": encoder_meta.get("pretrain_data"), "sets": {}}
    for name in names:
        data = load_moleculenet(name, cfg.data.root, max_rows=fcfg.get("max_rows"))
        split = subsample_train(scaffold_split(data.smiles), fcfg.get("max_train"))
        _, n_test_tasks = mean_roc_auc(data.labels[split[2]], np.zeros_like(data.labels[split[2]]))
        if n_test_tasks == 0:
            raise DataError(f"{name}: no task has both classes in the test scaffold split "
                            f"({len(split[2])} molecules); ROC-AUC is undefined")
        say(f"  {name}: {len(data)} molecules ({len(data.skipped)} unparsable skipped), {len(data.tasks)} tasks, "
            f"scaffold split {len(split[0])}/{len(split[1])}/{len(split[2])}")
        write_split(data, split, ctx.dir / name / "split.csv")
        entry = {"molecules": len(data), "unparsable_skipped": len(data.skipped), "tasks": len(data.tasks),
                 "split": [len(s) for s in split], "max_train": fcfg.get("max_train"), "runs": {}}
        fingerprints = None   # ECFP4 of the set, computed once for the baseline's seeds
        for init in inits:
            key = variant if init == "pretrained" else init
            for seed in seeds:
                out = ctx.dir / name / f"{key}-seed{seed}"
                done = out / "result.json"
                if done.is_file():
                    best = json.loads(done.read_text())
                    say(f"    {key} seed {seed}: reusing {done}")
                elif init == "ecfp_rf":
                    if fingerprints is None:
                        from molgen.models.graphmvp.baselines import ecfp

                        with quiet_rdkit():
                            fingerprints = ecfp(data.smiles)
                    best = baseline_one(data, fingerprints, split, seed, fcfg, out)
                    say(f"    {key} seed {seed}: test ROC-AUC {100 * best['test_roc_auc']:.1f} "
                        f"(valid {100 * best['val_roc_auc']:.1f})")
                else:
                    best = finetune_one(data, split, encoder_state if init == "pretrained" else None, seed, fcfg,
                                        cfg.model, out)
                    say(f"    {key} seed {seed}: test ROC-AUC {100 * best['test_roc_auc']:.1f} at best valid epoch "
                        f"{best['epoch']} (valid {100 * best['val_roc_auc']:.1f})")
                entry["runs"].setdefault(key, []).append({"seed": seed, "test_roc_auc": best["test_roc_auc"],
                                                          "val_roc_auc": best["val_roc_auc"], "epoch": best["epoch"]})
        results["sets"][name] = entry
    (ctx.dir / "results.json").write_text(json.dumps(results, indent=1))
    metrics: dict = {}
    rows = []
    for name, entry in results["sets"].items():
        for key, runs in entry["runs"].items():
            vals = [100 * r["test_roc_auc"] for r in runs]
            metrics[f"{name}/{key}"] = float(np.mean(vals))
            rows.append([name, ROW_LABEL.get(key, key), ", ".join(f"{v:.1f}" for v in vals), f"{np.mean(vals):.1f}"])
    (ctx.dir / "report.md").write_text(
        f"Fine-tuned {fcfg['epochs']} epochs per run (paper: 100), batch {fcfg['batch_size']}, lr {fcfg['lr']}, "
        f"dropout {fcfg['dropout']}; test ROC-AUC at the best-validation epoch. Per-run folders hold "
        "`classifier.ckpt` and `test_predictions.csv`; `<set>/split.csv` is the exact scaffold split.\n\n"
        + markdown_table(["set", "encoder", "test ROC-AUC (%) per seed", "mean"], rows) + "\n")
    return metrics


# --------------------------------------------------------------------------------------------- validate
def benchmark_table(results: dict) -> tuple[str, dict]:
    """Markdown table (ours beside the paper) and ``{row: average}`` from ``finetune/results.json``."""
    from molgen.data.moleculenet import BENCHMARK

    sets = [s for s in BENCHMARK if s in results["sets"]] + [s for s in results["sets"] if s not in BENCHMARK]
    keys: list[str] = []
    for entry in results["sets"].values():
        keys += [k for k in entry["runs"] if k not in keys]
    rows = []
    averages = {}
    for key in keys:
        cells, means = [], []
        for s in sets:
            runs = results["sets"][s]["runs"].get(key, [])
            vals = [100 * r["test_roc_auc"] for r in runs if r["test_roc_auc"] == r["test_roc_auc"]]
            if vals:
                means.append(float(np.mean(vals)))
            cells.append(mean_std(vals, ".1f", none="–"))
        avg = float(np.mean(means)) if len(means) == len(sets) else float("nan")
        averages[key] = avg
        rows.append([f"**this run: {ROW_LABEL.get(key, key)}**", *cells, "–" if math.isnan(avg) else f"{avg:.2f}"])
    for key in keys:
        paper = PAPER_ROC_AUC.get(key)
        if paper:
            cells = [f"{paper[s][0]:.1f} ({paper[s][1]:.1f})" if s in paper else "–" for s in sets]
            sub = [paper[s][0] for s in sets if s in paper]
            avg = f"{np.mean(sub):.2f}" if len(sets) < 8 else f"{paper['avg']:.2f}"
            rows.append([f"paper: {ROW_LABEL.get(key, key)}", *cells, avg])
    return markdown_table(["encoder", *sets, "avg"], rows), averages


def validate(cfg: DictConfig, ctx: StageContext) -> dict:
    """The benchmark table: ROC-AUC mean (std) over seeds per set, this run beside GraphMVP's Table 1."""
    results = json.loads((ctx.input("finetune") / "results.json").read_text())
    table, averages = benchmark_table(results)
    n_seeds = max(len(r) for e in results["sets"].values() for r in e["runs"].values())
    note = (f"ROC-AUC (%) on the scaffold test split, mean (std) over {n_seeds} seed(s), test score at the "
            f"best-validation epoch. Pretraining data of this run: {results.get('pretrain_data') or 'n/a'}. "
            "The paper's rows: GraphMVP Table 1 (pretrained on 50k GEOM-drugs molecules, 100 epochs; fine-tuned "
            "100 epochs); its avg is over the sets shown when fewer than 8 are.")
    if any("ecfp_rf" in e["runs"] for e in results["sets"].values()):
        note += (" ECFP4 + random forest: Morgan fingerprints (radius 2, 2048 bits) and one random forest per task "
                 "on the same scaffold splits, random_state = the seed; no GNN.")
    (ctx.dir / "table.md").write_text(table + "\n")
    (ctx.dir / "report.md").write_text(note + "\n\n" + table + "\n")
    say(table)
    return {f"avg_roc_auc/{k}": v for k, v in averages.items()}


# --------------------------------------------------------------------------------------------- API
STAGES = [
    Stage("featurize", featurize,
          groups=("data.root", "pretrain.data", "pretrain.smiles_from", "pretrain.max_molecules",
                       "pretrain.mmff", "pretrain.root", "pretrain.n_conformers", "pretrain.seed"),
          description="3D pretraining pairs: ETKDG+MMFF conformers, QM9 DFT geometries or GEOM (pretrain.data)"),
    Stage("train", train, groups=("model", "trainer"), needs=("featurize",), file_keys=("model.init_from",),
          description="GraphMVP pretraining of the GIN with SchNet (EBM-NCE + VRR [+ AttrMask/ContextPred])"),
    Stage("finetune", finetune, groups=("data.root", "finetune", "model"),
          needs=("train",), file_keys=("ckpt",), replaced_by={"train": "ckpt"}, check=check_finetune,
          ignore_keys=("model.init_from",),   # read by train only (whose key it is part of)
          description="fine-tune on MoleculeNet scaffold splits (finetune.task=bbbp|all, seeds), predict test sets"),
    Stage("validate", validate, groups=("validate",), needs=("finetune",),
          description="benchmark table: ROC-AUC mean (std) over seeds beside GraphMVP's published figures"),
]
