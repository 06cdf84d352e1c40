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
from omegaconf import DictConfig, OmegaConf

from molgen.errors import CheckpointError, ConfigError
from molgen.runner import Stage, StageContext, cpu_threads, say
from molgen.stages.molecules import check_validate, validate_generated
from molgen.stages.qm9 import FEATURIZE

PIPELINE = "propmolflow"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _loaders(train_set, val_set, batch_size: int, num_workers: int):
    from torch_geometric.loader import DataLoader

    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=False)
    val = DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=num_workers) if val_set else None
    return train, val


def _load_split(ctx: StageContext, name: str, required: bool = True):
    from molgen.data.graph import GraphDataset

    path = ctx.input("featurize") / name
    if not path.exists() and not required:
        return None
    return GraphDataset.load(path)


# ============================================================================================ train
def build_model_args(cfg: DictConfig, generator_set) -> dict[str, Any]:
    """PropMolFlow constructor arguments from the config and the training data (plain values only)."""
    model_cfg = dict(_plain(cfg.model))
    model_cfg.pop("name", None)
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
    return args


def fit_sampler(model, generator_set) -> None:
    """Fill the model's (N, value) sampler from the generator's training half."""
    values = None
    if model.property_name:
        values = generator_set.properties()[:, generator_set.property_names.index(model.property_name)]
    model.sampler.fit(generator_set.num_atoms(), values)


