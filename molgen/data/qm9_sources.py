"""Readers for the three sources of QM9 (Ramakrishnan et al., Sci. Data 2014, https://doi.org/10.1038/sdata.2014.22)
and the six properties molgen conditions on, converted to user units.

Sources (all return a :class:`QM9Records` table in the source's file order):

* ``qm9pack``: the CSV files of the PyPI package ``qm9pack`` (130,831 molecules, the uncharacterized 3,054
  already removed). ``import qm9pack`` fails on recent setuptools (it imports ``pkg_resources``), so the
  package is located with :func:`importlib.util.find_spec` and its CSVs are read with pandas.
* ``xyz_archive``: the original figshare archive ``dsgdb9nsd.xyz.tar.bz2`` or its extracted folder of
  ``dsgdb9nsd_*.xyz`` files. Line 2 holds ``gdb <index> A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv``;
  atom lines carry a Mulliken charge as 5th field and may write exponents as ``*^``; then come harmonic
  frequencies, the GDB-17 and B3LYP SMILES, and the InChIs.
* ``embedded``: ``data/qm9_subset/qm9_subset.csv.gz`` in the repository, qm9pack's CSV format plus the EDM
  split of each molecule (see ``data/qm9_subset/PROVENANCE.md``).

Corrupted records (a malformed CSV line, coordinates that do not parse, an atom count that does not match)
are skipped and counted in :attr:`QM9Records.skipped`; missing files raise :class:`~molgen.errors.DataError`.
"""
from __future__ import annotations

import importlib.resources

import gzip
import importlib.util
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.data.io import parse_xyz_block
from molgen.errors import DataError

#: 1 Hartree in eV (CODATA 2018).
HARTREE_TO_EV = 27.211386245988
#: Number of molecules in the original GDB-9 archive, and the size after removing the uncharacterized ones.
N_GDB9, N_QM9 = 133885, 130831

#: Repository folder of the embedded subset and the uncharacterized list.
EMBEDDED_DIR = Path(str(importlib.resources.files("molgen.embedded"))) / "qm9_subset"
EMBEDDED_CSV = "qm9_subset.csv.gz"
UNCHARACTERIZED_TXT = "uncharacterized_indices.txt"

FIGSHARE_ARCHIVE_URL = "https://springernature.figshare.com/ndownloader/files/3195389"
FIGSHARE_UNCHARACTERIZED_URL = "https://springernature.figshare.com/ndownloader/files/3195404"


@dataclass(frozen=True)
class PropertySpec:
    """One QM9 property as molgen exposes it.

    Attributes:
        name: molgen's key (``Molecule.properties[name]``, ``condition=<name>``).
        unit: the user unit after conversion.
        description: what the number is.
        csv_column: qm9pack / embedded CSV column.
        xyz_field: position of the value on line 2 of an archive xyz file (0 = the "gdb" tag).
        factor: multiply the stored value by this to get user units.
    """

    name: str
    unit: str
    description: str
    csv_column: str
    xyz_field: int
    factor: float = 1.0


#: The six conditioning properties of EDM / PropMolFlow, in molgen's user units.
QM9_PROPERTIES: dict[str, PropertySpec] = {
    "alpha": PropertySpec("alpha", "Bohr^3", "isotropic polarizability", "Polarizability_bohr3", 6),
    "gap": PropertySpec("gap", "eV", "HOMO-LUMO gap (Hartree x 27.211386)", "HOMO_LUMO_gap_au", 9, HARTREE_TO_EV),
    "homo": PropertySpec("homo", "eV", "HOMO energy (Hartree x 27.211386)", "HOMO_au", 7, HARTREE_TO_EV),
    "lumo": PropertySpec("lumo", "eV", "LUMO energy (Hartree x 27.211386)", "LUMO_au", 8, HARTREE_TO_EV),
    "mu": PropertySpec("mu", "D", "dipole moment", "Dipole_debye", 5),
    "Cv": PropertySpec("Cv", "cal/(mol K)", "heat capacity at 298.15 K", "Heatcapacity_Cv_cal_mol_K", 16),
}
PROPERTY_NAMES: tuple[str, ...] = tuple(QM9_PROPERTIES)

