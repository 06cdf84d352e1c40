"""Training through PyTorch Lightning, shared by every pipeline's train stage.

:func:`fit` builds a :class:`pytorch_lightning.Trainer` from the ``trainer`` config group and runs it in a
stage folder with

* ``last.ckpt`` written every epoch and every ``checkpoint_every_n_steps`` steps, ``best.ckpt`` by validation
  loss; an interrupted run resumes from ``last.ckpt`` when the stage is run again;
* EMA weights (Lightning's :class:`~pytorch_lightning.callbacks.EMAWeightAveraging`; the checkpoint's
  ``state_dict`` holds the EMA weights, ``current_model_state`` the raw ones);
* CSV and TensorBoard logs under ``logs/``, Lightning's progress bar;
* molgen metadata in every checkpoint (``checkpoint["molgen"]``: pipeline name and the model's constructor
  arguments), so :func:`molgen.load` can rebuild the model; all checkpoint content is weights-only loadable;
* any accelerator / devices / strategy Lightning supports (``trainer.devices=4 trainer.strategy=ddp``).
"""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger

from molgen.checkpoint import metadata



def _quiet_lightning() -> None:
    """Keep the console to the progress bar: Lightning's tips and known-harmless warnings off."""
    os.environ.setdefault("LITLOGGER_DISABLE_TIP", "1")
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*Checkpoint directory .* exists and is not empty.*", ".*LeafSpec.*is deprecated.*",
                    ".*does not have many workers.*", ".*limit_val_batches=1.0.*", ".*litlogger.*",
                    ".*GPU available but not used.*", ".*is not in struct.*"):
        warnings.filterwarnings("ignore", message=pattern)


class MolgenMetadata(Callback):
    """Writes :func:`molgen.checkpoint.metadata` into every checkpoint as ``checkpoint["molgen"]``."""

    def __init__(self, info: dict[str, Any]):
        self.info = info

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["molgen"] = self.info
        # Lightning may store an AttributeDict; plain dict keeps the checkpoint weights-only loadable.
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = dict(checkpoint["hyper_parameters"])


def _loggers(out_dir: Path) -> list:
    loggers: list = [CSVLogger(str(out_dir), name="logs", version="")]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(str(out_dir), name="logs", version="tensorboard"))
    except ImportError:
        pass
    return loggers


def build_trainer(cfg: dict, out_dir: Path, callbacks: list[Callback], has_val: bool) -> pl.Trainer:
    """A Trainer from the ``trainer`` config group (see configs/trainer/*.yaml for the keys)."""
    every_n_steps = cfg.get("checkpoint_every_n_steps") or None
    ckpts = [ModelCheckpoint(dirpath=str(out_dir), filename="best", monitor="val/loss" if has_val else None,
                             mode="min", save_top_k=1 if has_val else 0, save_last=True,
                             enable_version_counter=False)]
    if every_n_steps:
        ckpts.append(ModelCheckpoint(dirpath=str(out_dir), save_last=True, save_top_k=0,
                                     every_n_train_steps=int(every_n_steps), enable_version_counter=False))
    callbacks = [*callbacks, *ckpts, TQDMProgressBar(refresh_rate=max(1, int(cfg.get("log_every_n_steps", 10))))]
    if cfg.get("ema_decay"):
        callbacks.append(EMAWeightAveraging(decay=float(cfg["ema_decay"])))
    return pl.Trainer(
        accelerator=cfg.get("accelerator", "cpu"),
        devices=cfg.get("devices", 1),
        num_nodes=cfg.get("num_nodes", 1),
        strategy=cfg.get("strategy", "auto"),
        precision=cfg.get("precision", 32),
        max_epochs=cfg.get("max_epochs", 1),
        max_steps=cfg.get("max_steps", -1),
        max_time=cfg.get("max_time"),
        gradient_clip_val=cfg.get("gradient_clip_val"),
        gradient_clip_algorithm=cfg.get("gradient_clip_algorithm", "value"),
        check_val_every_n_epoch=cfg.get("val_every_n_epochs", 1) if has_val else None,
        limit_val_batches=cfg.get("limit_val_batches", 1.0) if has_val else 0,
        log_every_n_steps=cfg.get("log_every_n_steps", 10),
        default_root_dir=str(out_dir),
        logger=_loggers(out_dir),
        callbacks=callbacks,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def fit(module: pl.LightningModule, train_loader, val_loader, trainer_cfg: dict, out_dir: Path, *,
        pipeline: str, model_args: dict[str, Any], extra_metadata: dict[str, Any] | None = None,
        resume: bool = True, callbacks: list[Callback] | None = None, target: Any = None) -> dict[str, Any]:
    """Train ``module`` in ``out_dir`` and return summary metrics.

    Args:
        module: the LightningModule; it must log ``train/loss`` (and ``val/loss`` when ``val_loader`` is given).
        trainer_cfg: the ``trainer`` config group as a plain dict.
        out_dir: the train stage folder (checkpoints and logs go here).
        pipeline: pipeline name recorded in the checkpoint (``molgen.load`` dispatches on it).
        model_args: plain-dict constructor arguments that rebuild ``module`` (weights-only safe).
        resume: continue from ``out_dir/last.ckpt`` if it exists.
        target: the class :func:`molgen.load` rebuilds from the checkpoints (default: ``module``'s class).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _quiet_lightning()
    if "seed" in trainer_cfg:
        pl.seed_everything(int(trainer_cfg["seed"]), workers=True, verbose=False)
    extra = dict(extra_metadata or {})
    meta = MolgenMetadata(metadata(pipeline, target or module, model_args, extra.pop("kind", None), **extra))
    trainer = build_trainer(trainer_cfg, out_dir, [meta, *(callbacks or [])], has_val=val_loader is not None)
    last = out_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    t0 = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.time() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    metrics.update(epochs=int(trainer.current_epoch), steps=int(trainer.global_step), seconds=round(seconds, 1),
                   resumed_from=ckpt_path or "", parameters=sum(p.numel() for p in module.parameters()))
    return metrics
