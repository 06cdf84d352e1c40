"""The validate stage shared by the 3D molecule generators (PropMolFlow, SiLD).

It judges the sample stage's molecules with the one validation suite (:func:`molgen.validation.validate`:
stability under three definitions, validity, uniqueness, novelty against the training SMILES, PoseBusters,
optional xTB/DFT) and, for a conditional generator, measures the property MAE with the separately trained
regressor (PropMolFlow/EDM protocol: every generated molecule the regressor can encode counts, no validity
filter), next to the regressor's own floor and EDM's "#atoms only" and "naive" baselines from the regressor stage.

Reads ``sample/samples.pt`` (every generated molecule, including those RDKit cannot write to SDF),
``featurize/train_smiles.txt`` and ``featurize/generator.pt`` (the training distribution of the property), and
``regressor/regressor.ckpt`` when present.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from molgen.conditioning import report_unit
from molgen.data.graph import GraphDataset
from molgen.formatting import fmt, markdown_table
from molgen.runner import StageContext, read_state, say



def _reference(cfg: DictConfig, ctx: StageContext):
    ref = cfg.validate.get("reference", "train")
    if ref == "train":
        path = ctx.input("featurize") / "train_smiles.txt"
        return {s for s in path.read_text().split() if s}
    return ref


def property_section(mols, prop: str, ctx: StageContext) -> tuple[dict, list[str]]:
    """Regressor predictions for the generated molecules, their MAE to the targets, baselines and a histogram."""
    from molgen.checkpoint import load_model

    ckpt_path = ctx.input("regressor") / "regressor.ckpt"
    if not ckpt_path.exists():
        return {"property_mae": None, "property_note": "no regressor checkpoint"}, []
    regressor = load_model(ckpt_path, kind="regressor")
    pred = regressor.predict(mols)
    target = np.array([m.properties.get(prop, np.nan) for m in mols], dtype=float)
    for m, p in zip(mols, pred):
        if np.isfinite(p):
            m.properties[f"pred_{prop}"] = float(p)
    ok = np.isfinite(pred) & np.isfinite(target)
    scale, unit = report_unit(prop)
    mae = float(np.abs(pred[ok] - target[ok]).mean() * scale) if ok.any() else None
    base = (read_state(ctx.input("regressor")) or {}).get("metrics", {})
    metrics = {"property": prop, "property_mae": mae, "property_mae_unit": unit, "property_mae_n": int(ok.sum()),
               "property_unencodable": int((~np.isfinite(pred)).sum()),
               "regressor_floor_mae": base.get("regressor_mae"), "atoms_only_mae": base.get("atoms_only_mae"),
               "naive_shuffled_mae": base.get("naive_shuffled_mae")}
    lines = [f"### Property: {prop} (MAE in {unit}, GVP regressor trained on the other train half)", "",
             markdown_table(["predictor", "MAE"], [
                 [f"generated molecules vs their targets (n={int(ok.sum())})", fmt(mae, ".4g", none="–")],
                 ["regressor on real molecules (floor)", fmt(base.get("regressor_mae"), ".4g", none="–")],
                 ["#atoms only", fmt(base.get("atoms_only_mae"), ".4g", none="–")],
                 ["naive (shuffled labels)", fmt(base.get("naive_shuffled_mae"), ".4g", none="–")]]), ""]
    try:
        data = GraphDataset.load(ctx.input("featurize") / "generator.pt")
        values = data.properties()[:, data.property_names.index(prop)].numpy()
        _histogram(values, pred[np.isfinite(pred)], target[ok], prop, unit, ctx.dir / "property_hist.png")
        lines += ["![property histogram](./property_hist.png)", ""]
    except Exception as e:  # noqa: BLE001 -- a plot must not fail the stage
        say(f"  (property histogram skipped: {e})")
    return metrics, lines


def _histogram(data, pred, target, prop, unit, path) -> None:
    from matplotlib.figure import Figure  # not pyplot: the caller's matplotlib backend stays as it is

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    bins = np.linspace(np.nanpercentile(data, 0.5), np.nanpercentile(data, 99.5), 50)
    ax.hist(data, bins=bins, density=True, alpha=0.4, label="training half (data)")
    ax.hist(pred, bins=bins, density=True, histtype="step", lw=2, label="generated (regressor)")
    ax.hist(target, bins=bins, density=True, histtype="step", lw=1, ls="--", label="targets")
    ax.set_xlabel(f"{prop} ({'eV' if unit == 'meV' else unit})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def check_validate(cfg: DictConfig) -> None:
    """Before any stage runs: every ``validate.compare`` folder is a finished run (one clear line otherwise)."""
    from molgen.validation.compare import run_row

    for p in cfg.validate.get("compare") or []:
        run_row(Path(str(p)).expanduser())


def compare_section(cfg: DictConfig, ctx: StageContext, metrics: dict) -> list[str]:
    """``validate.compare=[RUN_DIR, ...]``: this run beside other finished generator runs (same suite)."""
    from molgen.validation.compare import row, run_row, side_by_side

    others = list(cfg.validate.get("compare") or [])
    if not others:
        return []
    sample_state = read_state(ctx.input("sample")) or {}
    this = row(f"{ctx.run_dir.name} (this run)", sample_state.get("metrics", {}), metrics,
               sample_state.get("seconds"))
    return ["## Side by side (same validation suite)", "",
            side_by_side([this] + [run_row(Path(str(p)).expanduser()) for p in others])]


def validate_generated(cfg: DictConfig, ctx: StageContext) -> dict:
    """Judge ``sample/samples.pt`` with the validation suite (+ property MAE for conditional samples)."""
    samples = GraphDataset.load(ctx.input("sample") / "samples.pt")
    mols = [samples.molecule(i) for i in range(len(samples))]
    prop = samples.property_names[0] if samples.property_names else None
    extra: dict = {}
    lines: list[str] = []
    if prop and ctx.has_input("regressor"):
        extra, lines = property_section(mols, prop, ctx)
    from molgen.validation.api import validate_from_config

    result = validate_from_config(mols, cfg.validate, out=ctx.dir, reference=_reference(cfg, ctx),
                             title=f"{cfg.pipeline.name}: {len(mols)} generated molecules")
    metrics = {**result.scalar_metrics(), **extra}
    lines += compare_section(cfg, ctx, metrics)
    if lines:
        report = ctx.dir / "report.md"
        report.write_text(report.read_text().rstrip() + "\n\n" + "\n".join(lines) if report.exists() else "\n".join(lines))
    headline = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("stability_revised_atom", "stability_revised_mol",
                                                            "stable_single_fragment_ratio",
                                                            "validity_largest_fragment", "valid_x_unique")
                         if isinstance(metrics.get(k), float))
    say(f"  {headline}" + (f"; {prop} MAE {extra['property_mae']:.4g} {extra['property_mae_unit']}"
                           if extra.get("property_mae") is not None else ""))
    return metrics
