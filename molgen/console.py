"""A console a person can read: library messages are counted, not printed.

Libraries molgen drives write a lot to the console: RDKit logs every molecule it cannot sanitize ("Explicit
valence for atom # 3 N, 4, is greater than permitted"), Lightning prints tips and device summaries and emits
warnings about worker counts and logging intervals, other packages raise deprecation warnings.
:func:`capture_library_output` collects all of these while a stage runs and keeps a count by source with a few
examples (the runner writes them into the stage's state and report section). Progress bars (tqdm) and molgen's
own lines are untouched. ``MOLGEN_DEBUG=1`` (or ``molgen -v``) lets everything through.

Everything changed here (warning filters, the loggers' handlers, RDKit's log destination) is restored when the
block ends.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

#: loggers whose records are captured (their handlers are swapped for a counting one inside the block)
LIBRARY_LOGGERS = ("rdkit", "pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch",
                   "torch", "py.warnings", "posebusters", "pyscf", "tblite", "hydra")
MAX_EXAMPLES = 5


def verbose() -> bool:
    """Whether library output should be shown as is (``MOLGEN_DEBUG`` or ``MOLGEN_VERBOSE`` set)."""
    return bool(os.environ.get("MOLGEN_DEBUG") or os.environ.get("MOLGEN_VERBOSE"))


@dataclass
class Captured:
    """What a block of code made libraries say: counts by source and the first distinct messages."""

    by_source: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_source.values())

    def add(self, source: str, message: str) -> None:
        self.by_source[source] += 1
        line = " ".join(str(message).split())[:200]
        if len(self.examples) < MAX_EXAMPLES and line not in self.examples:
            self.examples.append(line)

    def summary(self) -> dict:
        return {"total": self.total, "by_source": dict(self.by_source), "examples": list(self.examples)}


class _CountingHandler(logging.Handler):
    def __init__(self, captured: Captured):
        super().__init__(level=logging.DEBUG)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        source = "rdkit" if record.name.startswith("rdkit") else record.name.split(".")[0]
        try:
            self.captured.add(source, record.getMessage())
        except Exception:  # noqa: BLE001 -- a malformed record must not break a stage
            self.captured.add(source, str(record.msg))


@contextmanager
def capture_library_output(show: bool | None = None) -> Iterator[Captured]:
    """Count Python warnings, RDKit log lines and the library loggers' records raised in the block.

    Args:
        show: let everything through instead (default: :func:`verbose`).

    Yields:
        a :class:`Captured` filled as the block runs (``total``, ``summary()``).
    """
    captured = Captured()
    if verbose() if show is None else show:
        yield captured
        return
    handler = _CountingHandler(captured)
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    rdkit_levels = _rdkit_to_python()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield captured
            finally:
                for w in caught:
                    captured.add(_warning_source(w), f"{w.category.__name__}: {w.message}")
    finally:
        if rdkit_levels is not None:
            _rdkit_to_cpp(rdkit_levels)
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate


def _warning_source(w: warnings.WarningMessage) -> str:
    path = str(w.filename).replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/")[1].split("/")[0]
    return "molgen" if "/molgen/" in path else "python"


def _rdkit_to_python() -> dict[str, bool] | None:
    """Send RDKit's log to Python's logging (which enables every RDKit log level); returns the levels it had."""
    try:
        from rdkit import rdBase
    except ImportError:
        return None
    from molgen.settings import rdkit_log_status

    levels = rdkit_log_status()
    rdBase.LogToPythonLogger()
    return levels


def _rdkit_to_cpp(levels: dict[str, bool]) -> None:
    """RDKit logs to its own streams again, with the levels it had before (LogToCppStreams resets them)."""
    from rdkit import rdBase

    from molgen.settings import set_rdkit_log_status

    rdBase.LogToCppStreams()
    set_rdkit_log_status(levels)
