"""MoleculeNet classification sets: CSV loader, Bemis-Murcko scaffold split, and Hu et al. 2020 2D features.

The eight classification benchmarks of Hu et al. 2020 ("Strategies for Pre-training Graph Neural Networks",
https://arxiv.org/abs/1905.12265) and GraphMVP (https://arxiv.org/abs/2110.07728): BBBP, Tox21, ToxCast,
SIDER, ClinTox, MUV, HIV, BACE. The CSVs are the standard MoleculeNet files (``.csv`` or ``.csv.gz``); tasks
are read by column name (the MUV copy has ``smiles`` first and no ``mol_id``; BACE's SMILES column is ``mol``).

* Labels are 0/1; an empty cell is a missing label (NaN in :attr:`MoleculeNetData.labels`, masked in the loss).
* Rows whose SMILES RDKit cannot parse are skipped and counted (:attr:`MoleculeNetData.skipped`).
* :func:`scaffold_split` is Hu et al.'s deterministic split: Bemis-Murcko scaffolds with chirality, scaffold
  sets sorted largest first (ties: the smaller first index first) and filled into train, then valid, then test.
* :func:`smiles_to_graph` gives Hu et al.'s "simple" features: atom = (atomic number, chirality tag),
  bond = (bond type, bond direction), both directions of every bond.

Example:
    >>> g = smiles_to_graph("C[C@H](N)O")
    >>> g.x.shape, g.edge_index.shape, g.edge_attr.shape
    (torch.Size([4, 2]), torch.Size([2, 6]), torch.Size([6, 2]))
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold
from torch_geometric.data import Data

from molgen.data.embedded import embedded_dir
from molgen.errors import DataError
from molgen.settings import quiet_rdkit

# --------------------------------------------------------------------------------------------- features
#: Atom vocabulary of Hu et al.: atomic numbers 1..118 -> 0..117, index 119 is the AttrMask token; a dummy
#: atom ``*`` (Z = 0, e.g. one ClinTox SMILES) gets the otherwise unused index 118.
NUM_ATOM_TYPES = 120
MASK_ATOM_INDEX = 119
OTHER_ATOM_INDEX = 118
#: Chirality tags: unspecified, CW, CCW, other (newer RDKit tags map to "other").
NUM_CHIRALITY_TAGS = 4
#: Bond types: single, double, triple, aromatic, self-loop (added by the GIN layer), mask.
NUM_BOND_TYPES = 6
SELF_LOOP_BOND_INDEX = 4
MASK_BOND_INDEX = 5
#: Bond directions: none, end-upright, end-downright.
NUM_BOND_DIRECTIONS = 3

#: The sizes a GIN over these features needs (``molgen.nn.gin.GIN(**GIN_FEATURES)``).
GIN_FEATURES = dict(num_atom_types=NUM_ATOM_TYPES, num_chirality_tags=NUM_CHIRALITY_TAGS,
                    num_bond_types=NUM_BOND_TYPES, num_bond_directions=NUM_BOND_DIRECTIONS,
                    self_loop_bond_index=SELF_LOOP_BOND_INDEX)

_CHIRALITY = {Chem.ChiralType.CHI_UNSPECIFIED: 0, Chem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
              Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 2}
_BOND_TYPE = {Chem.BondType.SINGLE: 0, Chem.BondType.DOUBLE: 1, Chem.BondType.TRIPLE: 2, Chem.BondType.AROMATIC: 3}
_BOND_DIR = {Chem.BondDir.NONE: 0, Chem.BondDir.ENDUPRIGHT: 1, Chem.BondDir.ENDDOWNRIGHT: 2}


def mol_to_graph(mol: Chem.Mol) -> Data:
    """Hu et al. 2020 "simple" 2D features of an RDKit molecule (the atoms it holds, usually no H).

    PyG's ``from_smiles`` encodes nine atom features; GraphMVP's classification encoder uses Hu et al.'s
    two, so they are written here.

    Shapes:
        x ``[N, 2]`` long: (atomic number - 1, chirality tag); edge_index ``[2, 2B]``; edge_attr ``[2B, 2]``
        long: (bond type, bond direction); every bond appears in both directions, a bond-free molecule has
        ``E = 0``.
    """
    x = torch.tensor([[a.GetAtomicNum() - 1 if 1 <= a.GetAtomicNum() <= 118 else OTHER_ATOM_INDEX,
                       _CHIRALITY.get(a.GetChiralTag(), 3)] for a in mol.GetAtoms()], dtype=torch.long).reshape(-1, 2)
    src, dst, attr = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        feat = [_BOND_TYPE.get(b.GetBondType(), 0), _BOND_DIR.get(b.GetBondDir(), 0)]
        src += [i, j]
        dst += [j, i]
        attr += [feat, feat]
    return Data(x=x, edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                edge_attr=torch.tensor(attr, dtype=torch.long).reshape(-1, 2), num_nodes=x.shape[0])


def parse_smiles(smiles: str) -> Chem.Mol | None:
    """RDKit molecule of ``smiles`` or None (RDKit's own error lines are silenced)."""
    with quiet_rdkit():
        return Chem.MolFromSmiles(str(smiles).strip()) if isinstance(smiles, str) and smiles.strip() else None


def smiles_to_graph(smiles: str) -> Data:
    """:func:`mol_to_graph` of a SMILES string; raises DataError when RDKit cannot parse it."""
    mol = parse_smiles(smiles)
    if mol is None:
        raise DataError(f"SMILES {smiles!r} cannot be parsed by RDKit")
    return mol_to_graph(mol)


# --------------------------------------------------------------------------------------------- data sets
@dataclass(frozen=True)
class MoleculeNetSpec:
    """Where a benchmark's SMILES and labels are in its standard CSV."""

    file: str
    smiles_column: str
    tasks: tuple[str, ...] | None = None  # None: every column except the SMILES column and ``exclude``
    exclude: tuple[str, ...] = ()


TOX21_TASKS = ("NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma", "SR-ARE",
               "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53")
MUV_TASKS = tuple(f"MUV-{k}" for k in (466, 548, 600, 644, 652, 689, 692, 712, 713, 733, 737, 810, 832, 846, 852,
                                       858, 859))
DATASETS: dict[str, MoleculeNetSpec] = {
    "bbbp": MoleculeNetSpec("BBBP.csv", "smiles", ("p_np",)),
    "tox21": MoleculeNetSpec("tox21.csv", "smiles", TOX21_TASKS),
    "toxcast": MoleculeNetSpec("toxcast_data.csv", "smiles"),
    "sider": MoleculeNetSpec("sider.csv", "smiles"),
    "clintox": MoleculeNetSpec("clintox.csv", "smiles", ("FDA_APPROVED", "CT_TOX")),
    "muv": MoleculeNetSpec("muv.csv", "smiles", MUV_TASKS),
    "hiv": MoleculeNetSpec("HIV.csv", "smiles", ("HIV_active",)),
    "bace": MoleculeNetSpec("bace.csv", "mol", ("Class",)),
}
#: The eight classification sets of Hu et al. / GraphMVP, in the paper's table order.
BENCHMARK = ("bbbp", "tox21", "toxcast", "sider", "clintox", "muv", "hiv", "bace")
#: The embedded copy (``embedded_dir(EMBEDDED)``): BBBP and ClinTox, see its PROVENANCE.md.
EMBEDDED = "moleculenet"


def find_csv(name: str, root: str | Path | None = None) -> Path:
    """The CSV of benchmark ``name`` in ``root`` (``.csv`` or ``.csv.gz``, case-insensitive file name)."""
    if name not in DATASETS:
        raise DataError(f"unknown MoleculeNet set '{name}' (choose from {', '.join(DATASETS)})")
    folder = Path(root).expanduser() if root else embedded_dir(EMBEDDED)
    if not folder.is_dir():
        raise DataError(f"MoleculeNet folder not found: {folder}")
    stem = DATASETS[name].file.lower()
    for p in sorted(folder.iterdir()):
        if p.name.lower() in (stem, stem + ".gz"):
            return p
    where = "the embedded data (only bbbp, clintox); set data.root=FOLDER" if not root else str(folder)
    raise DataError(f"{name}: {DATASETS[name].file}[.gz] not found in {where}")


@dataclass
class MoleculeNetData:
    """One MoleculeNet set after parsing.

    Attributes:
        name: benchmark name (``bbbp``) or the CSV's file name.
        smiles: ``[n]`` the SMILES of the rows RDKit parsed, in file order.
        labels: ``[n, T]`` float32, 0/1, NaN where the label is missing.
        tasks: ``T`` task (column) names.
        rows: ``[n]`` 0-based CSV row of each kept molecule.
        skipped: ``(row, smiles)`` of rows skipped because RDKit cannot parse the SMILES.
        dropped_tasks: task columns without any label (left out when tasks were not named explicitly).
    """

    name: str
    smiles: list[str]
    labels: np.ndarray
    tasks: tuple[str, ...]
    rows: np.ndarray
    skipped: list[tuple[int, str]] = field(default_factory=list)
    dropped_tasks: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.smiles)

    def summary(self) -> dict:
        return {"molecules": len(self), "tasks": len(self.tasks), "unparsable_skipped": len(self.skipped),
                "missing_label_fraction": float(np.isnan(self.labels).mean()) if self.labels.size else 0.0}