_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_CSV_COLUMNS = ["XYZ_file", "Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"]


@dataclass
class QM9Records:
    """Raw QM9 molecules of one source, before perception, in file order.

    Attributes:
        index: GDB-9 index (1-based, the number in ``dsgdb9nsd_000001``) per molecule.
        smiles: the data set's SMILES (GDB-17 SMILES; qm9pack's ``SMILES`` column) per molecule.
        atomic_numbers: ``[N_i]`` int64 arrays.
        positions: ``[N_i, 3]`` float64 arrays, Angstrom.
        properties: ``[M, 6]`` float64 in user units, columns :data:`PROPERTY_NAMES`.
        skipped: ``(where, reason)`` of every record that could not be read.
        extra: additional per-molecule columns of the source (``edm_split``, ``edm_half`` for the subset).
        note: a remark about the source for the report (e.g. which uncharacterized list was used).
    """

    index: list[int] = field(default_factory=list)
    smiles: list[str] = field(default_factory=list)
    atomic_numbers: list[np.ndarray] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    properties: np.ndarray = field(default_factory=lambda: np.zeros((0, len(PROPERTY_NAMES))))
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)
    note: str = ""

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def name_of(index: int) -> str:
        """The QM9 id of a GDB-9 index (``dsgdb9nsd_000003`` for water)."""
        return f"dsgdb9nsd_{index:06d}"


# ----------------------------------------------------------------------------------------------- CSV
def qm9pack_csv_paths(folder: str | Path | None = None) -> list[Path]:
    """The four-part qm9pack CSVs (``qm9_part1..3.csv``) in ``folder`` or in the installed package."""
    if folder is None:
        spec = importlib.util.find_spec("qm9pack")  # locate only: importing qm9pack needs pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise DataError("data.source=qm9pack needs the PyPI package qm9pack: pip install qm9pack "
                            "(or use data.source=embedded, or data.source=xyz_archive data.path=...)")
        folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    folder = Path(folder)
    paths = [folder / f"qm9_part{k}.csv" for k in (1, 2, 3)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DataError(f"qm9pack CSV not found: {missing[0]}")
    return paths


def _parse_floats(text: str) -> np.ndarray:
    # qm9pack writes python lists such as "[[0.5,0.,1.],[...]]": numbers like "0." are not JSON, and
    # ast.literal_eval is 4x slower; splitting on commas and letting float() parse each token is fastest.
    return np.array(text.replace("[", "").replace("]", "").replace("*^", "e").split(","), dtype=np.float64)


def _parse_symbols(text: str) -> np.ndarray:
    return np.array([_SYMBOL_TO_Z[s.strip().strip("'\"")] for s in text.strip()[1:-1].split(",")],
                    dtype=np.int64)


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            n += block.count(b"\n")
    return n


def read_qm9_csv(paths: list[Path], max_molecules: int | None = None,
                 extra_columns: tuple[str, ...] = ()) -> QM9Records:
    """Read qm9pack-format CSV files (plain or ``.gz``), in order, up to ``max_molecules`` molecules.

    Args:
        paths: CSV files with qm9pack's columns (``Index``, ``SMILES``, ``N_atoms``, ``Elements``, ``XYZ_Ang``
            and the property columns of :data:`QM9_PROPERTIES`).
        max_molecules: stop after this many readable molecules (None = all).
        extra_columns: further columns to keep in :attr:`QM9Records.extra` (as strings).
    """
    rec = QM9Records(extra={c: [] for c in extra_columns})
    props: list[np.ndarray] = []
    prop_cols = [s.csv_column for s in QM9_PROPERTIES.values()]
    factors = np.array([s.factor for s in QM9_PROPERTIES.values()])
    for path in paths:
        if max_molecules is not None and len(rec) >= max_molecules:
            break
        if not path.exists():
            raise DataError(f"QM9 CSV not found: {path}")
        nrows = None if max_molecules is None else max_molecules - len(rec) + 1000  # margin for bad rows
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip", nrows=nrows,
                             usecols=lambda c: c in set(_CSV_COLUMNS + prop_cols + list(extra_columns)))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable QM9 CSV ({' '.join(str(e).split())[:100]})") from None
        need = [c for c in ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"] + prop_cols + list(extra_columns)
                if c not in df.columns]
        if need:
            raise DataError(f"{path}: not a QM9 CSV in qm9pack format (missing column '{need[0]}')")
        if nrows is None:
            n_bad = _count_lines(path) - 1 - len(df)  # lines dropped by on_bad_lines="skip"
            rec.skipped += [(path.name, "malformed CSV line (wrong number of fields)")] * max(n_bad, 0)
        values = df[prop_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64) * factors
        for k, row in enumerate(df.itertuples(index=False)):
            if max_molecules is not None and len(rec) >= max_molecules:
                break
            where = f"{path.name} line {k + 2}"
            try:
                index = int(row.Index)
                z = _parse_symbols(row.Elements)
                pos = _parse_floats(row.XYZ_Ang)
                if len(z) != int(row.N_atoms) or pos.size != 3 * len(z):
                    raise ValueError("atom count does not match the elements/coordinates")
                if not np.isfinite(pos).all() or not np.isfinite(values[k]).all():
                    raise ValueError("non-numeric or missing coordinate/property")
                if not row.SMILES:
                    raise ValueError("empty SMILES")
            except (ValueError, KeyError, AttributeError) as e:
                rec.skipped.append((where, f"corrupted row: {str(e).split(':')[0][:60]}"))
                continue
            rec.index.append(index)
            rec.smiles.append(row.SMILES)
            rec.atomic_numbers.append(z)
            rec.positions.append(pos.reshape(-1, 3))
            props.append(values[k])
            for c in extra_columns:
                rec.extra[c].append(getattr(row, c))
    rec.properties = np.array(props).reshape(-1, len(PROPERTY_NAMES))
    return rec


