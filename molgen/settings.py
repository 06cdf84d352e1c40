"""Scoped process-wide settings: each context manager changes one setting for the duration of a block and restores
the caller's value on exit, also when the block raises.

Library code never changes process-wide state (torch threads, environment variables, RDKit logging, logger levels,
warning filters) behind its caller's back; it wraps the code that needs a different setting in one of these.
Every context manager here also works as a decorator (``@torch_threads()`` restores the thread count when the
decorated function returns).

Layer 0: standard library only; torch and RDKit are imported inside the functions that need them.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

#: RDKit's log levels, least severe first (the ``rdApp.*`` loggers)
RDKIT_LEVELS = ("debug", "info", "warning", "error")
#: RDKit's state at start-up, used when the installed RDKit cannot report its log status
_RDKIT_DEFAULT = {"debug": False, "info": False, "warning": True, "error": True}


@contextlib.contextmanager
def env(**variables: str | int | None) -> Iterator[None]:
    """Set environment variables (``None`` unsets one) inside the block; restore every previous value on exit.

    ``with env(OMP_NUM_THREADS=1): ...``
    """
    saved = {name: os.environ.get(name) for name in variables}
    try:
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def environ_restored() -> Iterator[None]:
    """Restore ``os.environ`` exactly as it was (variables added in the block removed, changed ones reset) when the
    block ends: for third-party code that sets variables in this process (dask's nanny sets ``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``, ``MALLOC_TRIM_THRESHOLD_``... for the workers it spawns)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            os.environ.pop(name, None)
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: keep the current count, but still restore it
    on exit, so code inside may call ``torch.set_num_threads``); the caller's count is restored on exit."""
    import torch

    previous = torch.get_num_threads()
    try:
        if n is not None:
            torch.set_num_threads(max(1, int(n)))
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def rdkit_log_status() -> dict[str, bool]:
    """Whether each RDKit log level (``debug``, ``info``, ``warning``, ``error``) is enabled now."""
    from rdkit import rdBase

    if not hasattr(rdBase, "LogStatus"):  # very old RDKit: assume its start-up state
        return dict(_RDKIT_DEFAULT)
    status = dict(_RDKIT_DEFAULT)
    for line in rdBase.LogStatus().splitlines():
        name, _, state = line.strip().partition(":")
        level = name.removeprefix("rdApp.")
        if level in status:
            status[level] = state.strip() == "enabled"
    return status


def set_rdkit_log_status(status: dict[str, bool]) -> None:
    """Enable or disable RDKit log levels as in ``status`` (as returned by :func:`rdkit_log_status`)."""
    from rdkit import rdBase

    for level, enabled in status.items():
        (rdBase.EnableLog if enabled else rdBase.DisableLog)(f"rdApp.{level}")


@contextlib.contextmanager
def rdkit_log_level(level: str | None = "error") -> Iterator[None]:
    """Inside the block RDKit logs only messages at ``level`` or above (``None``: nothing); levels at or above
    ``level`` stay as the caller set them (never enabled here). Every level is restored on exit."""
    if level is not None and level not in RDKIT_LEVELS:
        raise ValueError(f"unknown RDKit log level {level!r} (choose from {', '.join(RDKIT_LEVELS)} or None)")
    saved = rdkit_log_status()
    keep = RDKIT_LEVELS.index(level) if level is not None else len(RDKIT_LEVELS)
    try:
        set_rdkit_log_status({name: saved[name] and k >= keep for k, name in enumerate(RDKIT_LEVELS)})
        yield
    finally:
        set_rdkit_log_status(saved)


def quiet_rdkit() -> contextlib.AbstractContextManager[None]:
    """No RDKit log output inside the block (its error lines for unparsable input included); restored on exit."""
    return rdkit_log_level(None)


@contextlib.contextmanager
def logger_level(name: str, level: int | str) -> Iterator[None]:
    """Set the level of the ``logging`` logger ``name`` inside the block; restore the previous level on exit."""
    logger = logging.getLogger(name)
    previous = logger.level
    try:
        logger.setLevel(level)
        yield
    finally:
        logger.setLevel(previous)
