"""Training through PyTorch Lightning, shared by every pipeline's train stage.

:func:`fit` builds a :class:`pytorch_lightning.Trainer` from the ``trainer`` config group and runs it in a
stage folder with

* ``last.ckpt`` written every epoch and every ``checkpoint_every_n_steps`` steps, ``best.ckpt`` by validation
  loss; an interrupted run resumes from ``last.ckpt`` when the stage is run again, and its CSV log keeps the
  rows written before the interruption;
* EMA weights (Lightning's :class:`~pytorch_lightning.callbacks.EMAWeightAveraging`; the checkpoint's
  ``state_dict`` holds the EMA weights, ``current_model_state`` the raw ones);
* CSV and TensorBoard logs under ``logs/``, Lightning's progress bar;
* molgen metadata in every checkpoint (:func:`molgen.checkpoint.metadata`: pipeline, model class and its
  constructor arguments), so :func:`molgen.load` can rebuild the model; all content is weights-only loadable;
* every :class:`pytorch_lightning.Trainer` argument passed through from the config (``trainer.<arg>=...``;
  ``trainer._target_`` names another Trainer class), so any accelerator / devices / strategy / number of nodes
  Lightning supports works (``trainer.devices=4 trainer.strategy=ddp trainer.num_nodes=2``).

Under DDP every process runs :func:`fit`; Lightning writes checkpoints and logs from global rank 0 only, and
on the other ranks :func:`fit` raises :class:`FollowerFinished` once training is over, so that only rank 0
goes on to write artifacts (see :mod:`molgen.runner`).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from molgen.checkpoint import metadata
from molgen.nn.lr_schedules import SCHEDULES, lr_schedule  # noqa: F401 -- re-exported for trainers
from molgen.config_schema import TRAINING_OPTIONS, trainer_arguments
from molgen.runner import DDP_MARKER, launch_rank

#: molgen's defaults where they differ from the Trainer's own (everything else is Lightning's default)
TRAINER_DEFAULTS: dict[str, Any] = {"accelerator": "cpu", "max_epochs": 1, "gradient_clip_algorithm": "value",
                                    "log_every_n_steps": 10, "enable_model_summary": False, "num_sanity_val_steps": 0}


class FollowerFinished(Exception):
    """Raised by :func:`fit` on a DDP rank other than 0 after training: rank 0 alone writes what follows."""


class MolgenMetadata(Callback):
    """Writes :func:`molgen.checkpoint.metadata` into every checkpoint as ``checkpoint["molgen"]``."""

    def __init__(self, info: dict[str, Any]):
        self.info = info

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["molgen"] = self.info
        # Lightning may store an AttributeDict; plain dict keeps the checkpoint weights-only loadable.
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = dict(checkpoint["hyper_parameters"])


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued instead of deleted: rows up to
    the resumed step are kept (rows logged after the last checkpoint are dropped: they are logged again)."""

    def __init__(self, log_dir: str, keep_before_step: int | None = None):
        self.keep_before_step = keep_before_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if self.keep_before_step is not None:
            rows = [r for r in rows if not r.get("step") or int(float(r["step"])) < self.keep_before_step]
        keys = sorted(set().union(*rows)) if rows else []
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            if keys:
                writer.writeheader()
            writer.writerows(rows)
        if not rows:
            path.unlink()
        self.metrics_keys = keys


class ResumableCSVLogger(CSVLogger):
    """:class:`~pytorch_lightning.loggers.CSVLogger` that keeps the rows of an interrupted run it resumes."""

    def __init__(self, *args, resume_step: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        """Rows logged up to a checkpoint reach the disk with it (a run killed later keeps them)."""
        super().after_save_checkpoint(checkpoint_callback)
        self.save()

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._experiment = _KeepingWriter(self.log_dir, keep_before_step=self._resume_step)
        return self._experiment


def _loggers(out_dir: Path, resume_step: int | None) -> list:
    loggers: list = [ResumableCSVLogger(str(out_dir), name="logs", version="", resume_step=resume_step)]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(str(out_dir), name="logs", version="tensorboard"))
    except ImportError:
        pass
    return loggers


