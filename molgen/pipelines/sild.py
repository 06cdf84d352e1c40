"""SiLD pipeline: featurize (shared QM9 stage) -> train (autoencoder, then latent diffusion) -> sample -> validate.

    molgen run pipeline=sild                               # embedded QM9 subset on CPU
    molgen run pipeline=sild model=sild_raw                # the EDM-like ablation (diffusion on raw features)
    molgen run pipeline=sild data=qm9 model=sild_paper trainer=sild_paper condition=alpha
    model = molgen.load("runs/sild-qm9_subset/train"); mols = model.sample(100, steps=1000)

The train stage runs :func:`molgen.training.fit` twice in its folder: ``autoencoder/`` (encoder, decoder and bond
head) then ``diffusion/`` (the denoiser, autoencoder frozen); each phase resumes from its own ``last.ckpt``. The
stage's ``last.ckpt`` is the inference checkpoint (EMA weights of the whole model + molgen metadata).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from molgen.errors import ConfigError
from molgen.formatting import markdown_table
from molgen.runner import Stage, StageContext, cpu_threads, say
from molgen.pipelines.shared.molecules import check_validate, validate_generated
from molgen.pipelines.shared.qm9 import FEATURIZE, PROPERTY_NAMES, sample_targets
from molgen.pipelines.shared.regressor import PREDICTOR, REGRESSOR, check_sample, load_predictor, rerank_count, \
    reads_predictor_stage

PIPELINE = "sild"
PHASE_KEYS = ("max_epochs", "max_steps", "max_time", "lr", "ema_decay", "batch_size")


def _phase_config(trainer: dict, phase: str) -> dict:
    """The trainer group with the phase's own overrides (``trainer.autoencoder.*`` / ``trainer.diffusion.*``)."""
    base = {k: v for k, v in trainer.items() if k not in ("autoencoder", "diffusion")}
    return {**base, **(trainer.get(phase) or {})}


def _loaders(ds_train, ds_val, batch_size: int, num_workers: int):
    from torch_geometric.loader import DataLoader

    return (DataLoader(ds_train, batch_size=batch_size, shuffle=True, num_workers=num_workers),
            DataLoader(ds_val, batch_size=batch_size, shuffle=False, num_workers=num_workers))


def _with_property(ds, column: int | None):
    """Indices of molecules with a finite property value (all of them when unconditional)."""
    if column is None:
        return ds
    keep = torch.isfinite(ds.properties()[:, column]).nonzero().flatten().tolist()
    return torch.utils.data.Subset(ds, keep)


