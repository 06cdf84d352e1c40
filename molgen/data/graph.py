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
with ``torch.load(weights_only=True)``; the storage, :class:`PackedGraphStore`, is shared with
:class:`molgen.data.packed.PackedGraphs` (the GraphMVP pretraining pairs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.data.collate import collate
from torch_geometric.data.separate import separate

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


#: ``"format"`` of the files :class:`PackedGraphStore` writes (format 1: the layouts written before, no such key).
STORE_FORMAT = "molgen.packed_graphs"
STORE_VERSION = 2
_Store = TypeVar("_Store", bound="PackedGraphStore")


class PackedGraphStore(torch.utils.data.Dataset):
    """Many small PyG graphs held the way :class:`torch_geometric.data.InMemoryDataset` holds them: every
    attribute of all graphs concatenated into one tensor plus ``slices`` (per attribute, where each graph's part
    starts; ``torch_geometric.data.collate`` with ``increment=False``), items cut back out with
    ``torch_geometric.data.separate``, so a node, edge (``*index``: along the last dimension) or graph-level
    attribute needs no declaration. Items carry ``num_nodes`` and ``idx`` (Python ints).

    PyG's functions, not ``InMemoryDataset`` itself: its file stores the ``Data`` class (so it does not load with
    a plain ``torch.load(weights_only=True)``), its ``collate`` gives no slices for a one-graph set, and it
    brings root/raw/processed folders, transforms and a per-item cache that these in-memory sets do not use.

    File (format 2, :meth:`save`), plain tensors, lists and dicts::

        {"format": STORE_FORMAT, "version": 2, "kind": <class name>, "data": {attribute: tensor},
         "slices": {attribute: long [n + 1]}, "num_nodes": long [n], "idx": long [n], "meta": dict}

    Subclasses set :attr:`KIND` and read the format-1 file they used to write in :meth:`_from_format1`, so
    files of earlier runs still load.

    Args:
        tensors: what :meth:`save` writes (or a format-1 dict of the subclass).
    """

    KIND = "graphs"

    def __init__(self, tensors: dict):
        if tensors.get("format") != STORE_FORMAT:
            tensors = self._from_format1(tensors)
        elif tensors.get("kind") != self.KIND:
            raise DataError(f"the file holds a {tensors.get('kind')} data set, not a {self.KIND}")
        elif int(tensors.get("version", 0)) > STORE_VERSION:
            raise DataError(f"graph data set format {tensors.get('version')} is newer than this molgen reads "
                            f"({STORE_VERSION})")
        self.data: dict[str, torch.Tensor] = dict(tensors["data"])
        self.slices: dict[str, torch.Tensor] = dict(tensors["slices"])
        self.nodes: torch.Tensor = tensors["num_nodes"]  # [n] node count per graph
        self.idx: torch.Tensor = tensors["idx"]  # [n] the graphs' idx
        self.meta: dict = dict(tensors["meta"])
        self._batch = Data(**self.data)  # what `separate` cuts items from (shares the tensors)

    @classmethod
    def _collate(cls, graphs: list[Data], keys: list[str] | None = None, idx: list[int] | None = None,
                 meta: dict | None = None) -> dict:
        """The format-2 dict of ``graphs``: attributes ``keys`` (default: all of the first graph's),
        ``idx`` per graph (default: position), ``meta``."""
        if not graphs:
            raise DataError("empty data set: no graph to store")
        keys = [k for k in (graphs[0].keys() if keys is None else keys) if k not in ("num_nodes", "idx")]
        skip = set(graphs[0].keys()) - set(keys)  # not stored (``num_nodes`` and ``idx`` are, separately)
        batch, slices, _ = collate(Data, list(graphs), increment=False, add_batch=False, exclude_keys=skip)
        distinct: list[torch.Tensor] = []  # equal slices (all node attributes, ...) share one tensor: saved once
        for k in keys:
            same = [t for t in distinct if t.shape == slices[k].shape and torch.equal(t, slices[k])]
            slices[k] = same[0] if same else slices[k]
            distinct += [] if same else [slices[k]]
        return {"format": STORE_FORMAT, "version": STORE_VERSION, "kind": cls.KIND,
                "data": {k: batch[k] for k in keys}, "slices": {k: slices[k] for k in keys},
                "num_nodes": torch.tensor([g.num_nodes for g in graphs], dtype=torch.long),
                "idx": torch.arange(len(graphs)) if idx is None else torch.tensor(idx, dtype=torch.long),
                "meta": dict(meta or {})}

    @classmethod
    def _from_format1(cls, tensors: dict) -> dict:
        """The format-2 dict of a format-1 file of this class (DataError if it is not one)."""
        raise DataError(f"not a molgen {cls.KIND} file (no '{STORE_FORMAT}' format key)")

    def state(self) -> dict:
        """What :meth:`save` writes."""
        return {"format": STORE_FORMAT, "version": STORE_VERSION, "kind": self.KIND, "data": self.data,
                "slices": self.slices, "num_nodes": self.nodes, "idx": self.idx, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        return save_tensors(self.state(), path)

    @classmethod
    def load(cls: type[_Store], path: str | Path) -> _Store:
        """Read a file written by :meth:`save` (either format), weights-only."""
        return cls(load_tensors(path))

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i: int) -> Data:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"graph {i} out of range ({n} graphs)")
        i = int(i) % n
        d = separate(Data, self._batch, i, self.slices, decrement=False)
        d.num_nodes = int(self.nodes[i])
        d.idx = int(self.idx[i])
        return d


