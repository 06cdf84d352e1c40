"""The regressor stage shared by the QM9 generators (PropMolFlow, SiLD): one evaluator judges every generator.

A GVP property regressor is trained on the half of QM9's training set the generator never sees (Db) and
evaluated on the generator's half (Da) next to EDM's baselines ("#atoms only", shuffled labels), so a
generated molecule's property MAE can be read against them (``regressor/regressor.ckpt``, ``report.md``).
"""
from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from molgen.conditioning import report_unit
from molgen.config import plain
from molgen.errors import ConfigError
from molgen.formatting import markdown_table
from molgen.pipelines.shared.qm9 import check_targets, graph_loaders, load_split
from molgen.runner import Stage, StageContext, say


def _fit_regressor(node: DictConfig, prop: str, train_set, val_set, seed: int, ctx: StageContext, kind: str):
    """Train the GVP regressor of config ``node`` (a ``regressor``-group node) on ``train_set`` in ``ctx.dir``
    (resumable) and return (the fitted model, its training metrics)."""
    from molgen.checkpoint import export_weights, load_model
    from molgen.models.propmolflow.model import WithProperty
    from molgen.spec import build
    from molgen.training import fit

    col = train_set.property_names.index(prop)
    y = train_set.properties()[:, col].double()
    ok = torch.isfinite(y)
    reg_args = {k: v for k, v in dict(plain(node)).items() if k not in ("name", "trainer")}
    target = reg_args.pop("_target_", "molgen.models.regressor.GVPRegressor")
    args = {**reg_args, "vocab": train_set.vocab.as_dict(), "property_name": prop,
            "property_mean": float(y[ok].mean()), "property_std": float(y[ok].std())}
    torch.manual_seed(seed)
    model = build({"_target_": target, **args})            # the group's _target_
    trainer_cfg = {**plain(node.trainer), "seed": seed}
    train_loader, val_loader = graph_loaders(WithProperty(train_set, prop), WithProperty(val_set, prop) if val_set else None,
                                        int(trainer_cfg.get("batch_size", 128)), int(trainer_cfg.get("num_workers", 0)))
    metrics = fit(model, train_loader, val_loader, trainer_cfg, ctx.dir / "training", pipeline="propmolflow",
                  model_args=model.model_args, extra_metadata={"kind": kind}, resume=ctx.resuming)
    best, last = ctx.dir / "training" / "best.ckpt", ctx.dir / "training" / "last.ckpt"
    export_weights(best if best.exists() else last, ctx.dir / f"{kind}.ckpt")
    return load_model(ctx.dir / f"{kind}.ckpt"), metrics


def _baselines(fitted, prop: str, fit_set, eval_set, seed: int) -> dict:
    """The fitted regressor on ``eval_set`` (molecules it never saw) beside EDM's baselines fitted on ``fit_set``."""
    from molgen.models.propmolflow.model import WithProperty
    from molgen.models.regressor import per_atom_count_baseline

    y_fit = fit_set.properties()[:, fit_set.property_names.index(prop)].double()
    ok = torch.isfinite(y_fit)
    view = WithProperty(eval_set, prop)
    y = eval_set.properties()[view.index, eval_set.property_names.index(prop)].double().numpy()
    pred = fitted.predict_dataset(view)
    rng = np.random.default_rng(seed)
    n_eval, n_fit = eval_set.num_atoms()[view.index].numpy(), fit_set.num_atoms()[ok].numpy()
    scale, unit = report_unit(prop)  # eV -> meV as the papers report
    return {"regressor_mae": float(np.abs(pred - y).mean() * scale),
            "naive_shuffled_mae": float(np.abs(pred - rng.permutation(y)).mean() * scale),
            "atoms_only_mae": float(np.abs(per_atom_count_baseline(n_fit, y_fit[ok].numpy(), n_eval) - y).mean() * scale),
            "mae_unit": unit, "n_evaluated": len(view)}


def _train_and_judge(cfg: DictConfig, ctx: StageContext, kind: str, prop: str, fit_file: str, eval_file: str,
                     halves: tuple[tuple[str, str], tuple[str, str]], reading: str) -> dict:
    """Train the ``kind`` group's regressor on ``fit_file``, judge it on ``eval_file`` (molecules it never saw)
    beside EDM's baselines, and write the stage's report.md. ``halves``: (name, tag) of the fit file's half and of
    the evaluation file's, e.g. ``(("regressor", "Db"), ("generator", "Da"))``."""
    fit_set, eval_set = load_split(ctx, fit_file), load_split(ctx, eval_file)
    val_set = load_split(ctx, "valid.pt", required=False)
    (fit_half, fit_tag), (eval_half, _) = halves
    fitted, metrics = _fit_regressor(cfg[kind], prop, fit_set, val_set, int(cfg.seed), ctx, kind)
    base = _baselines(fitted, prop, fit_set, eval_set, int(cfg.seed))
    out = {"property": prop, **{k: v for k, v in base.items() if k != "n_evaluated"},
           "evaluated_on": f"{eval_half} half ({base['n_evaluated']} molecules)",
           f"{kind}_epochs": metrics.get("epochs"), f"{kind}_seconds": metrics.get("seconds")}
    (ctx.dir / "report.md").write_text(
        f"GVP {kind} for **{prop}** trained on the {fit_half} half ({len(fit_set)} molecules), evaluated on the "
        f"{eval_half} half ({base['n_evaluated']}), MAE in {out['mae_unit']} {reading}\n\n"
        + markdown_table(["predictor", "MAE"], [
            [f"this {kind} on real molecules (floor)", f"{out['regressor_mae']:.4g}"],
            [f"#atoms only (per-N median of {fit_tag})", f"{out['atoms_only_mae']:.4g}"],
            ["naive (shuffled labels)", f"{out['naive_shuffled_mae']:.4g}"]]) + "\n")
    return out