def load_moleculenet(name: str | None = None, root: str | Path | None = None, *, path: str | Path | None = None,
                     tasks: Sequence[str] | None = None, smiles_column: str | None = None,
                     max_rows: int | None = None) -> MoleculeNetData:
    """Read a MoleculeNet classification CSV.

    Args:
        name: benchmark name (a key of :data:`DATASETS`); its file is looked up in ``root``.
        root: folder with the standard CSVs; None = the embedded ``data/moleculenet`` (BBBP, ClinTox).
        path: a CSV file instead of ``name``/``root`` (then ``tasks`` and ``smiles_column`` are needed unless
            ``name`` is also given).
        tasks: task columns to read (default: the benchmark's tasks).
        smiles_column: the SMILES column (default: the benchmark's).
        max_rows: read only the first N rows (deterministic subsets of the large sets).

    Raises:
        DataError: missing file or columns, a task without labels, non-binary labels, no parsable SMILES.
    """
    import pandas as pd

    spec = DATASETS.get(name) if name else None
    if name and spec is None:
        raise DataError(f"unknown MoleculeNet set '{name}' (choose from {', '.join(DATASETS)})")
    csv = Path(path).expanduser() if path else find_csv(name, root)
    if not csv.is_file():
        raise DataError(f"MoleculeNet CSV not found: {csv}")
    label = name or csv.name
    try:
        df = pd.read_csv(csv, nrows=max_rows)
    except Exception as e:  # noqa: BLE001 -- pandas raises many types for a broken file
        raise DataError(f"{csv}: cannot be read as CSV ({str(e).splitlines()[0][:150]})") from None
    smiles_column = smiles_column or (spec.smiles_column if spec else "smiles")
    if smiles_column not in df.columns:
        raise DataError(f"{csv}: no SMILES column '{smiles_column}' (columns: {', '.join(map(str, df.columns[:8]))})")
    explicit = tasks is not None or (spec is not None and spec.tasks is not None)
    if tasks is None:
        if spec is not None and spec.tasks is not None:
            tasks = spec.tasks
        else:
            tasks = [c for c in df.columns if c != smiles_column and c not in (spec.exclude if spec else ())]
    tasks = tuple(str(t) for t in tasks)
    missing = [t for t in tasks if t not in df.columns]
    if missing:
        raise DataError(f"{csv}: label column(s) {', '.join(repr(t) for t in missing[:5])} not found "
                        f"(columns: {', '.join(map(str, df.columns[:8]))}{', ...' if len(df.columns) > 8 else ''})")
    if not tasks:
        raise DataError(f"{csv}: no label columns besides '{smiles_column}'")
    labels = df[list(tasks)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    raw = df[list(tasks)].to_numpy()
    bad = ~np.isnan(labels) & ~np.isin(labels, (0.0, 1.0))
    bad |= np.isnan(labels) & pd.notna(raw)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise DataError(f"{csv}: row {r + 2}, column '{tasks[c]}': label {str(raw[r, c])!r} is not 0/1 or empty")

    keep, smiles, skipped = [], [], []
    for i, s in enumerate(df[smiles_column].tolist()):
        if parse_smiles(s) is None:
            skipped.append((i, str(s)))
        else:
            keep.append(i)
            smiles.append(str(s).strip())
    if not keep:
        raise DataError(f"{csv}: none of the {len(df)} SMILES in column '{smiles_column}' can be parsed by RDKit")
    labels = labels[keep]
    counts = (~np.isnan(labels)).sum(0)
    empty = [t for t, n in zip(tasks, counts) if n == 0]
    dropped: tuple[str, ...] = ()
    if empty and (explicit or len(empty) == len(tasks)):
        raise DataError(f"{csv}: task column '{empty[0]}' has no labels" + (f" (and {len(empty) - 1} more)"
                                                                           if len(empty) > 1 else ""))
    if empty:  # columns found by elimination that hold no label at all: not tasks
        dropped = tuple(empty)
        labels = labels[:, counts > 0]
        tasks = tuple(t for t, n in zip(tasks, counts) if n > 0)
    return MoleculeNetData(label, smiles, labels, tasks, np.asarray(keep), skipped, dropped)


# --------------------------------------------------------------------------------------------- split
def murcko_scaffold(smiles: str, include_chirality: bool = True) -> str:
    """Bemis-Murcko scaffold SMILES (with stereo by default, as Hu et al.); '' for acyclic molecules."""
    mol = parse_smiles(smiles)
    if mol is None:
        raise DataError(f"SMILES {smiles!r} cannot be parsed by RDKit")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_split(smiles: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hu et al. 2020's deterministic scaffold split (GraphMVP's ``scaffold_split``).

    Molecules are grouped by Bemis-Murcko scaffold (chirality included); the groups are sorted by size,
    largest first (ties: the group whose first molecule comes later in the file first, as in the reference
    ``sorted(..., key=(len, first index), reverse=True)``), and each group goes whole into train while train
    stays within ``fractions[0] * n``, else into valid while train + valid stay within ``(f0 + f1) * n``,
    else into test. No scaffold is shared between splits; the result does not depend on any seed.

    Returns:
        ``(train, valid, test)`` sorted index arrays into ``smiles``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions {fractions} do not sum to 1")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[murcko_scaffold(s)].append(i)
    ordered = sorted(groups.values(), key=lambda idx: (len(idx), idx[0]), reverse=True)
    n = len(smiles)
    train_cut, valid_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for idx in ordered:
        if len(train) + len(idx) > train_cut:
            if len(train) + len(valid) + len(idx) > valid_cut:
                test += idx
            else:
                valid += idx
        else:
            train += idx
    return tuple(np.array(sorted(s), dtype=np.int64) for s in (train, valid, test))  # type: ignore[return-value]


def labelled_graphs(data: MoleculeNetData, indices: Sequence[int] | None = None) -> list[Data]:
    """2D graphs of ``data`` (rows ``indices``) with ``y [1, T]`` (NaN = missing) and ``idx``."""
    idx = range(len(data)) if indices is None else indices
    out = []
    for i in idx:
        g = smiles_to_graph(data.smiles[i])
        g.y = torch.from_numpy(data.labels[i : i + 1].copy())
        g.idx = int(i)
        out.append(g)
    return out
