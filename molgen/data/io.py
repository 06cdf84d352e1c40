"""Read and write molecules as SDF and XYZ.

Readers skip records that cannot be used (a corrupted SDF block, NaN coordinates, an unknown element) and
count them with the reason in a :class:`ReadReport`; a missing file, a directory without molecule files or
a file with no readable record raises :class:`~molgen.errors.DataError` with one line naming the problem.

XYZ parsing is our own (not RDKit's ``MolFromXYZFile``) because QM9's original archive writes coordinates
such as ``2.1e-06`` and ``*^`` exponents that RDKit's reader rejects, and carries properties on line 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rdkit import Chem

from molgen.data.molecule import ELEMENTS, Molecule
from molgen.errors import DataError
from molgen.settings import quiet_rdkit

_SYMBOL_TO_Z = {s.lower(): z for z, s in enumerate(ELEMENTS) if z}
MOLECULE_SUFFIXES = (".sdf", ".mol", ".xyz")


@dataclass
class ReadReport:
    """What a reader did: how many records it read and which it skipped, with reasons."""

    read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        s = f"read {self.read} molecules"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, r in self.skipped:
                reasons[r] = reasons.get(r, 0) + 1
            s += f", skipped {self.n_skipped} (" + "; ".join(f"{n}x {r}" for r, n in reasons.items()) + ")"
        return s


def _parse_float(tok: str) -> float:
    return float(tok.replace("*^", "e").replace("D", "e").replace("d", "e"))


def parse_xyz_block(lines: list[str], where: str) -> tuple[Molecule, str]:
    """Parse one XYZ block (``n``, comment, ``n`` atom lines). Returns the molecule and the comment line."""
    try:
        n = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise DataError(f"{where}: first line is not an atom count") from None
    if len(lines) < n + 2:
        raise DataError(f"{where}: expected {n} atom lines, found {len(lines) - 2}")
    z, pos = [], []
    for k, line in enumerate(lines[2 : 2 + n]):
        tok = line.split()
        if len(tok) < 4:
            raise DataError(f"{where}: atom line {k + 1} has fewer than 4 fields")
        sym = tok[0]
        zz = int(sym) if sym.isdigit() else _SYMBOL_TO_Z.get(sym.lower())
        if zz is None or not 0 < zz < 119:
            raise DataError(f"{where}: unknown element '{sym}' on atom line {k + 1}")
        try:
            xyz = [_parse_float(t) for t in tok[1:4]]
        except ValueError:
            raise DataError(f"{where}: unparsable coordinate on atom line {k + 1}") from None
        z.append(zz)
        pos.append(xyz)
    return Molecule(np.array(pos), np.array(z), name=where), lines[1].rstrip("\n")


def _iter_xyz(path: Path, report: ReadReport) -> Iterator[Molecule]:
    lines = path.read_text().splitlines()
    i, k = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path.name} record {k + 1}"
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            report.skipped.append((where, "unparsable XYZ header"))
            break  # cannot find the next block reliably
        block = lines[i : i + n + 2]
        i += n + 2
        k += 1
        try:
            mol, _ = parse_xyz_block(block, where)
        except DataError as e:
            report.skipped.append((where, str(e).split(": ", 1)[-1]))
            continue
        report.read += 1
        yield mol


def _numeric_tags(mol: Chem.Mol) -> dict[str, float]:
    """SD tags whose value is a finite number become properties (e.g. a conditioning target)."""
    props = {}
    for key in mol.GetPropNames():
        if key.startswith("_"):
            continue
        try:
            value = float(mol.GetProp(key))
        except ValueError:
            continue
        if math.isfinite(value):
            props[key.removeprefix("molgen_")] = value
    return props


def _iter_sdf(path: Path, report: ReadReport) -> Iterator[Molecule]:
    # RDKit is quiet while it reads a record (its lines for corrupted records are counted in the report), not
    # while the caller's code runs between two records
    with quiet_rdkit():
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False, strictParsing=False)
        n = len(supplier)
    for k in range(n):
        where = f"{path.name} record {k + 1}"
        with quiet_rdkit():
            m = _read_sdf_record(supplier, k, where, report)
        if m is not None:
            report.read += 1
            yield m


def _read_sdf_record(supplier, k: int, where: str, report: ReadReport) -> Molecule | None:
    mol = supplier[k]
    if mol is None:
        report.skipped.append((where, "corrupted SDF record"))
        return None
    try:
        mol.UpdatePropertyCache(strict=False)
        name = mol.GetProp("_Name") if mol.HasProp("_Name") and mol.GetProp("_Name") else where
        m = Molecule.from_rdkit(mol, name=name, properties=_numeric_tags(mol))
    except DataError as e:
        report.skipped.append((where, str(e).split(" in ")[0]))
        return None
    if m.num_atoms == 0:
        report.skipped.append((where, "record without atoms"))
        return None
    return m


def iter_molecules(path: str | Path, report: ReadReport | None = None) -> Iterator[Molecule]:
    """Yield molecules from an SDF/MOL/XYZ file or a folder of them (sorted by name)."""
    report = report if report is not None else ReadReport()
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in MOLECULE_SUFFIXES) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise DataError(f"no .sdf/.xyz files in folder {path}")
    for f in files:
        suffix = f.suffix.lower()
        if suffix in (".sdf", ".mol"):
            yield from _iter_sdf(f, report)
        elif suffix == ".xyz":
            yield from _iter_xyz(f, report)
        else:
            raise DataError(f"{f}: unsupported format '{f.suffix}' (expected .sdf, .mol or .xyz)")


def read_molecules(path: str | Path) -> tuple[list[Molecule], ReadReport]:
    """Read every usable molecule from ``path``; raise DataError if none is usable."""
    report = ReadReport()
    mols = list(iter_molecules(path, report))
    if not mols:
        why = f" ({report.summary()})" if report.skipped else ""
        raise DataError(f"no readable molecule in {path}{why}")
    return mols, report


def sdf_writable(mol: Molecule) -> bool:
    """Whether RDKit can write ``mol`` as a mol block (it refuses e.g. an H atom with charge +3)."""
    try:
        with quiet_rdkit():
            Chem.MolToMolBlock(mol.to_rdkit(), kekulize=False)
        return True
    except RuntimeError:
        return False


def write_sdf(molecules: Iterable[Molecule], path: str | Path, extra: Iterable[dict] | None = None) -> Path:
    """Write molecules (with their properties as SD tags) to an SDF file, atomically.

    Molecules RDKit cannot write (chemically impossible atoms such as H with charge +3, which a generator can
    produce) are left out; check :func:`sdf_writable` first where the count matters.
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    extra_list = list(extra) if extra is not None else None
    with Chem.SDWriter(str(tmp)) as w:
        w.SetKekulize(False)
        for k, m in enumerate(molecules):
            if not sdf_writable(m):
                continue
            rd = m.to_rdkit()
            for key, value in m.properties.items():
                rd.ClearProp(f"molgen_{key}")  # one SD tag per property, written losslessly
                rd.SetProp(key, repr(float(value)))
            if extra_list is not None:
                for key, value in extra_list[k].items():
                    rd.SetProp(key, str(value))
            w.write(rd)
    tmp.replace(path)
    return path


def write_xyz(molecules: Iterable[Molecule], path: str | Path) -> Path:
    """Write a multi-frame XYZ file (one block per molecule)."""
    path = Path(path)
    out = []
    for m in molecules:
        out.append(str(m.num_atoms))
        out.append(m.name or "")
        for s, (x, y, z) in zip(m.symbols, m.positions):
            out.append(f"{s:<2s} {x: .6f} {y: .6f} {z: .6f}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(out) + "\n")
    tmp.replace(path)
    return path