def train(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.models.propmolflow import PropMolFlow, WithProperty
    from molgen.training import export_weights, fit

    torch.set_num_threads(cpu_threads())
    gen_set, val_set = _load_split(ctx, "generator.pt"), _load_split(ctx, "valid.pt", required=False)
    args = build_model_args(cfg, gen_set)
    torch.manual_seed(int(cfg.seed))
    model = PropMolFlow(**args)
    fit_sampler(model, gen_set)
    prop = args["property_name"]
    trainer_cfg = {**_plain(cfg.trainer), "seed": int(cfg.seed)}
    train_loader, val_loader = _loaders(WithProperty(gen_set, prop), WithProperty(val_set, prop) if val_set else None,
                                        int(trainer_cfg.get("batch_size", 128)), int(trainer_cfg.get("num_workers", 0)))
    say(f"  PropMolFlow ({sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{'conditioned on ' + prop if prop else 'unconditional'}) on {len(gen_set)} molecules")
    metrics = fit(model, train_loader, val_loader, trainer_cfg, ctx.dir, pipeline=PIPELINE,
                  model_args=model.model_args, extra_metadata={"kind": "generator"}, resume=ctx.resuming)
    best, last = ctx.dir / "best.ckpt", ctx.dir / "last.ckpt"
    export_weights(best if best.exists() else last, ctx.dir / "model.ckpt")
    metrics["exported"] = "best.ckpt" if best.exists() else "last.ckpt"
    return metrics


# ============================================================================================ regressor
def regressor(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.models.propmolflow import WithProperty
    from molgen.models.regressor import GVPRegressor, per_atom_count_baseline
    from molgen.training import export_weights, fit

    prop = cfg.condition.get("property")
    if not prop:
        return {"skipped": "unconditional model (condition.property=null): no property to evaluate"}
    torch.set_num_threads(cpu_threads())
    reg_set, gen_set = _load_split(ctx, "regressor.pt"), _load_split(ctx, "generator.pt")
    val_set = _load_split(ctx, "valid.pt", required=False)
    col = reg_set.property_names.index(prop)
    y_reg = reg_set.properties()[:, col].double()
    ok = torch.isfinite(y_reg)
    reg_args = {k: v for k, v in dict(_plain(cfg.regressor)).items() if k not in ("name", "trainer")}
    args = {**reg_args, "vocab": reg_set.vocab.as_dict(), "property_name": prop,
            "property_mean": float(y_reg[ok].mean()), "property_std": float(y_reg[ok].std())}
    torch.manual_seed(int(cfg.seed))
    model = GVPRegressor(**args)
    trainer_cfg = {**_plain(cfg.regressor.trainer), "seed": int(cfg.seed)}
    train_loader, val_loader = _loaders(WithProperty(reg_set, prop), WithProperty(val_set, prop) if val_set else None,
                                        int(trainer_cfg.get("batch_size", 128)), int(trainer_cfg.get("num_workers", 0)))
    say(f"  GVP regressor for {prop} on {len(reg_set)} molecules (the half the generator does not see)")
    metrics = fit(model, train_loader, val_loader, trainer_cfg, ctx.dir / "training", pipeline=PIPELINE,
                  model_args=model.model_args, extra_metadata={"kind": "regressor"}, resume=ctx.resuming)
    best, last = ctx.dir / "training" / "best.ckpt", ctx.dir / "training" / "last.ckpt"
    export_weights(best if best.exists() else last, ctx.dir / "regressor.ckpt")
    fitted = load_model(torch.load(ctx.dir / "regressor.ckpt", map_location="cpu", weights_only=True))
    # EDM's reading frame, on the generator half (the molecules the regressor never saw)
    gen_view = WithProperty(gen_set, prop)
    y_gen = gen_set.properties()[gen_view.index, gen_set.property_names.index(prop)].double().numpy()
    pred = fitted.predict_dataset(gen_view)
    rng = np.random.default_rng(int(cfg.seed))
    n_gen, n_reg = gen_set.num_atoms()[gen_view.index].numpy(), reg_set.num_atoms()[ok].numpy()
    scale = 1000.0 if _unit(prop) == "meV" else 1.0  # eV -> meV as the papers report
    out = {
        "property": prop,
        "regressor_mae": float(np.abs(pred - y_gen).mean() * scale),
        "naive_shuffled_mae": float(np.abs(pred - rng.permutation(y_gen)).mean() * scale),
        "atoms_only_mae": float(np.abs(per_atom_count_baseline(n_reg, y_reg[ok].numpy(), n_gen) - y_gen).mean() * scale),
        "mae_unit": _unit(prop),
        "evaluated_on": f"generator half ({len(gen_view)} molecules)",
        "regressor_epochs": metrics.get("epochs"), "regressor_seconds": metrics.get("seconds"),
    }
    (ctx.dir / "report.md").write_text(
        f"GVP regressor for **{prop}** trained on the regressor half ({len(reg_set)} molecules), evaluated on the "
        f"generator half ({len(gen_view)}), MAE in {out['mae_unit']} (EDM's reading frame: a generator beats "
        "*naive* if it uses the property at all, *#atoms* if it uses it beyond the molecule size).\n\n"
        "| predictor | MAE |\n|---|---|\n"
        f"| regressor on real molecules (floor) | {out['regressor_mae']:.4g} |\n"
        f"| #atoms only (per-N median of Db) | {out['atoms_only_mae']:.4g} |\n"
        f"| naive (shuffled labels) | {out['naive_shuffled_mae']:.4g} |\n")
    return out


def _unit(prop: str) -> str:
    from molgen.conditioning import PROPERTIES

    return "meV" if PROPERTIES[prop].unit == "eV" else PROPERTIES[prop].unit


# ============================================================================================ sample
def _sample_ckpt(cfg: DictConfig, ctx: StageContext) -> Path:
    if cfg.get("ckpt"):
        return Path(str(cfg.ckpt)).expanduser()
    return ctx.input("train") / "model.ckpt"


def sample(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.api import read_checkpoint
    from molgen.data.graph import GraphDataset
    from molgen.data.io import sdf_writable, write_sdf, write_xyz

    torch.set_num_threads(cpu_threads())
    ckpt = read_checkpoint(_sample_ckpt(cfg, ctx))
    if ckpt["molgen"]["pipeline"] != PIPELINE or ckpt["molgen"].get("kind", "generator") != "generator":
        raise CheckpointError(f"{_sample_ckpt(cfg, ctx)}: not a PropMolFlow generator checkpoint")
    model = load_model(ckpt)
    s = cfg.sample
    n, seed = int(s.n), int(cfg.seed)
    want = cfg.condition.get("property")
    if want and want != model.property_name:
        raise ConfigError(f"condition.property={want} but the checkpoint is "
                          f"{'conditioned on ' + model.property_name if model.property_name else 'unconditional'}")
    gen = torch.Generator().manual_seed(seed + 7919)
    values = None
    mode = "unconditional"
    if model.property_name:
        if s.get("ood"):
            sizes, values = model.sampler.sample_ood(n, gen)
            mode = f"out of distribution (target = 99th percentile = {values[0]:.4g})"
        elif cfg.condition.get("value") is not None:
            sizes, values = model.sampler.sample_n_atoms(n, gen), [float(cfg.condition.value)] * n
            mode = f"fixed target {float(cfg.condition.value):.4g}"
        else:
            sizes, values = model.sampler.sample(n, gen)
            mode = "in distribution ((N, value) from the training histograms)"
    else:
        if s.get("ood") or cfg.condition.get("value") is not None:
            raise ConfigError("sample.ood / condition.value need a conditional checkpoint (this one is unconditional)")
        sizes = model.sampler.sample_n_atoms(n, gen)
    say(f"  sampling {n} molecules, {int(s.steps)} {s.solver} steps, {mode}")
    t0 = time.time()
    mols = model.sample_molecules(sizes, values, steps=int(s.steps), solver=str(s.solver), seed=seed,
                                  batch_size=int(s.batch_size))
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
            "steps": int(s.steps), "solver": str(s.solver), "mode": mode, "property": model.property_name or "none",
            "mean_atoms": float(np.mean(sizes))}


# ============================================================================================ loading
def load_model(ckpt: dict):
    """Rebuild the trained model (EMA weights) from a weights-only checkpoint dict: the PropMolFlow generator, or
    the GVP regressor when ``ckpt["molgen"]["kind"] == "regressor"``."""
    from molgen.models.propmolflow import PropMolFlow
    from molgen.models.regressor import GVPRegressor

    meta = ckpt.get("molgen", {})
    cls = GVPRegressor if meta.get("kind") == "regressor" else PropMolFlow
    try:
        model = cls(**meta["model_args"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f"checkpoint does not match {cls.__name__}: {first}") from None
    return model.eval()


#: The evaluator stage, shared with the other QM9 generators (SiLD) so every generator is judged by one regressor.
REGRESSOR = Stage("regressor", regressor, config_keys=("regressor", "condition.property", "seed"), needs=("featurize",),
                  description="train the GVP property regressor on the other half; EDM baselines (skipped if unconditional)")

STAGES = [
    FEATURIZE,
    Stage("train", train, config_keys=("model", "trainer", "condition.property", "condition.embedding",
                                       "condition.gaussian_expansion", "seed"), needs=("featurize",),
          neutral_defaults={"model.backbone": "gvp", "model.gaunt_lmax": 2, "model.gaunt_hidden": 32,
                            "model.gaunt_layers": 3, "model.gaunt_correlation": 2},
          description="train the PropMolFlow generator on the generator half (last/best/model.ckpt)"),
    REGRESSOR,
    Stage("sample", sample, config_keys=("sample", "condition", "seed"), needs=("train",), file_keys=("ckpt",),
          replaced_by={"train": "ckpt"},
          description="draw sample.n molecules (samples.sdf with the target as SD tag, samples.xyz)"),
    Stage("validate", validate_generated, config_keys=("validate",), needs=("sample", "featurize", "regressor"),
          check=check_validate,
          description="the validation suite + property MAE with the regressor (report.md/html, molecules.csv)"),
]
