"""Reference sets for novelty and for distribution distances: QM9's training split, a file, or given SMILES.

``reference="qm9"`` means QM9's *training* molecules under EDM's split (Hoogeboom et al. 2022,
``qm9/data/prepare/qm9.py``): the 130,831 characterized molecules in index order, permuted with
``np.random.seed(0)``; the first 100,000 are train, the next 17,748 valid, the last 13,083 test. The
molecules come from qm9pack's CSV files (located with ``importlib.util.find_spec``, because ``import qm9pack``
fails on modern setuptools), or from the embedded subset ``data/qm9_subset`` when qm9pack is absent.
Canonical SMILES sets are cached under ``$MOLGEN_CACHE`` (default ``~/.cache/molgen``).
"""
from __future__ import annotations

import ast
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.data.molecule import Molecule
from molgen.errors import DataError

QM9_SIZES = {"n": 130_831, "train": 100_000, "test": 13_083}


@dataclass
class Reference:
    """What a reference provides: canonical SMILES (novelty) and/or molecules (distribution distances)."""

    name: str
    smiles: set[str] | None = None
    molecules: list[Molecule] | None = None


def cache_dir() -> Path:
    d = Path(os.environ.get("MOLGEN_CACHE", Path.home() / ".cache" / "molgen"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def qm9pack_data_dir() -> Path | None:
    """Folder of qm9pack's CSV files, or None if qm9pack is not installed."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if (d / "qm9_part1.csv").exists() else None


def _embedded_subset() -> Path | None:
    from molgen.data.embedded import embedded_dir
    from molgen.errors import DataError

    try:
        return embedded_dir("qm9_subset")
    except DataError:
        return None


def qm9_table(columns: list[str]) -> pd.DataFrame:
    """QM9's 130,831 molecules (qm9pack's CSV, index order) with the requested columns."""
    d = qm9pack_data_dir()
    if d is None:
        raise DataError("reference=qm9 needs the qm9pack package (pip install qm9pack) or data/qm9_subset")
    cols = list(dict.fromkeys(["Index", *columns]))
    parts = [pd.read_csv(d / f"qm9_part{i}.csv", usecols=cols) for i in (1, 2, 3)]
    df = pd.concat(parts, ignore_index=True)
    if len(df) != QM9_SIZES["n"]:
        raise DataError(f"qm9pack CSV has {len(df)} molecules, expected {QM9_SIZES['n']}")
    return df.sort_values("Index").reset_index(drop=True)


def qm9_split(name: str) -> np.ndarray:
    """Row positions (into :func:`qm9_table`) of EDM's QM9 ``train``/``valid``/``test`` split."""
    n, n_train, n_test = QM9_SIZES["n"], QM9_SIZES["train"], QM9_SIZES["test"]
    perm = np.random.RandomState(0).permutation(n)  # == np.random.seed(0); np.random.permutation(n)
    n_valid = n - n_train - n_test
    parts = {"train": perm[:n_train], "valid": perm[n_train:n_train + n_valid], "test": perm[n_train + n_valid:]}
    if name not in parts:
        raise DataError(f"unknown QM9 split '{name}' (train, valid, test)")
    return parts[name]


def qm9_smiles(split: str = "train") -> set[str]:
    """Canonical non-isomeric SMILES of a QM9 split (cached after the first call, ~15 s)."""
    from molgen.validation.structure import canonical_smiles

    cache = cache_dir() / f"qm9_{split}_smiles.txt"
    if cache.exists():
        return set(cache.read_text().split())
    sub = _embedded_subset()
    if qm9pack_data_dir() is None and sub is not None:
        return smiles_from_file(sub)
    df = qm9_table(["SMILES"])
    smiles = {c for c in (canonical_smiles(s) for s in df["SMILES"].iloc[qm9_split(split)]) if c}
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("\n".join(sorted(smiles)) + "\n")
    tmp.replace(cache)
    return smiles


def qm9_molecules(split: str = "test", n: int | None = None, seed: int = 0) -> list[Molecule]:
    """QM9 molecules of a split (DFT geometries, no bonds; properties in QM9's units), ``n`` drawn at random.

    Properties: ``mu`` (D), ``alpha`` (Bohr^3), ``homo``/``lumo``/``gap`` (Hartree), ``Cv`` (cal/mol K).
    """
    cols = ["Elements", "XYZ_Ang", "Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au",
            "HOMO_LUMO_gap_au", "Heatcapacity_Cv_cal_mol_K", "SMILES"]
    df = qm9_table(cols)
    rows = qm9_split(split)
    if n is not None and n < len(rows):
        rows = np.sort(np.random.RandomState(seed).choice(rows, n, replace=False))
    from molgen.data.io import _SYMBOL_TO_Z

    mols = []
    for r in rows:
        row = df.iloc[int(r)]
        z = [_SYMBOL_TO_Z[s.lower()] for s in ast.literal_eval(row["Elements"])]
        pos = np.array(ast.literal_eval(row["XYZ_Ang"]), dtype=float)
        props = {"mu": row["Dipole_debye"], "alpha": row["Polarizability_bohr3"], "homo": row["HOMO_au"],
                 "lumo": row["LUMO_au"], "gap": row["HOMO_LUMO_gap_au"], "Cv": row["Heatcapacity_Cv_cal_mol_K"]}
        mols.append(Molecule(pos, z, properties={k: float(v) for k, v in props.items()},
                             name=f"qm9_{int(row['Index']):06d}"))
    return mols


def smiles_from_file(path: Path) -> set[str]:
    """Canonical SMILES from a .smi/.txt (first token per line), a .csv (column ``smiles``, any case), an
    SDF/XYZ file, or a folder of such files."""
    from molgen.validation.structure import canonical_smiles

    path = Path(path)
    if not path.exists():
        raise DataError(f"reference file not found: {path}")
    if path.is_dir():
        out: set[str] = set()
        for f in sorted(path.iterdir()):
            if f.suffix.lower() in (".smi", ".txt", ".csv", ".sdf", ".xyz"):
                out |= smiles_from_file(f)
        return out
    suffix = path.suffix.lower()
    if suffix in (".smi", ".txt"):
        raw = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    elif suffix == ".csv":
        df = pd.read_csv(path)
        col = next((c for c in df.columns if c.lower() == "smiles"), None)
        if col is None:
            raise DataError(f"{path}: no 'smiles' column (columns: {', '.join(map(str, df.columns))})")
        raw = [str(s) for s in df[col].dropna()]
    elif suffix in (".sdf", ".xyz", ".mol"):
        from molgen.data.io import read_molecules
        from molgen.validation.structure import with_bonds

        mols, _ = read_molecules(path)
        raw = [s for s in (with_bonds(m)[0].smiles(largest_fragment=True) for m in mols) if s]
    else:
        raise DataError(f"{path}: unsupported reference format '{path.suffix}' (.smi, .txt, .csv, .sdf, .xyz)")
    return {c for c in (canonical_smiles(s) for s in raw) if c}


def load_reference(reference, n_molecules: int = 2000, seed: int = 0) -> Reference | None:
    """Resolve ``reference``: None, ``"qm9"`` (QM9 train SMILES + ``n_molecules`` train geometries), a path,
    a set/list of SMILES, or a list of :class:`Molecule`."""
    if reference is None or (isinstance(reference, str) and reference.lower() in ("", "none", "null")):
        return None
    if isinstance(reference, str) and reference.lower() == "train":
        raise DataError("reference=train means the pipeline's training SMILES: a pipeline stage passes them "
                        "as a set or a file; on the command line use reference=qm9 or reference=<file>")
    if isinstance(reference, str) and reference.lower() == "qm9":
        mols = qm9_molecules("train", n=n_molecules, seed=seed) if n_molecules else None
        return Reference("QM9 train (EDM split)", qm9_smiles("train"), mols)
    if isinstance(reference, (str, Path)):
        path = Path(reference)
        mols = None
        if path.suffix.lower() in (".sdf", ".xyz"):
            from molgen.data.io import read_molecules

            mols = read_molecules(path)[0]
        return Reference(str(path), smiles_from_file(path), mols)
    items = list(reference)
    if items and isinstance(items[0], Molecule):
        from molgen.validation.structure import canonical_smiles, with_bonds

        smi = {canonical_smiles(s) for s in (with_bonds(m)[0].smiles(True) for m in items) if s}
        return Reference("given molecules", {s for s in smi if s}, items)
    from molgen.validation.structure import canonical_smiles

    return Reference("given SMILES", {c for c in (canonical_smiles(str(s)) for s in items) if c})
