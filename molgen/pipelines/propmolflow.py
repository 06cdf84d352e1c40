"""PropMolFlow pipeline: featurize (QM9) -> train (generator on Da) -> regressor (evaluator on Db) -> sample
-> validate.

Stage artifacts (``runs/<run>/<stage>/``):

* featurize: generator.pt, regressor.pt, valid.pt, test.pt (GraphDataset), train_smiles.txt
* train: last.ckpt, best.ckpt (Lightning, EMA weights in ``state_dict``), model.ckpt (slim), logs/
* regressor: regressor.ckpt, baselines in the metrics (skipped for an unconditional model)
* sample: samples.sdf (target property as SD tag), samples.xyz
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from molgen.errors import CheckpointError, ConfigError
from molgen.runner import Stage, StageContext, say
from molgen.config import plain
from molgen.pipelines.shared.molecules import check_validate, validate_generated
from molgen.pipelines.shared.qm9 import FEATURIZE, graph_loaders, load_split, sample_targets
from molgen.pipelines.shared.regressor import PREDICTOR, REGRESSOR, check_sample, load_predictor, rerank_count, \
    reads_predictor_stage

PIPELINE = "propmolflow"


# ============================================================================================ train
def build_model_args(cfg: DictConfig, generator_set) -> dict[str, Any]:
    """The model spec (``_target_`` and constructor arguments, plain values only) from the ``model`` group and
    what the training data adds (vocabulary, property statistics, largest molecule)."""
    model_cfg = dict(plain(cfg.model))
    model_cfg.pop("name", None)
    model_cfg.pop("init_from", None)
    model_cfg.setdefault("_target_", "molgen.models.propmolflow.model.PropMolFlow")
    prop = cfg.condition.get("property")
    args = {**model_cfg, "vocab": generator_set.vocab.as_dict(), "property_name": prop,
            "embedding": str(cfg.condition.get("embedding", "concatenate")),
            "gaussian_expansion": bool(cfg.condition.get("gaussian_expansion", False))}
    if cfg.trainer.get("lr") is not None:
        args["lr"] = float(cfg.trainer.lr)
    n_atoms = generator_set.num_atoms()
    args["max_atoms"] = max(int(args.get("max_atoms", 29)), int(n_atoms.max()))
    if prop:
        if prop not in generator_set.property_names:
            raise ConfigError(f"condition.property={prop}: not in the featurized data "
                              f"(has {', '.join(generator_set.property_names)})")
        v = generator_set.properties()[:, generator_set.property_names.index(prop)]
        v = v[torch.isfinite(v)].double()
        args["property_mean"], args["property_std"] = float(v.mean()), float(v.std())
    init = cfg.model.get("init_from")
    if init:  # fine-tuning: the property embedding keeps the scale it was trained with
        from molgen.checkpoint import read

        source = read(str(init))["molgen"]["model_args"]
        if source.get("property_name") != prop:
            raise ConfigError(f"model.init_from={init}: conditioned on {source.get('property_name') or 'nothing'}, "
                              f"this run on {prop or 'nothing'} (set condition= to match, or model.init_from=null)")
        if prop:
            args["property_mean"], args["property_std"] = source["property_mean"], source["property_std"]
    return args


def fit_sampler(model, generator_set) -> None:
    """Fill the model's (N, value) sampler from the generator's training half."""
    values = None
    if model.property_name:
        values = generator_set.properties()[:, generator_set.property_names.index(model.property_name)]
    model.sampler.fit(generator_set.num_atoms(), values)


def train(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.checkpoint import export_weights, warm_start
    from molgen.models.propmolflow.model import WithProperty
    from molgen.spec import build
    from molgen.training import fit

    gen_set, val_set = load_split(ctx, "generator.pt"), load_split(ctx, "valid.pt", required=False)
    spec = build_model_args(cfg, gen_set)
    torch.manual_seed(int(cfg.seed))
    model = build(spec)                                   # the model group's _target_ with these arguments
    args = model.model_args
    fit_sampler(model, gen_set)
    warm = None
    if cfg.model.get("init_from") and not ctx.resuming:
        warm = warm_start(model, str(cfg.model.init_from), pipeline=PIPELINE)
        say(f"  initialised from {warm['source']} ({warm['loaded']} tensors"
            + (f"; {len(warm['new'])} new: {', '.join(sorted({k.rsplit('.', 1)[0] for k in warm['new']}))})"
               if warm["new"] else ")"))
    prop = args["property_name"]
    trainer_cfg = {**plain(cfg.trainer), "seed": int(cfg.seed)}
    train_loader, val_loader = graph_loaders(WithProperty(gen_set, prop), WithProperty(val_set, prop) if val_set else None,
                                        int(trainer_cfg.get("batch_size", 128)), int(trainer_cfg.get("num_workers", 0)))
    say(f"  PropMolFlow ({sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{'conditioned on ' + prop if prop else 'unconditional'}) on {len(gen_set)} molecules")
    metrics = fit(model, train_loader, val_loader, trainer_cfg, ctx.dir, pipeline=PIPELINE,
                  model_args=model.model_args, extra_metadata={"kind": "generator"}, resume=ctx.resuming)
    best, last = ctx.dir / "best.ckpt", ctx.dir / "last.ckpt"
    export_weights(best if best.exists() else last, ctx.dir / "model.ckpt")
    metrics["exported"] = "best.ckpt" if best.exists() else "last.ckpt"
    if cfg.model.get("init_from"):
        metrics["initialised_from"] = str(cfg.model.init_from)
        metrics["note"] = (f"fine-tuned from {cfg.model.init_from}, not trained from scratch; from scratch: "
                           "model=propmolflow_small trainer=propmolflow_cpu")
    return metrics


# ============================================================================================ sample

def _sample_ckpt(cfg: DictConfig, ctx: StageContext) -> Path:
    if cfg.get("ckpt"):
        return Path(str(cfg.ckpt)).expanduser()
    return ctx.input("train") / "model.ckpt"


def sample(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.checkpoint import load_model
    from molgen.data.graph import GraphDataset
    from molgen.data.io import sdf_writable, write_sdf, write_xyz

    try:
        model = load_model(_sample_ckpt(cfg, ctx), pipeline=PIPELINE, kind="generator")
    except CheckpointError as e:
        raise CheckpointError(f"{_sample_ckpt(cfg, ctx)}: not a PropMolFlow generator checkpoint ({e})") from None
    s = cfg.sample
    n, seed = int(s.n), int(cfg.seed)
    want = cfg.condition.get("property")
    if want and want != model.property_name:
        raise ConfigError(f"condition.property={want} but the checkpoint is "
                          f"{'conditioned on ' + model.property_name if model.property_name else 'unconditional'}")
    gen = torch.Generator().manual_seed(seed + 7919)
    sizes, values, mode = sample_targets(cfg, model.property_name, model.sampler, gen)
    guidance, rerank = float(s.get("guidance", 1.0)), rerank_count(cfg)
    predictor = load_predictor(cfg, ctx)
    say(f"  sampling {n} molecules, {int(s.steps)} {s.solver} steps, {mode}"
        + (f", classifier-free guidance w = {guidance:g}" if guidance != 1.0 else "")
        + (f", best of {rerank} candidates by the predictor" if rerank > 1 else "")
        + (", tokens decoded under the valence rule" if s.get("valence_decode") else ""))
    t0 = time.time()
    few_step = {"grid_power": float(s.get("grid_power", 1.0)),   # None: the model's CTMC stochasticity
                "stochasticity": None if s.get("stochasticity") is None else float(s.stochasticity),
                "valence_decode": bool(s.get("valence_decode", False)),
                "net_charge": None if s.get("net_charge", 0) is None else int(s.get("net_charge", 0))}
    mols = model.sample_molecules(sizes, values, steps=int(s.steps), solver=str(s.solver), seed=seed,
                                  batch_size=int(s.batch_size), guidance=guidance, rerank=rerank,
                                  predictor=predictor, **few_step)
    seconds = time.time() - t0
    for k, m in enumerate(mols):
        m.name = f"propmolflow_{k}"
    writable = [m for m in mols if sdf_writable(m)]
    if len(writable) < len(mols):
        say(f"  {len(mols) - len(writable)} molecule(s) RDKit cannot write to SDF (e.g. H with charge +3) "
            "are left out of samples.sdf (kept in samples.xyz) and count as invalid")
    write_sdf(writable, ctx.dir / "samples.sdf")
    # every generated molecule, also those RDKit cannot write, for the validate stage (no silent drop)
    GraphDataset.from_molecules(mols, model.vocab, (model.property_name,) if model.property_name else ()).save(
        ctx.dir / "samples.pt")
    write_xyz(mols, ctx.dir / "samples.xyz")
    return {"molecules": len(mols), "sdf_unwritable": len(mols) - len(writable), "seconds": round(seconds, 2), "molecules_per_second": round(len(mols) / seconds, 3),
            "steps": int(s.steps), "solver": str(s.solver), "mode": mode, "guidance": guidance,
            **({"rerank": rerank} if rerank > 1 else {}),
            **({"valence_decode_counts": model.last_decode} if model.last_decode else {}),
            **few_step, "property": model.property_name or "none",
            "mean_atoms": float(np.mean(sizes))}


# ============================================================================================ loading
STAGES = [
    FEATURIZE,
    Stage("train", train, groups=("model", "trainer", "condition.property", "condition.embedding",
                                       "condition.gaussian_expansion", "seed"), needs=("featurize",), file_keys=("model.init_from",),
          description="train the PropMolFlow generator on the generator half (last/best/model.ckpt)"),
    REGRESSOR,
    PREDICTOR,
    Stage("sample", sample, groups=("sample", "condition", "seed"), needs=("train", "predictor"),
          file_keys=("ckpt", "sample.predictor"), replaced_by={"train": "ckpt"},
          needs_when={"predictor": reads_predictor_stage}, check=check_sample,
          description="draw sample.n molecules (samples.sdf with the target as SD tag, samples.xyz)"),
    Stage("validate", validate_generated, groups=("validate",), needs=("sample", "featurize", "regressor"),
          check=check_validate,
          description="the validation suite + property MAE with the regressor (report.md/html, molecules.csv)"),
]