def model_arguments(cfg: DictConfig, train_ds) -> tuple[dict, int | None]:
    """Plain-dict SiLD constructor arguments from the config and the training data, and the property column."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("name", None)
    model_cfg.setdefault("_target_", "molgen.models.sild.model.SiLD")
    prop = cfg.condition.property
    column = None
    args = dict(model_cfg, vocab=train_ds.vocab.as_dict(), max_atoms=max(29, int(train_ds.num_atoms().max())))
    if prop:
        if prop not in train_ds.property_names:
            raise ConfigError(f"condition.property={prop}: not in the data set (choose from "
                              f"{', '.join(train_ds.property_names)})")
        column = train_ds.property_names.index(prop)
        values = train_ds.properties()[:, column]
        values = values[torch.isfinite(values)]
        args.update(property_name=prop, embedding=cfg.condition.embedding,
                    gaussian_expansion=bool(cfg.condition.gaussian_expansion),
                    property_mean=float(values.mean()), property_std=float(values.std()))
    return args, column


def train(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.checkpoint import export_weights
    from molgen.data.graph import GraphDataset
    from molgen.spec import build
    from molgen.training import fit_phase

    feat = ctx.input("featurize")
    train_ds, val_ds = GraphDataset.load(feat / "generator.pt"), GraphDataset.load(feat / "valid.pt")
    spec, column = model_arguments(cfg, train_ds)
    model = build(spec)                                  # the model group's _target_ with these arguments
    model_args = {k: v for k, v in spec.items() if k != "_target_"}
    model.property_column = column
    n_atoms = train_ds.num_atoms()
    values = train_ds.properties()[:, column] if column is not None else None
    model.sampler.fit(n_atoms, values)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer.setdefault("seed", int(cfg.seed))
    tr, va = _with_property(train_ds, column), _with_property(val_ds, column)
    metrics: dict = {"train_molecules": len(tr), "valid_molecules": len(va)}
    for phase in ("autoencoder", "diffusion"):
        pcfg = _phase_config(trainer, phase)
        model.set_phase(phase)
        if phase == "autoencoder" and not model.has_autoencoder:   # raw features with raw bonds: nothing to fit
            say("  phase autoencoder: nothing to train (raw features and bonds)")
            metrics[phase] = {"steps": 0, "seconds": 0.0}
            metrics["reconstruction"] = model.reconstruction_metrics(
                _loaders(tr, va, int(pcfg["batch_size"]), int(pcfg.get("num_workers", 0)))[1])
            continue
        model.hparams.lr = float(pcfg.get("lr", 1e-3))
        train_loader, val_loader = _loaders(tr, va, int(pcfg["batch_size"]), int(pcfg.get("num_workers", 0)))
        say(f"  phase {phase}: {sum(p.numel() for p in model.parameters() if p.requires_grad)} trainable parameters")
        m = fit_phase(model, phase, train_loader, val_loader, pcfg, ctx.dir, pipeline=PIPELINE,
                      model_args=model_args, extra_metadata={"phase": phase})
        metrics[phase] = {k: v for k, v in m.items() if k != "resumed_from"}
        if phase == "autoencoder":
            recon = model.reconstruction_metrics(val_loader)
            metrics["reconstruction"] = recon
            say("  reconstruction on valid: " + ", ".join(f"{k}={v:.4f}" for k, v in recon.items()))
    export_weights(ctx.dir / "diffusion" / "last.ckpt", ctx.dir / "last.ckpt")
    rec = metrics["reconstruction"]
    lines = ["Two phases trained with `molgen.training.fit` (GeoLDM recipe: autoencoder, then latent diffusion).", "",
             f"Encoder: `{(model_args.get('encoder') or {}).get('_target_', 'none (raw features)')}`, latent dim {model_args.get('latent_dim')}, "
             f"{metrics['train_molecules']} training molecules.", "",
             markdown_table(["phase", "epochs", "steps", "seconds", "final val loss"],
                            [[phase, metrics[phase].get("epochs"), metrics[phase].get("steps"),
                              metrics[phase].get("seconds"), f"{metrics[phase].get('val/loss', float('nan')):.4f}"]
                             for phase in ("autoencoder", "diffusion")])]
    lines += ["", "Autoencoder round trip on the validation split (posterior means):", "",
              markdown_table(["atom types", "charges", "position RMSD (A)", "molecules with all types right",
                              "bond orders of true bonds", "bond classes (all pairs)"],
                             [[f"{rec[k]:.4f}" for k in ("atom_type_accuracy", "charge_accuracy", "position_rmsd",
                                                         "molecule_types_exact", "bond_accuracy",
                                                         "edge_bond_accuracy")]]),
              ""]
    (ctx.dir / "report.md").write_text("\n".join(lines))
    return metrics


def _checkpoint(cfg: DictConfig, ctx: StageContext) -> Path:
    return Path(str(cfg.ckpt)).expanduser() if cfg.ckpt else ctx.input("train") / "last.ckpt"


def sample(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.checkpoint import load_model
    from molgen.data.graph import GraphDataset
    from molgen.data.io import sdf_writable, write_sdf

    model = load_model(_checkpoint(cfg, ctx), pipeline=PIPELINE)
    s = cfg.sample
    want = cfg.condition.property
    if want and want != model.property_name:
        raise ConfigError(f"condition.property={want}, but the checkpoint is conditioned on "
                          f"'{model.property_name}'")
    prop, value = model.property_name, cfg.condition.value
    gen = torch.Generator().manual_seed(int(cfg.seed) + 7919)
    # PropMolFlow's protocol: histograms, a fixed target (N from p(N | target)) or the out-of-distribution task
    sizes, values, mode = sample_targets(cfg, prop, model.sampler, gen)
    rerank, guidance = rerank_count(cfg), float(s.get("guidance", 1.0))
    say(f"  sampling {len(sizes)} molecules, {int(s.steps)} {s.sampler} steps, {mode}"
        + (f", classifier-free guidance w = {guidance:g}" if guidance != 1.0 else "")
        + (f", best of {rerank} candidates by the predictor" if rerank > 1 else ""))
    t0 = time.time()
    mols = model.sample_molecules(sizes, values, steps=int(s.steps), sampler=str(s.sampler), seed=int(cfg.seed),
                                  batch_size=int(s.batch_size), grid_power=float(s.get("grid_power", 1.0)),
                                  rerank=rerank, predictor=load_predictor(cfg, ctx), guidance=guidance)
    seconds = time.time() - t0
    for k, m in enumerate(mols):
        m.name = f"sild_{k}"
    write_sdf([m for m in mols if sdf_writable(m)], ctx.dir / "samples.sdf")
    # every generated molecule, for the shared validate stage (nothing silently dropped)
    GraphDataset.from_molecules(mols, model.vocab, (prop,) if prop else ()).save(ctx.dir / "samples.pt")
    metrics = {"molecules": len(mols), "steps": int(s.steps), "sampler": str(s.sampler),
               "grid_power": float(s.get("grid_power", 1.0)),
               "seconds": round(seconds, 2), "seconds_per_molecule": round(seconds / max(len(mols), 1), 4),
               "property": prop, "value": value, "mode": mode, **({"rerank": rerank} if rerank > 1 else {}),
               **({"guidance": guidance} if guidance != 1.0 else {})}
    (ctx.dir / "report.md").write_text(
        f"{len(mols)} molecules, {mode} ({s.sampler}, {s.steps} steps"
        + (f", guidance w = {guidance:g}" if guidance != 1.0 else "")
        + (f", best of {rerank} candidates by the predictor" if rerank > 1 else "") + f") in {seconds:.1f} s "
        f"({seconds / max(len(mols), 1):.3f} s per molecule, {cpu_threads()} CPU thread(s)): "
        f"[samples.sdf](./samples.sdf)\n")
    return metrics


STAGES = [
    FEATURIZE,
    Stage("train", train, groups=("data", "model", "trainer", "condition.property", "condition.embedding",
                                       "condition.gaussian_expansion", "seed"),
          needs=("featurize",),
          description="autoencoder, then latent diffusion (resumable)"),
    PREDICTOR,  # the generator's own predictor (Da) for sample.rerank, as PropMolFlow's
    Stage("sample", sample, groups=("sample", "seed", "condition"), needs=("train", "predictor"),
          file_keys=("ckpt", "sample.predictor"), replaced_by={"train": "ckpt"},
          needs_when={"predictor": reads_predictor_stage}, check=check_sample,
          description="reverse diffusion in latent space, decode, bonds -> samples.sdf"),
    REGRESSOR,  # PropMolFlow's GVP property regressor: both generators judged by the same evaluator
    Stage("validate", validate_generated, groups=("validate",), needs=("sample", "featurize", "regressor"),
          check=check_validate,
          description="the shared molecule validation suite on sample/samples.pt (molgen.pipelines.shared.molecules)"),
]

__all__ = ["STAGES", "PROPERTY_NAMES"]