def regressor(cfg: DictConfig, ctx: StageContext) -> dict:
    prop = cfg.condition.get("property")
    if not prop:
        return {"skipped": "unconditional model (condition.property=null): no property to evaluate"}
    say(f"  GVP regressor for {prop} on the half the generator does not see")
    # EDM's reading frame, on the generator half (the molecules the regressor never saw)
    return _train_and_judge(cfg, ctx, "regressor", prop, "regressor.pt", "generator.pt",
                            (("regressor", "Db"), ("generator", "Da")),
                            "(EDM's reading frame: a generator beats *naive* if it uses the property at all, "
                            "*#atoms* if it uses it beyond the molecule size).")


def predictor(cfg: DictConfig, ctx: StageContext) -> dict:
    """The generator's own property predictor (``predictor=gvp_small``): the same GVP regressor trained on the
    generator's half Da, used by ``sample.rerank`` to pick, among candidates drawn for one target, the one
    predicted closest to it. It never sees Db, so the evaluator (the regressor stage, trained on Db) stays
    independent of it; its floor is measured on Db."""
    prop = cfg.condition.get("property")
    if cfg.predictor.get("name", "none") == "none":
        return {"skipped": "predictor=none (sample.rerank uses sample.predictor or no predictor)"}
    if not prop:
        return {"skipped": "unconditional model (condition.property=null): no property to predict"}
    say(f"  GVP predictor for {prop} on the generator's half (for sample.rerank)")
    return _train_and_judge(cfg, ctx, "predictor", prop, "generator.pt", "regressor.pt",
                            (("generator", "Da"), ("regressor", "Db")),
                            "(`sample.rerank=K` keeps, of K candidates per target, the one this predictor puts "
                            "closest to the target).")


def rerank_count(cfg: DictConfig) -> int:
    """``sample.rerank``: candidates per molecule for best-of-K sampling (1: none)."""
    return int(cfg.sample.get("rerank", 1) or 1)


def reads_predictor_stage(cfg: DictConfig) -> bool:
    """The sample stage reads this run's predictor stage: best-of-K sampling with no predictor file given (the
    ``needs_when`` predicate of a generator's sample stage, so plain sampling keeps its stage key)."""
    return rerank_count(cfg) > 1 and not cfg.sample.get("predictor")


def check_rerank(cfg: DictConfig) -> None:
    """One line, before anything runs, when ``sample.rerank > 1`` has no property or no predictor to rank by."""
    k = rerank_count(cfg)
    if k <= 1:
        return
    if not cfg.condition.get("property"):
        raise ConfigError(f"sample.rerank={k} selects candidates by their property: it needs a "
                          "conditional model (condition=gap, ...)")
    if reads_predictor_stage(cfg) and cfg.get("predictor", {}).get("name", "none") == "none":
        raise ConfigError(f"sample.rerank={k} needs a property predictor: predictor=gvp_small (trained "
                          "in this run on the generator's half) or sample.predictor=PATH|NAME "
                          "(e.g. propmolflow-qm9-gap-predictor)")


def check_sample(cfg: DictConfig) -> None:
    """The sample stage's check for a QM9 generator: a target (``sample.ood``, ``condition.value``) needs a
    conditional model, best-of-K (``sample.rerank``) a property and a predictor."""
    check_targets(cfg)
    check_rerank(cfg)


def load_predictor(cfg: DictConfig, ctx: StageContext):
    """The predictor best-of-K sampling ranks by: ``sample.predictor`` (path or shipped name) or this run's
    predictor stage; None without ``sample.rerank > 1``."""
    if rerank_count(cfg) <= 1:
        return None
    from molgen.checkpoint import load_model
    return load_model(str(cfg.sample.predictor) if cfg.sample.get("predictor")
                      else str(ctx.input("predictor") / "predictor.ckpt"))


#: The evaluator stage, shared with the other QM9 generators (SiLD) so every generator is judged by one regressor.
REGRESSOR = Stage("regressor", regressor, groups=("regressor", "condition.property", "seed"), needs=("featurize",),
                  description="train the GVP property regressor on the other half; EDM baselines (skipped if unconditional)")

#: The generator's property predictor for ``sample.rerank`` (trained on Da, never on the evaluator's Db).
PREDICTOR = Stage("predictor", predictor, groups=("predictor", "condition.property", "seed"), needs=("featurize",),
                  description="train a property predictor on the generator's half for sample.rerank (predictor=gvp_small; skipped by default)")
