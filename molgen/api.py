"""The Python entry points: :func:`load` a trained model by path or by shipped name.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects (the schema and the loaders are in :mod:`molgen.checkpoint`).
"""
from __future__ import annotations

from pathlib import Path

from molgen.checkpoint import list_checkpoints, load_model

__all__ = ["load", "list_checkpoints"]


def load(path_or_name: str | Path, pipeline: str | None = None):
    """Return the trained model stored at ``path_or_name`` (a file, a train folder, or a shipped name).

    Args:
        path_or_name: ``runs/<run>/train/last.ckpt``, ``runs/<run>/train`` or a shipped name such as
            ``"propmolflow-qm9"`` (see :func:`list_checkpoints`).
        pipeline: if given, raise :class:`~molgen.errors.CheckpointError` unless the checkpoint was trained by
            this pipeline.

    Example:
        >>> import molgen
        >>> model = molgen.load("propmolflow-qm9")                       # doctest: +SKIP
        >>> mols = model.sample(8, condition={"gap": 6.8}, steps=100, seed=0)   # doctest: +SKIP
    """
    return load_model(path_or_name, pipeline=pipeline)
