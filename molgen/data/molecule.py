"""The one molecule representation shared by every molecule pipeline and by validation.

A :class:`Molecule` is a plain record of NumPy arrays: positions (Angstrom), atomic numbers, formal charges,
a bond list with bond orders, and optional scalar properties. It converts losslessly to and from an RDKit
``Mol`` with one 3D conformer, which is the ecosystem object users hold; SDF/XYZ reading and writing live in
:mod:`molgen.data.io`.

Example:
    >>> from rdkit import Chem
    >>> from rdkit.Chem import AllChem
    >>> m = Chem.AddHs(Chem.MolFromSmiles("CCO")); _ = AllChem.EmbedMolecule(m, randomSeed=0)
    >>> mol = Molecule.from_rdkit(m)
    >>> mol.num_atoms, mol.num_bonds
    (9, 8)
    >>> Chem.MolToSmiles(Chem.RemoveHs(mol.to_rdkit()))
    'CCO'
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem
from rdkit.Geometry import Point3D

from molgen.errors import DataError

#: Element symbols indexed by atomic number (index 0 is a placeholder).
ELEMENTS: tuple[str, ...] = tuple(Chem.GetPeriodicTable().GetElementSymbol(z) if z else "*" for z in range(119))

#: Neutral valences (PropMolFlow's revised stability rule: explicit valence - formal charge must be one of them).
#: PropMolFlow lists H1 C4 N3 O2 F1; the other rows are the usual neutral valences (P, S, Se, halogens can be
#: hypervalent in neutral closed-shell molecules).
NEUTRAL_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,), "B": (3,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "Si": (4,), "P": (3, 5), "S": (2, 4, 6),
    "Cl": (1,), "Se": (2, 4, 6), "Br": (1,), "I": (1,), "As": (3, 5), "Al": (3,),
}


class BondOrder(enum.IntEnum):
    """Bond orders as stored in :attr:`Molecule.bond_orders`. Aromatic bonds count 1.5 towards valence."""

    SINGLE = 1
    DOUBLE = 2
    TRIPLE = 3
    AROMATIC = 4

    @property
    def valence(self) -> float:
        return 1.5 if self is BondOrder.AROMATIC else float(self.value)


_TO_RDKIT = {
    BondOrder.SINGLE: Chem.BondType.SINGLE,
    BondOrder.DOUBLE: Chem.BondType.DOUBLE,
    BondOrder.TRIPLE: Chem.BondType.TRIPLE,
    BondOrder.AROMATIC: Chem.BondType.AROMATIC,
}
_FROM_RDKIT = {v: k for k, v in _TO_RDKIT.items()}


@dataclass
class Molecule:
    """A 3D molecule with explicit atoms, formal charges and bonds.

    Attributes:
        positions: ``[N, 3]`` float64, Angstrom.
        atomic_numbers: ``[N]`` int64.
        formal_charges: ``[N]`` int64 (zeros when unknown).
        bonds: ``[E, 2]`` int64 atom index pairs with ``i < j``, each pair once.
        bond_orders: ``[E]`` int64 values of :class:`BondOrder`.
        properties: scalar properties in molgen's user units (see :mod:`molgen.data.qm9`), e.g. ``{"gap": 6.8}``.
        name: an identifier (data-set id, file name and record index, ...).
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    formal_charges: np.ndarray | None = None
    bonds: np.ndarray | None = None
    bond_orders: np.ndarray | None = None
    properties: dict[str, float] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        n = len(self.atomic_numbers)
        where = f" in {self.name}" if self.name else ""
        if self.positions.shape[0] != n:
            raise DataError(f"{n} atoms but {self.positions.shape[0]} positions{where}")
        if not np.isfinite(self.positions).all():
            raise DataError(f"non-finite (NaN/inf) coordinates{where}")
        if n and (self.atomic_numbers.min() < 1 or self.atomic_numbers.max() > 118):
            raise DataError(f"unknown element (atomic number {int(self.atomic_numbers.max())}){where}")
        self.formal_charges = (
            np.zeros(n, dtype=np.int64)
            if self.formal_charges is None
            else np.asarray(self.formal_charges, dtype=np.int64).reshape(-1)
        )
        if self.bonds is None or len(self.bonds) == 0:
            self.bonds = np.zeros((0, 2), dtype=np.int64)
            self.bond_orders = np.zeros(0, dtype=np.int64)
        else:
            bonds = np.sort(np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2), axis=1)
            orders = np.asarray(self.bond_orders, dtype=np.int64).reshape(-1)
            if len(orders) != len(bonds):
                raise DataError(f"{len(bonds)} bonds but {len(orders)} bond orders{where}")
            if (bonds[:, 0] == bonds[:, 1]).any() or bonds.min() < 0 or bonds.max() >= n:
                raise DataError(f"bond refers to a missing atom or to itself{where}")
            if len(np.unique(bonds, axis=0)) != len(bonds):
                raise DataError(f"the same atom pair is bonded twice{where}")
            if not np.isin(orders, [int(o) for o in BondOrder]).all():
                raise DataError(f"bond order {int(orders[~np.isin(orders, [int(o) for o in BondOrder])][0])} is not "
                                f"1 (single), 2 (double), 3 (triple) or 4 (aromatic){where}")
            self.bonds, self.bond_orders = bonds, orders

    # ------------------------------------------------------------------ basic views
    @property
    def num_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    @property
    def num_bonds(self) -> int:
        return int(len(self.bonds))

    @property
    def symbols(self) -> list[str]:
        return [ELEMENTS[z] for z in self.atomic_numbers]

    @property
    def net_charge(self) -> int:
        return int(self.formal_charges.sum())

    def bond_matrix(self) -> np.ndarray:
        """Dense ``[N, N]`` symmetric matrix of :class:`BondOrder` values (0 = no bond)."""
        a = np.zeros((self.num_atoms, self.num_atoms), dtype=np.int64)
        a[self.bonds[:, 0], self.bonds[:, 1]] = self.bond_orders
        a[self.bonds[:, 1], self.bonds[:, 0]] = self.bond_orders
        return a

    def valences(self) -> np.ndarray:
        """Sum of bond orders per atom (aromatic = 1.5), float ``[N]``."""
        v = np.zeros(self.num_atoms)
        contrib = np.where(self.bond_orders == BondOrder.AROMATIC, 1.5, self.bond_orders.astype(float))
        np.add.at(v, self.bonds[:, 0], contrib)
        np.add.at(v, self.bonds[:, 1], contrib)
        return v

    def centered(self) -> "Molecule":
        """A copy with zero centre of geometry (the convention of every molgen generator)."""
        return Molecule(
            self.positions - self.positions.mean(0, keepdims=True), self.atomic_numbers, self.formal_charges,
            self.bonds, self.bond_orders, dict(self.properties), self.name,
        )

    # ------------------------------------------------------------------ RDKit
    def to_rdkit(self, sanitize: bool = False) -> Chem.Mol:
        """An RDKit molecule with one conformer, explicit atoms, formal charges and bonds.

        Properties are stored as ``molgen_<name>`` double props. With ``sanitize=True`` RDKit sanitization runs
        and may raise; by default the molecule is returned unsanitized (validation decides what is valid).
        """
        rw = Chem.RWMol()
        for z, q in zip(self.atomic_numbers.tolist(), self.formal_charges.tolist()):
            atom = Chem.Atom(int(z))
            atom.SetFormalCharge(int(q))
            atom.SetNoImplicit(True)  # every H is explicit
            rw.AddAtom(atom)
        for (i, j), order in zip(self.bonds.tolist(), self.bond_orders.tolist()):
            bt = _TO_RDKIT[BondOrder(order)]
            rw.AddBond(int(i), int(j), bt)
            if bt == Chem.BondType.AROMATIC:
                rw.GetBondBetweenAtoms(int(i), int(j)).SetIsAromatic(True)
                rw.GetAtomWithIdx(int(i)).SetIsAromatic(True)
                rw.GetAtomWithIdx(int(j)).SetIsAromatic(True)
        conf = Chem.Conformer(self.num_atoms)
        for k, (x, y, z) in enumerate(self.positions.tolist()):
            conf.SetAtomPosition(k, Point3D(x, y, z))
        conf.Set3D(True)
        mol = rw.GetMol()
        mol.AddConformer(conf, assignId=True)
        if self.name:
            mol.SetProp("_Name", str(self.name))
        for key, value in self.properties.items():
            mol.SetDoubleProp(f"molgen_{key}", float(value))
        mol.UpdatePropertyCache(strict=False)
        if sanitize:
            Chem.SanitizeMol(mol)
        return mol

    @classmethod
    def from_rdkit(cls, mol: Chem.Mol, conf_id: int = -1, properties: dict[str, float] | None = None,
                   name: str | None = None) -> "Molecule":
        """Build from an RDKit molecule with a 3D conformer. Implicit hydrogens are made explicit (with
        coordinates) only if the molecule has none placed; aromatic bonds are kept as AROMATIC."""
        if mol is None:
            raise DataError("cannot convert an empty (None) RDKit molecule")
        if mol.GetNumConformers() == 0:
            label = name or (mol.GetProp("_Name") if mol.HasProp("_Name") else "")
            raise DataError(f"molecule {label + ' ' if label else ''}has no 3D conformer")
        if any(a.GetNumImplicitHs() for a in mol.GetAtoms()):
            mol = Chem.AddHs(mol, addCoords=True)
        pos = mol.GetConformer(conf_id).GetPositions()
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        q = [a.GetFormalCharge() for a in mol.GetAtoms()]
        bonds, orders = [], []
        for b in mol.GetBonds():
            bt = b.GetBondType()
            if bt not in _FROM_RDKIT:
                raise DataError(f"unsupported bond type {bt} in {name or 'molecule'}")
            bonds.append((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
            orders.append(int(_FROM_RDKIT[bt]))
        props = dict(properties or {})
        for key in mol.GetPropNames():
            if key.startswith("molgen_"):
                try:
                    props.setdefault(key[len("molgen_"):], float(mol.GetProp(key)))
                except ValueError:
                    pass
        if name is None and mol.HasProp("_Name") and mol.GetProp("_Name"):
            name = mol.GetProp("_Name")
        return cls(pos, z, q, np.array(bonds, dtype=np.int64).reshape(-1, 2), np.array(orders, dtype=np.int64),
                   props, name)

    def smiles(self, largest_fragment: bool = False) -> str | None:
        """Canonical SMILES (hydrogens implicit), or None if RDKit cannot sanitize the molecule."""
        try:
            mol = self.to_rdkit(sanitize=True)
            if largest_fragment:
                frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
                mol = max(frags, key=lambda m: m.GetNumAtoms())
            return Chem.MolToSmiles(Chem.RemoveHs(mol))
        except Exception:  # noqa: BLE001 -- any RDKit failure means "not valid"
            return None

    def __repr__(self) -> str:
        formula = "".join(f"{s}{c if c > 1 else ''}" for s, c in zip(*np.unique(self.symbols, return_counts=True)))
        return f"Molecule({formula}, atoms={self.num_atoms}, bonds={self.num_bonds}, charge={self.net_charge})"
