"""The Python entry points: :func:`load` a trained model by path or by shipped name.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects. Every molgen checkpoint carries ``checkpoint["molgen"] = {"pipeline": NAME, ...}``;
the pipeline module ``molgen.pipelines.NAME`` rebuilds the model from it (``load_model(checkpoint)``).
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from molgen.errors import CheckpointError


def checkpoints_dir() -> Path:
    return Path(str(importlib.resources.files("molgen") / "checkpoints"))


def list_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in the package (``molgen.load(name)`` works offline)."""
    return sorted(p.stem for p in checkpoints_dir().glob("*.ckpt"))


def resolve_checkpoint(path_or_name: str | Path) -> Path:
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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with weights-only semantics and check it is a molgen checkpoint."""
    import torch

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unpickling refusal, truncated file, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or "molgen" not in ckpt or "pipeline" not in ckpt["molgen"]:
        raise CheckpointError(f"{path}: not a molgen checkpoint (no 'molgen' metadata)")
    return ckpt


def load(path_or_name: str | Path, pipeline: str | None = None):
    """Return the trained model stored at ``path_or_name`` (a file, a train folder, or a shipped name).

    Args:
        path_or_name: ``runs/<run>/train/last.ckpt``, ``runs/<run>/train`` or a shipped name such as
            ``"propmolflow-qm9"`` (see :func:`list_checkpoints`).
        pipeline: if given, raise :class:`CheckpointError` unless the checkpoint was trained by this pipeline.

    Example:
        >>> import molgen
        >>> model = molgen.load("propmolflow-qm9")                       # doctest: +SKIP
        >>> mols = model.sample(8, condition={"gap": 6.8}, steps=100, seed=0)   # doctest: +SKIP
    """
    from molgen.config import pipeline_module

    path = resolve_checkpoint(path_or_name)
    ckpt = read_checkpoint(path)
    name = ckpt["molgen"]["pipeline"]
    if pipeline is not None and name != pipeline:
        raise CheckpointError(f"{path}: checkpoint of pipeline '{name}', not '{pipeline}'")
    return pipeline_module(name).load_model(ckpt)
