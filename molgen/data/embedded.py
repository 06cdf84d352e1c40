"""Where the embedded data sets are: ``data/<name>/`` in the repository, installed as ``molgen.embedded``.

The default run of every pipeline and the tests read only these, so they work offline and after a
non-editable ``pip install .`` from any directory.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

from molgen.errors import DataError


def embedded_dir(name: str) -> Path:
    """The folder of embedded data set ``name`` (e.g. ``"qm9_subset"``); DataError if it is not shipped."""
    path = Path(str(importlib.resources.files("molgen.embedded"))) / name
    if not path.is_dir():
        raise DataError(f"embedded data set '{name}' not found at {path}")
    return path