class GraphDataset(PackedGraphStore):
    """Molecules encoded with one vocabulary (:func:`to_graph`), held as concatenated tensors (fast,
    weights-only on disk; :class:`PackedGraphStore`). Items: ``pos``, ``atom_type``, ``charge``, ``bond_index``,
    ``bond_type``, ``y`` (``[1, P]``), ``num_nodes`` and ``idx`` (the position).

    Args:
        tensors: the dict written by :meth:`save` (see :meth:`from_molecules`), or a format-1 one.
    """

    KIND = "GraphDataset"

    def __init__(self, tensors: dict):
        super().__init__(tensors)
        self.vocab = MoleculeVocab.from_dict(self.meta["vocab"])
        self.property_names: tuple[str, ...] = tuple(self.meta["property_names"])
        self.names: list[str] = list(self.meta["names"])

    @classmethod
    def from_molecules(cls, molecules: list[Molecule], vocab: MoleculeVocab,
                       property_names: tuple[str, ...] = ()) -> "GraphDataset":
        graphs = [to_graph(m, vocab, property_names) for m in molecules]
        if not graphs:
            raise DataError("empty data set: no molecule to encode")
        return cls(cls._collate(graphs, ["pos", "atom_type", "charge", "bond_index", "bond_type", "y"], meta={
            "vocab": vocab.as_dict(), "property_names": list(property_names),
            "names": [m.name or str(i) for i, m in enumerate(molecules)]}))

    @classmethod
    def _from_format1(cls, t: dict) -> dict:
        """Format 1: ``atom_ptr``/``bond_ptr`` pointers beside the concatenated tensors."""
        if "atom_ptr" not in t:
            return super()._from_format1(t)
        atoms, bonds, n = t["atom_ptr"], t["bond_ptr"], len(t["names"])
        slices = {"pos": atoms, "atom_type": atoms, "charge": atoms, "bond_index": bonds, "bond_type": bonds,
                  "y": torch.arange(n + 1)}
        return {"data": {k: t[k] for k in slices}, "slices": slices, "num_nodes": atoms.diff(),
                "idx": torch.arange(n),
                "meta": {"vocab": t["vocab"], "property_names": t["property_names"], "names": t["names"]}}

    def num_atoms(self) -> torch.Tensor:
        """``[len]`` atom count per molecule."""
        return self.nodes.clone()

    def properties(self) -> torch.Tensor:
        """``[len, P]`` property values (user units)."""
        return self.data["y"]

    def molecule(self, i: int) -> Molecule:
        d = self[i]
        n = d.num_nodes
        dense = torch.zeros(n, n, dtype=torch.long)
        dense[d.bond_index[0], d.bond_index[1]] = d.bond_type
        props = {p: float(v) for p, v in zip(self.property_names, d.y[0].tolist())}
        return from_dense(d.pos, d.atom_type, d.charge, dense, self.vocab, props, self.names[i])
