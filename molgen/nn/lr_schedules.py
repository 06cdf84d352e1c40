"""Per-step learning-rate schedules for Lightning modules' ``configure_optimizers`` (shared by the GVP regressor
and SiLD's prior phase)."""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

SCHEDULES = ("constant", "cosine", "wsd")


def lr_schedule(optimizer: torch.optim.Optimizer, schedule: str, trainer: pl.Trainer | None,
                decay_fraction: float = 0.2, option: str = "lr_schedule") -> dict:
    """Lightning's ``configure_optimizers`` answer for a per-step learning-rate schedule over the run's steps
    (``trainer.estimated_stepping_batches``: ``max_steps``, or ``max_epochs`` x batches).

    Args:
        schedule: ``constant``; ``cosine`` (from the optimizer's lr to zero over the run); ``wsd``
            (warmup-stable-decay without the warmup: constant, then linear to zero over the last
            ``decay_fraction`` of the steps: a run can be stopped, judged and continued at constant lr, and
            only the last part, whose length is known, decays).
        option: the config key, for the error message.
    """
    if schedule == "constant":
        return {"optimizer": optimizer}
    if schedule not in SCHEDULES:
        raise ValueError(f"{option}={schedule!r}: expected one of {', '.join(SCHEDULES)}")
    total = trainer.estimated_stepping_batches if trainer is not None else None
    if not total or not math.isfinite(total):
        raise ValueError(f"{option}={schedule} needs a finite trainer max_epochs or max_steps")
    total = max(int(total), 1)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        if not 0.0 < decay_fraction <= 1.0:
            raise ValueError(f"the decay fraction of {option}=wsd must lie in (0, 1], got {decay_fraction}")
        start = total * (1.0 - decay_fraction)
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0 if step < start else max(0.0, (total - step) / (total - start)))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
