"""A persistent result store: one SQLite file, results keyed by InChIKey + geometry hash + method.

An interrupted or repeated validation looks every job up before running it, so nothing finished is ever
recomputed. Only the parent process writes (workers return results), so SQLite's single-writer rule holds.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np
from rdkit import Chem

from molgen.data.molecule import Molecule


def geometry_hash(mol: Molecule, decimals: int = 4) -> str:
    """sha256 (16 hex) of atomic numbers, formal charges and positions rounded to ``decimals`` Angstrom."""
    h = hashlib.sha256()
    h.update(mol.atomic_numbers.astype(np.int64).tobytes())
    h.update(mol.formal_charges.astype(np.int64).tobytes())
    h.update(np.round(mol.positions, decimals).astype(np.float64).tobytes() + b"")
    return h.hexdigest()[:16]


def inchikey(mol: Molecule) -> str:
    """InChIKey of the molecule (bonds as given), or ``NOINCHI-<formula>`` when RDKit cannot make one."""
    try:
        rd = mol.to_rdkit(sanitize=True)
        key = Chem.MolToInchiKey(rd)
        if key:
            return key
    except Exception:  # noqa: BLE001 -- invalid molecules still get quantum results
        pass
    return "NOINCHI-" + "".join(f"{s}{n}" for s, n in zip(*np.unique(mol.symbols, return_counts=True)))


def job_key(mol: Molecule, method: str) -> str:
    return f"{inchikey(mol)}|{geometry_hash(mol)}|{method}"


class ResultStore:
    """``key -> (status, payload)``; status is ``ok`` or a failure kind (``scf_not_converged``, ``timeout``,
    ``error``, ``skipped``) with the reason in the payload."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, inchikey TEXT, geometry TEXT, "
                        "method TEXT, status TEXT, payload TEXT, seconds REAL, created REAL)")
        self.db.commit()

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT status, payload, seconds FROM results WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return {"status": row[0], **json.loads(row[1]), "seconds": row[2]}

    def put(self, key: str, status: str, payload: dict, seconds: float) -> None:
        ik, geo, method = key.split("|", 2)
        self.db.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?)",
                        (key, ik, geo, method, status, json.dumps(payload, default=float), seconds, time.time()))
        self.db.commit()

    def count(self, method: str | None = None) -> int:
        if method is None:
            return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM results WHERE method=?", (method,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
