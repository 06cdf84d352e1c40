"""The validate stage shared by molecule pipelines: ``validate_stage(cfg, ctx, samples, reference)``.

A pipeline's stage function calls it with the SDF its sample stage wrote and the training SMILES::

    def validate(cfg, ctx):
        samples = ctx.input("sample") / "samples.sdf"
        return validate_stage(cfg, ctx, samples, reference=training_smiles(cfg))

It writes metrics.json, molecules.csv, molecules.sdf, report.md (the stage's section of the run report, figure
links ``./*.png``) and report.html into ``ctx.dir`` and returns the scalar metrics for the runner.
"""
from __future__ import annotations

from pathlib import Path


def validate_stage(cfg, ctx, samples: str | Path, reference=None) -> dict:
    """Run the validation suite with ``cfg.validate`` (configs/validate/molecules.yaml) into ``ctx.dir``.

    Args:
        cfg: the composed run config (``cfg.validate`` is used).
        ctx: the runner's StageContext (``ctx.dir`` receives the outputs).
        samples: SDF/XYZ file or folder of generated molecules.
        reference: training SMILES (set or file) for novelty; None uses ``cfg.validate.reference`` unless it is
            ``train``, in which case novelty is skipped.
    """
    from molgen.validation.cli import run_from_config

    ref = reference
    if ref is None:
        r = cfg.validate.get("reference")
        ref = None if r in (None, "train", "none", "null") else r
    node = dict(cfg.validate)
    node["reference"] = None
    result = run_from_config(samples, node, out=ctx.dir, reference=ref,
                             title=f"Validation of {Path(samples).name}")
    return result.scalar_metrics()
