"""molgen checkpoints: resolve a name or path, read and write them, one metadata schema, rebuild the model.

A molgen checkpoint is a ``torch.save``'d dict of tensors and plain containers (always read with
``torch.load(weights_only=True)``)::

    {"state_dict": {...},                       # the weights (EMA weights after training)
     "molgen": {"format": 2,                    # FORMAT: the version of this metadata schema
                "pipeline": "propmolflow",      # the pipeline that trained it (``molgen.load(pipeline=...)``)
                "kind": "generator",            # what it is within the pipeline (generator, regressor, ...)
                "target": "molgen.models.propmolflow.model.PropMolFlow",   # the class that rebuilds it
                "model_args": {...},            # that class's constructor arguments
                ...},                           # anything else the pipeline records (data, metrics, ...)
     ...}                                       # Lightning's own keys in last.ckpt; extra tensors

:func:`build_model` imports ``target`` and calls ``target.from_checkpoint(ckpt)`` when the class defines it (a
model whose checkpoint holds more than one network, or that keeps side information), else
``target(**model_args).load_state_dict(state_dict)``. Format 1 checkpoints (the shipped ones made before the
schema had ``target``) are read through :data:`LEGACY_TARGETS`.

Shipped checkpoints live in ``molgen/checkpoints/<name>.ckpt`` and load by name offline.
"""
from __future__ import annotations

import importlib
import importlib.resources
from pathlib import Path
from typing import Any

from molgen.errors import CheckpointError

FORMAT = 2

#: ``(pipeline, kind) -> target`` for format-1 checkpoints, which did not record their class.
LEGACY_TARGETS: dict[tuple[str, str | None], str] = {
    ("propmolflow", None): "molgen.models.propmolflow.model.PropMolFlow",
    ("propmolflow", "generator"): "molgen.models.propmolflow.model.PropMolFlow",
    ("propmolflow", "regressor"): "molgen.models.regressor.GVPRegressor",
    ("sild", None): "molgen.models.sild.model.SiLD",
    ("sild", "autoencoder"): "molgen.models.sild.model.SiLD",
    ("sild", "diffusion"): "molgen.models.sild.model.SiLD",
    ("graphmvp", "pretrained_encoder"): "molgen.models.graphmvp.classifier.GraphMVPEncoder",
    ("graphmvp", "pretrainer"): "molgen.models.graphmvp.classifier.GraphMVPEncoder",
    ("graphmvp", "classifier"): "molgen.models.graphmvp.classifier.MoleculeClassifier",
    ("cpdiffusion_ss", None): "molgen.models.cpdiffusion_ss.designer.CPDiffusionSSDesigner",
    ("cpdiffusion_ss_oracle", None): "molgen.models.cpdiffusion_ss.ss_predictor.SSPredictor",
    ("atom", None): "molgen.models.atom.forecaster.TrajectoryForecaster",
}


# ---------------------------------------------------------------------------------------------- names
def checkpoints_dir() -> Path:
    """The folder of the checkpoints shipped in the package."""
    return Path(str(importlib.resources.files("molgen") / "checkpoints"))


def list_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in the package (``molgen.load(name)`` works offline)."""
    return sorted(p.stem for p in checkpoints_dir().glob("*.ckpt"))


def resolve(path_or_name: str | Path) -> Path:
    """A checkpoint file from a path, a train stage folder (its ``last.ckpt``) or a shipped name."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    shipped = checkpoints_dir() / f"{path_or_name}.ckpt"
    if shipped.is_file():
        return shipped
    if p.is_dir() and (p / "last.ckpt").is_file():  # a train stage folder
        return p / "last.ckpt"
    names = ", ".join(list_checkpoints()) or "none"
    raise CheckpointError(f"checkpoint not found: {path_or_name} (not a file; shipped names: {names})")


# ---------------------------------------------------------------------------------------------- schema
def target_name(obj: Any) -> str:
    """The dotted import path of a class or of an object's class (what ``target`` records)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def metadata(pipeline: str, target: Any, model_args: dict[str, Any], kind: str | None = None,
             **extra: Any) -> dict[str, Any]:
    """The ``checkpoint["molgen"]`` dict (plain values only, so the checkpoint stays weights-only loadable).

    Args:
        pipeline: the pipeline that made it.
        target: the class that rebuilds it (or its dotted path, or an instance).
        model_args: that class's constructor arguments.
        kind: what it is within the pipeline when a pipeline writes several (``generator``, ``regressor``, ...).
        extra: anything else to record (data set name, training metrics, ...).
    """
    meta = {"format": FORMAT, "pipeline": pipeline, "target": target if isinstance(target, str) else target_name(target),
            "model_args": dict(model_args)}
    if kind is not None:
        meta["kind"] = kind
    meta.update(extra)
    return meta


def target_of(meta: dict[str, Any]) -> str:
    """The class path that rebuilds a checkpoint (format 2: recorded; format 1: from its pipeline and kind)."""
    if meta.get("target"):
        return str(meta["target"])
    key = (str(meta.get("pipeline")), meta.get("kind"))
    if key in LEGACY_TARGETS:
        return LEGACY_TARGETS[key]
    if meta.get("kind") is not None:
        raise CheckpointError(f"{meta.get('pipeline')} checkpoint of unknown kind {meta.get('kind')!r}")
    raise CheckpointError(f"checkpoint of pipeline {meta.get('pipeline')!r} records no model class")


# ---------------------------------------------------------------------------------------------- read / write
def read(path_or_name: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with weights-only semantics and check it is a molgen checkpoint."""
    import torch

    path = resolve(path_or_name)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unpickling refusal, truncated file, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or "molgen" not in ckpt or "pipeline" not in ckpt["molgen"]:
        raise CheckpointError(f"{path}: not a molgen checkpoint (no 'molgen' metadata)")
    if int(ckpt["molgen"].get("format", 1)) > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['molgen']['format']} is newer than this molgen "
                              f"reads ({FORMAT}); upgrade molgen")
    return ckpt


