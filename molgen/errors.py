"""Errors a user sees as one line.

Every problem caused by the user's input (a bad override, a missing or corrupted file, an empty data set,
a checkpoint of another pipeline) raises :class:`MolgenError`; the CLI prints ``error: <message>`` and exits
with status 2, without a traceback (set ``MOLGEN_DEBUG=1`` to see one).
"""
from __future__ import annotations


class MolgenError(Exception):
    """A user-facing error; the message names the problem and where it is."""


class ConfigError(MolgenError):
    """An invalid configuration or override."""


class DataError(MolgenError):
    """Input data that cannot be read (missing file, empty set, corrupted record that cannot be skipped)."""


class CheckpointError(MolgenError):
    """A checkpoint that is missing, unsafe, or belongs to another pipeline."""