# ------------------------------------------------------------------------------------------ archive
def parse_qm9_xyz(text: str, where: str) -> tuple[int, str, np.ndarray, np.ndarray, np.ndarray]:
    """Parse one ``dsgdb9nsd_*.xyz`` file: ``(index, gdb_smiles, atomic_numbers, positions, properties)``.

    Properties are in user units (columns :data:`PROPERTY_NAMES`). Raises DataError on a malformed file.
    """
    lines = text.splitlines()
    mol, comment = parse_xyz_block(lines, where)  # handles "*^" exponents and the 5th (Mulliken) column
    fields = comment.split()
    if len(fields) < 17 or fields[0] != "gdb":
        raise DataError(f"{where}: line 2 is not a QM9 property line ('gdb <index> A B C mu ...')")
    try:
        index = int(fields[1])
        values = np.array([float(fields[s.xyz_field].replace("*^", "e")) * s.factor
                           for s in QM9_PROPERTIES.values()])
    except ValueError:
        raise DataError(f"{where}: unparsable property on line 2") from None
    n = mol.num_atoms
    if len(lines) < n + 4 or not lines[n + 3].split():
        raise DataError(f"{where}: SMILES line missing")
    return index, lines[n + 3].split()[0], mol.atomic_numbers, mol.positions, values


def read_uncharacterized(path: str | Path) -> set[int]:
    """GDB-9 indices listed in figshare's ``uncharacterized.txt`` (or one index per line)."""
    out = set()
    for line in Path(path).read_text().splitlines():
        tok = line.split()
        if tok and tok[0].isdigit():
            out.add(int(tok[0]))
    return out


def embedded_uncharacterized() -> set[int]:
    """The 3,054 uncharacterized indices shipped with molgen (the complement of qm9pack's 130,831)."""
    return read_uncharacterized(EMBEDDED_DIR / UNCHARACTERIZED_TXT)