def save(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict atomically (a ``.tmp`` file renamed into place: never a half-written file)."""
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


def export_weights(checkpoint: str | Path, dest: str | Path, *, keep: str | None = None,
                   **meta_updates: Any) -> Path:
    """Write a compact inference checkpoint (weights + molgen metadata, no optimizer state).

    Args:
        checkpoint: a Lightning checkpoint written by :func:`molgen.training.fit`.
        keep: keep only the weights whose names start with this prefix (e.g. ``"gin."``).
        meta_updates: metadata entries to replace (``kind=``, ``target=``, ``model_args=``, ...).
    """
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    if keep is not None:
        state = {k: v for k, v in state.items() if k.startswith(keep)}
    meta = {**ckpt["molgen"], **meta_updates}
    if "target" in meta_updates and not isinstance(meta["target"], str):
        meta["target"] = target_name(meta["target"])
    return save({"state_dict": state, "molgen": meta, "epoch": ckpt.get("epoch"),
                 "global_step": ckpt.get("global_step")}, dest)


# ---------------------------------------------------------------------------------------------- models
def _import(target: str):
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"checkpoint's model class {target} cannot be imported ({e})") from None


def build_model(ckpt: dict[str, Any]):
    """Rebuild the model a checkpoint dict holds, in eval mode."""
    meta = ckpt["molgen"]
    cls = _import(target_of(meta))
    try:
        if hasattr(cls, "from_checkpoint"):
            model = cls.from_checkpoint(ckpt)
        else:
            model = cls(**meta["model_args"])
            model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"checkpoint does not match {cls.__name__}: {first}") from None
    return model.eval()


def load_model(path_or_name: str | Path | dict[str, Any], pipeline: str | None = None,
               kind: str | tuple[str, ...] | None = None):
    """The model stored at ``path_or_name`` (a file, a train folder, a shipped name, or a checkpoint dict).

    Args:
        pipeline: if given, raise :class:`CheckpointError` unless the checkpoint was trained by this pipeline.
        kind: if given, raise unless the checkpoint is of this kind (or one of these kinds); a checkpoint
            without a kind counts as its pipeline's main model.
    """
    ckpt = path_or_name if isinstance(path_or_name, dict) else read(path_or_name)
    where = "checkpoint" if isinstance(path_or_name, dict) else str(resolve(path_or_name))
    meta = ckpt["molgen"]
    if pipeline is not None and meta["pipeline"] != pipeline:
        raise CheckpointError(f"{where}: checkpoint of pipeline '{meta['pipeline']}', not '{pipeline}'")
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if meta.get("kind", kinds[0]) not in kinds:
            raise CheckpointError(f"{where}: a {meta['pipeline']} {meta.get('kind')} checkpoint, not "
                                  f"{' or '.join(kinds)}")
    return build_model(ckpt)


def warm_start(model, path_or_name: str | Path, pipeline: str | None = None) -> dict[str, Any]:
    """Copy the weights of a checkpoint into ``model`` before training (a fine-tune or a longer run that starts
    where an earlier one ended, e.g. ``model.init_from=...``).

    Every tensor of the checkpoint must exist in ``model`` with the same shape; parameters the checkpoint lacks
    keep their initial values only if they were added to the architecture since (their names are returned, e.g.
    self-conditioning layers that start at zero). Raises :class:`CheckpointError` with one line otherwise.

    Returns:
        ``{"source": path, "loaded": n tensors, "new": [names the checkpoint lacks]}``.
    """
    ckpt = read(path_or_name)
    path = resolve(path_or_name)
    if pipeline is not None and ckpt["molgen"]["pipeline"] != pipeline:
        raise CheckpointError(f"{path}: a {ckpt['molgen']['pipeline']} checkpoint cannot initialise a {pipeline} "
                              "model")
    own = model.state_dict()
    state = ckpt["state_dict"]
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} tensor(s) this model does not have (first: {unknown[0]}); "
                              "the architecture differs")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, this model "
                                  f"{tuple(own[key].shape)}; the architecture differs")
    model.load_state_dict(state, strict=False)
    return {"source": str(path), "loaded": len(state), "new": sorted(set(own) - set(state))}