def build_trainer(cfg: dict, out_dir: Path, callbacks: list[Callback], has_val: bool,
                  resume_step: int | None = None) -> pl.Trainer:
    """A Trainer from a trainer config group: every Trainer argument in ``cfg`` is passed through
    (``_target_``, default :class:`pytorch_lightning.Trainer`, is built with :func:`hydra.utils.instantiate`);
    molgen's own options (:data:`~molgen.config_schema.TRAINING_OPTIONS`) set the callbacks."""
    from hydra.utils import instantiate

    every_n_steps = cfg.get("checkpoint_every_n_steps") or None
    ckpts = [ModelCheckpoint(dirpath=str(out_dir), filename="best", monitor="val/loss" if has_val else None,
                             mode="min", save_top_k=1 if has_val else 0, save_last=True,
                             enable_version_counter=False)]
    if every_n_steps:
        ckpts.append(ModelCheckpoint(dirpath=str(out_dir), save_last=True, save_top_k=0,
                                     every_n_train_steps=int(every_n_steps), enable_version_counter=False))
    log_every = int(cfg.get("log_every_n_steps") or TRAINER_DEFAULTS["log_every_n_steps"])
    callbacks = [*callbacks, *ckpts, TQDMProgressBar(refresh_rate=max(1, log_every))]
    if cfg.get("ema_decay"):
        callbacks.append(EMAWeightAveraging(decay=float(cfg["ema_decay"])))
    allowed = trainer_arguments()
    unknown = set(cfg) - set(allowed) - TRAINING_OPTIONS - {"_target_"}
    if unknown:
        from molgen.errors import ConfigError

        raise ConfigError(f"unknown trainer key(s): {', '.join(sorted(unknown))}")
    kwargs = {**TRAINER_DEFAULTS, **{k: v for k, v in cfg.items() if k in allowed}}
    kwargs["check_val_every_n_epoch"] = (cfg.get("val_every_n_epochs") or kwargs.get("check_val_every_n_epoch", 1)
                                         ) if has_val else None
    if not has_val:
        kwargs["limit_val_batches"] = 0
    kwargs.update(default_root_dir=str(out_dir), logger=_loggers(out_dir, resume_step), callbacks=callbacks)
    return instantiate({"_target_": cfg.get("_target_", "pytorch_lightning.Trainer")}, **kwargs)


@contextmanager
def _rendezvous(out_dir: Path, world_size: int):
    """On rank 0 of a multi-process training: leave :data:`molgen.runner.DDP_MARKER` in ``out_dir`` for the
    followers started by a cluster launcher, and name ``out_dir`` in ``MOLGEN_DDP_FIT`` for the processes
    Lightning's launcher spawns (they inherit the environment); both are removed when training ends."""
    if world_size <= 1 or launch_rank() != 0:
        yield
        return
    marker = out_dir / DDP_MARKER
    marker.write_text(json.dumps({"world_size": world_size, "pid": os.getpid()}))
    previous = os.environ.get("MOLGEN_DDP_FIT")
    os.environ["MOLGEN_DDP_FIT"] = str(out_dir)
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop("MOLGEN_DDP_FIT", None)
        else:
            os.environ["MOLGEN_DDP_FIT"] = previous


def fit_phase(module: pl.LightningModule, phase: str, train_loader, val_loader, trainer_cfg: dict, out_dir: Path,
              **fit_kwargs: Any) -> dict[str, Any]:
    """One phase of a multi-phase training (SiLD: autoencoder then diffusion; CPDiffusion-SS: MLM, autoencoder,
    diffusion), in ``out_dir/phase``.

    A phase that finished before (its ``done.json``) is not trained again: its weights are loaded from its
    ``last.ckpt`` and its metrics read back. Otherwise it is trained with :func:`fit` (resuming an interrupted
    run from ``last.ckpt``) and ``done.json`` is written (by rank 0 only) when it ends.
    """
    folder = Path(out_dir) / phase
    done = folder / "done.json"
    if done.exists():
        state = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        return {**json.loads(done.read_text()), "skipped": "finished before"}
    fit_kwargs.setdefault("resume", True)
    metrics = fit(module, train_loader, val_loader, trainer_cfg, folder, **fit_kwargs)
    done.write_text(json.dumps(metrics))
    return metrics


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
    if "seed" in trainer_cfg:
        pl.seed_everything(int(trainer_cfg["seed"]), workers=True, verbose=False)
    extra = dict(extra_metadata or {})
    meta = MolgenMetadata(metadata(pipeline, target or module, model_args, extra.pop("kind", None), **extra))
    last = out_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    resume_step = None
    if ckpt_path:
        resume_step = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", 0))
    trainer = build_trainer(trainer_cfg, out_dir, [meta, *(callbacks or [])], has_val=val_loader is not None,
                            resume_step=resume_step)
    t0 = time.time()
    with _rendezvous(out_dir, trainer.world_size):
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.time() - t0
    if trainer.global_rank != 0:
        raise FollowerFinished(f"rank {trainer.global_rank} finished training in {out_dir}")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    metrics.update(epochs=int(trainer.current_epoch), steps=int(trainer.global_step), seconds=round(seconds, 1),
                   resumed_from=ckpt_path or "", parameters=sum(p.numel() for p in module.parameters()))
    return metrics