def read_xyz_archive(path: str | Path, max_molecules: int | None = None) -> QM9Records:
    """Read the original QM9 archive (``.tar.bz2``) or a folder of ``dsgdb9nsd_*.xyz`` files.

    Molecules listed in ``uncharacterized.txt`` next to the archive (or inside the folder) are excluded,
    as in EDM; without such a file molgen's embedded list of 3,054 indices is used.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"QM9 xyz archive not found: {path}")
    folder = path if path.is_dir() else path.parent
    unchar_file = folder / "uncharacterized.txt"
    if unchar_file.exists():
        excluded, note = read_uncharacterized(unchar_file), f"uncharacterized list: {unchar_file}"
    else:
        excluded, note = embedded_uncharacterized(), "uncharacterized list: molgen's embedded copy"
    rec = QM9Records(note=note)
    props: list[np.ndarray] = []
    n_excluded = 0

    def members():
        if path.is_dir():
            files = sorted(path.glob("*.xyz"))
            if not files:
                raise DataError(f"no .xyz files in QM9 archive folder {path}")
            for f in files:
                yield f.name, f.read_text()
        else:
            try:
                with tarfile.open(path, "r:*") as tar:
                    for m in tar:
                        if m.isfile() and m.name.endswith(".xyz"):
                            yield Path(m.name).name, tar.extractfile(m).read().decode("utf-8", "replace")
            except (tarfile.TarError, EOFError, OSError) as e:
                raise DataError(f"{path}: not a readable tar archive ({e})") from None

    last = 0
    for name, text in members():
        if max_molecules is not None and len(rec) >= max_molecules:
            break
        try:
            index, smiles, z, pos, values = parse_qm9_xyz(text, name)
        except DataError as e:
            rec.skipped.append((name, str(e).split(": ", 1)[-1]))
            continue
        if index in excluded:
            n_excluded += 1
            continue
        if index < last and "not in index order" not in rec.note:
            rec.note += "; archive members are not in index order"
        last = index
        rec.index.append(index)
        rec.smiles.append(smiles)
        rec.atomic_numbers.append(z)
        rec.positions.append(pos)
        props.append(values)
    rec.properties = np.array(props).reshape(-1, len(PROPERTY_NAMES))
    rec.note += f"; {n_excluded} uncharacterized molecules excluded"
    return rec


def download_qm9_archive(dest: str | Path) -> Path:
    """Download ``dsgdb9nsd.xyz.tar.bz2`` (~86 MB) and ``uncharacterized.txt`` from figshare into ``dest``.

    Files already present are kept. Returns the archive path, usable as ``data.source=xyz_archive
    data.path=<returned path>``. Needs internet; molgen's tests never call it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    targets = [(FIGSHARE_ARCHIVE_URL, dest / "dsgdb9nsd.xyz.tar.bz2"),
               (FIGSHARE_UNCHARACTERIZED_URL, dest / "uncharacterized.txt")]
    for url, target in targets:
        if target.exists():
            continue
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as e:
            raise DataError(f"download of {url} failed: {e}") from None
        tmp.replace(target)
    return targets[0][1]


def read_embedded(folder: str | Path | None = None, max_molecules: int | None = None) -> QM9Records:
    """Read the embedded subset (``data/qm9_subset/qm9_subset.csv.gz``) with its EDM split columns."""
    path = Path(folder or EMBEDDED_DIR) / EMBEDDED_CSV
    if not path.exists():
        raise DataError(f"embedded QM9 subset not found: {path} (regenerate with scripts/prepare_qm9_subset.py)")
    return read_qm9_csv([path], max_molecules, extra_columns=("edm_split", "edm_half"))


__all__ = ["QM9_PROPERTIES", "PROPERTY_NAMES", "PropertySpec", "QM9Records", "HARTREE_TO_EV", "N_GDB9", "N_QM9",
           "read_qm9_csv", "qm9pack_csv_paths", "read_xyz_archive", "parse_qm9_xyz", "read_embedded",
           "download_qm9_archive", "read_uncharacterized", "embedded_uncharacterized"]
