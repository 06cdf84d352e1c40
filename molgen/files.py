"""Writing output folders safely: one writer per folder, files replaced whole.

* :func:`claim`: a real file lock (:class:`filelock.FileLock`, released by the OS if the process dies) on a folder
  for one kind of writer; a second process is refused with one line instead of silently mixing outputs.
* :func:`write_atomic`: write a file through a temporary sibling and rename it into place, so a reader (or a
  crash) never sees half of it.
"""
from __future__ import annotations

import os
from pathlib import Path

from molgen.errors import MolgenError


def claim(directory: str | Path, name: str, what: str):
    """Lock ``<directory>/.<name>.lock`` for this process; returns the held lock (call ``release()``).

    Raises:
        MolgenError: one line naming ``what`` is held by another process."""
    from filelock import FileLock, Timeout

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / f".{name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MolgenError(f"{what} is being written by another molgen process; wait for it or stop it first") from None
    return lock


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via ``<path>.tmp<pid>`` and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path
