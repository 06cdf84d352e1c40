"""Molecules as PyG graphs for the 3D generators, and a compact on-disk data set of them.

A model sees a molecule as a :class:`torch_geometric.data.Data` with

* ``pos`` ``[N, 3]`` float32, zero centre of geometry (Angstrom),
* ``atom_type`` ``[N]`` long, index into :attr:`MoleculeVocab.elements`,
* ``charge`` ``[N]`` long, index into :attr:`MoleculeVocab.charges`,
* ``bond_index`` ``[2, E]`` long (``i < j``, each bond once) and ``bond_type`` ``[E]`` long in 1..4
  (:class:`~molgen.data.molecule.BondOrder`; 0 is reserved for "no bond" in dense edge tensors),
* ``y`` ``[1, P]`` float32, the properties named by the data set (NaN where missing).

PyG batches these (``bond_index`` is offset per molecule because its name contains "index").
:class:`GraphDataset` stores many molecules as a few concatenated tensors in one ``.pt`` file that loads
with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from molgen.data.molecule import ELEMENTS, Molecule
from molgen.errors import DataError


@dataclass(frozen=True)
class MoleculeVocab:
    """Which elements and formal charges a model knows (QM9's by default)."""

    elements: tuple[int, ...] = (1, 6, 7, 8, 9)  # H C N O F
    charges: tuple[int, ...] = (-2, -1, 0, 1, 2, 3)
    n_bond_types: int = 5  # none, single, double, triple, aromatic

    @property
    def n_atom_types(self) -> int:
        return len(self.elements)

    @property
    def n_charges(self) -> int:
        return len(self.charges)

    def as_dict(self) -> dict:
        return {"elements": list(self.elements), "charges": list(self.charges), "n_bond_types": self.n_bond_types}

    @classmethod
    def from_dict(cls, d: dict) -> "MoleculeVocab":
        return cls(tuple(d["elements"]), tuple(d["charges"]), int(d.get("n_bond_types", 5)))

    def check(self, mol: Molecule) -> str | None:
        """Why ``mol`` cannot be encoded with this vocabulary, or None."""
        bad = sorted({int(z) for z in mol.atomic_numbers} - set(self.elements))
        if bad:
            return f"element {', '.join(ELEMENTS[z] for z in bad)} not in the model's vocabulary"
        badq = sorted({int(q) for q in mol.formal_charges} - set(self.charges))
        if badq:
            return f"formal charge {badq[0]:+d} not in the model's vocabulary"
        return None


def to_graph(mol: Molecule, vocab: MoleculeVocab, property_names: tuple[str, ...] = ()) -> Data:
    """Encode a molecule (centred) as a PyG ``Data``; raises DataError if the vocabulary cannot hold it."""
    why = vocab.check(mol)
    if why:
        raise DataError(f"{mol.name or 'molecule'}: {why}")
    z_index = {z: k for k, z in enumerate(vocab.elements)}
    q_index = {q: k for k, q in enumerate(vocab.charges)}
    pos = mol.positions - mol.positions.mean(0, keepdims=True)
    y = [mol.properties.get(p, float("nan")) for p in property_names]
    return Data(
        pos=torch.tensor(pos, dtype=torch.float32),
        atom_type=torch.tensor([z_index[int(z)] for z in mol.atomic_numbers], dtype=torch.long),
        charge=torch.tensor([q_index[int(q)] for q in mol.formal_charges], dtype=torch.long),
        bond_index=torch.tensor(mol.bonds.T.copy(), dtype=torch.long).reshape(2, -1),
        bond_type=torch.tensor(mol.bond_orders, dtype=torch.long),
        y=torch.tensor([y], dtype=torch.float32).reshape(1, len(property_names)),
        num_nodes=mol.num_atoms,
    )


def from_dense(pos: torch.Tensor, atom_type: torch.Tensor, charge: torch.Tensor, bond_type: torch.Tensor,
               vocab: MoleculeVocab, properties: dict[str, float] | None = None, name: str | None = None) -> Molecule:
    """Decode one generated molecule: ``pos [N,3]``, ``atom_type [N]``, ``charge [N]``, dense ``bond_type
    [N,N]`` (0 = none; only the upper triangle is read)."""
    n = pos.shape[0]
    iu, ju = torch.triu_indices(n, n, offset=1)
    orders = bond_type[iu, ju]
    keep = orders > 0
    bonds = torch.stack([iu[keep], ju[keep]], 1).numpy()
    return Molecule(
        pos.detach().double().numpy(),
        np.array([vocab.elements[int(a)] for a in atom_type]),
        np.array([vocab.charges[int(c)] for c in charge]),
        bonds, orders[keep].numpy(), dict(properties or {}), name,
    )


def save_tensors(tensors: dict, path: str | Path) -> Path:
    """``torch.save`` a dict of tensors and plain values atomically (write a temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(tensors, tmp)
    tmp.replace(path)
    return path


def load_tensors(path: str | Path) -> dict:
    """Load what :func:`save_tensors` wrote, weights-only; DataError naming the file if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data set file not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


class GraphDataset(torch.utils.data.Dataset):
    """Molecules encoded with one vocabulary, held as concatenated tensors (fast, weights-only on disk).

    Args:
        tensors: the dict written by :meth:`save` (see :meth:`from_molecules`).
    """

    def __init__(self, tensors: dict):
        self.t = tensors
        self.vocab = MoleculeVocab.from_dict(tensors["vocab"])
        self.property_names: tuple[str, ...] = tuple(tensors["property_names"])

    @classmethod
    def from_molecules(cls, molecules: list[Molecule], vocab: MoleculeVocab,
                       property_names: tuple[str, ...] = ()) -> "GraphDataset":
        graphs = [to_graph(m, vocab, property_names) for m in molecules]
        if not graphs:
            raise DataError("empty data set: no molecule to encode")
        n_atoms = torch.tensor([g.num_nodes for g in graphs])
        n_bonds = torch.tensor([g.bond_type.numel() for g in graphs])
        return cls({
            "vocab": vocab.as_dict(),
            "property_names": list(property_names),
            "names": [m.name or str(i) for i, m in enumerate(molecules)],
            "atom_ptr": torch.cat([torch.zeros(1, dtype=torch.long), n_atoms.cumsum(0)]),
            "bond_ptr": torch.cat([torch.zeros(1, dtype=torch.long), n_bonds.cumsum(0)]),
            "pos": torch.cat([g.pos for g in graphs]),
            "atom_type": torch.cat([g.atom_type for g in graphs]),
            "charge": torch.cat([g.charge for g in graphs]),
            "bond_index": torch.cat([g.bond_index for g in graphs], 1),
            "bond_type": torch.cat([g.bond_type for g in graphs]),
            "y": torch.cat([g.y for g in graphs]),
        })

    def save(self, path: str | Path) -> Path:
        return save_tensors(self.t, path)

    @classmethod
    def load(cls, path: str | Path) -> "GraphDataset":
        return cls(load_tensors(path))

    def __len__(self) -> int:
        return len(self.t["names"])

    def num_atoms(self) -> torch.Tensor:
        """``[len]`` atom count per molecule."""
        return self.t["atom_ptr"].diff()

    def properties(self) -> torch.Tensor:
        """``[len, P]`` property values (user units)."""
        return self.t["y"]

    def __getitem__(self, i: int) -> Data:
        a0, a1 = self.t["atom_ptr"][i], self.t["atom_ptr"][i + 1]
        b0, b1 = self.t["bond_ptr"][i], self.t["bond_ptr"][i + 1]
        return Data(pos=self.t["pos"][a0:a1], atom_type=self.t["atom_type"][a0:a1], charge=self.t["charge"][a0:a1],
                    bond_index=self.t["bond_index"][:, b0:b1], bond_type=self.t["bond_type"][b0:b1],
                    y=self.t["y"][i : i + 1], num_nodes=int(a1 - a0), idx=i)

    def molecule(self, i: int) -> Molecule:
        d = self[i]
        n = d.num_nodes
        dense = torch.zeros(n, n, dtype=torch.long)
        dense[d.bond_index[0], d.bond_index[1]] = d.bond_type
        props = {p: float(v) for p, v in zip(self.property_names, d.y[0].tolist())}
        return from_dense(d.pos, d.atom_type, d.charge, dense, self.vocab, props, self.t["names"][i])
