"""Bonds and formal charges perceived from a DFT geometry, cross-checked against a reference SMILES.

QM9 ships geometries and SMILES but no bond table that matches the geometry atom by atom. molgen perceives
the molecular graph from the 3D structure with RDKit's implementation of xyz2mol (Kim & Kim, Bull. Korean
Chem. Soc. 2015, https://doi.org/10.1002/bkcs.10334; ``rdkit.Chem.rdDetermineBonds.DetermineBonds``) for a
neutral molecule (total charge 0), then compares the result with the data set's SMILES: both are written
as canonical SMILES without stereochemistry and with implicit hydrogens, and must be equal.

Connectivity first comes from covalent radii (RDKit's default, factor 1.3). When that fails or disagrees
with the reference, connectivity from extended Hückel overlap populations (``useHueckel=True``, YAeHMOP) is
tried once; the method that succeeded is recorded. The radii rule fails mostly on strained QM9 cages, where
the 1,3 C...C distance across a bicyclobutane-like ring (1.78-1.90 A) is shorter than the 1.98 A radii cutoff
and a fifth bond is added to carbon; Hückel overlap does not bond these atoms. Hückel costs ~10x the radii
rule, so it is only the fallback. The outcome of each molecule is one of :data:`STATUSES`:

* ``ok``: perception succeeded and matches the reference SMILES (or no reference was given);
* ``failed``: no bond-order assignment with total charge 0 was found;
* ``disagree``: perception succeeded but its canonical SMILES differs from the reference
  (a tautomer, a zwitterion drawn where the geometry says neutral, or a different connectivity);
* ``other``: the reference SMILES cannot be read by RDKit, so the molecule cannot be checked.

Bond orders are stored Kekulé (single/double/triple): aromatic rings get alternating single and double bonds.

Example:
    >>> import numpy as np
    >>> z = np.array([6, 7, 1])                                    # HCN, QM9 molecule 5
    >>> pos = np.array([[0.0, 0.0, 0.0], [1.156, 0.0, 0.0], [-1.066, 0.0, 0.0]])
    >>> p = perceive_molecule(z, pos, reference_smiles="C#N")
    >>> p.status, p.bond_orders.tolist(), p.smiles
    ('ok', [3, 1], 'C#N')
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D
from tqdm.auto import tqdm

from molgen.settings import quiet_rdkit

#: Possible values of :attr:`Perception.status`.
STATUSES: tuple[str, ...] = ("ok", "failed", "disagree", "other")

_ORDER = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}


class PerceptionError(Exception):
    """xyz2mol found no bond-order assignment for the geometry (internal; callers get a status)."""


@dataclass
class Perception:
    """The perceived graph of one molecule and how it compares with the reference SMILES.

    Attributes:
        status: one of :data:`STATUSES`.
        formal_charges: ``[N]`` int64, or None when perception failed.
        bonds: ``[E, 2]`` int64 atom pairs ``i < j``, or None when perception failed.
        bond_orders: ``[E]`` int64 in {1, 2, 3} (Kekulé), or None when perception failed.
        smiles: canonical SMILES of the perceived molecule (no stereo, hydrogens implicit), or None.
        reference_smiles: canonical SMILES of the reference read naively with ``Chem.MolFromSmiles``, or None.
        method: "radii" or "hueckel" (how connectivity was found), "" when perception failed.
        reason: why the status is not ``ok`` (empty when it is).
        reference_net_charge: net formal charge of the naive SMILES reading (None without a reference).
        reference_charged_atoms: number of atoms with a non-zero formal charge in the naive SMILES reading.
        same_skeleton: for ``disagree``, whether the heavy-atom/hydrogen connectivity is the same (so only
            bond orders and charges differ); None otherwise.
    """

    status: str
    formal_charges: np.ndarray | None = None
    bonds: np.ndarray | None = None
    bond_orders: np.ndarray | None = None
    smiles: str | None = None
    reference_smiles: str | None = None
    method: str = ""
    reason: str = ""
    reference_net_charge: int | None = None
    reference_charged_atoms: int = 0
    same_skeleton: bool | None = None


def _mol_from_geometry(atomic_numbers: np.ndarray, positions: np.ndarray) -> Chem.Mol:
    """An RDKit molecule with atoms and one 3D conformer but no bonds (what ``MolFromXYZBlock`` returns)."""
    rw = Chem.RWMol()
    for z in atomic_numbers.tolist():
        rw.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(len(atomic_numbers))
    for k, (x, y, z) in enumerate(positions.tolist()):
        conf.SetAtomPosition(k, Point3D(x, y, z))
    conf.Set3D(True)
    mol = rw.GetMol()
    mol.AddConformer(conf, assignId=True)
    return mol


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to file descriptor 2: YAeHMOP (behind ``useHueckel``) prints a
    "Distance ... is suspicious" warning for every O-H bond, which RDKit's logger cannot switch off."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def perceive_bonds(atomic_numbers: np.ndarray, positions: np.ndarray, charge: int = 0,
                   use_hueckel: bool = False) -> Chem.Mol:
    """Run xyz2mol on one geometry and return the sanitized, kekulized RDKit molecule (explicit H).

    Args:
        atomic_numbers: ``[N]`` atomic numbers.
        positions: ``[N, 3]`` Angstrom.
        charge: total charge of the molecule.
        use_hueckel: find connectivity from extended Hückel instead of covalent radii.

    Raises:
        PerceptionError: when no valid bond-order assignment exists.
    """
    mol = _mol_from_geometry(np.asarray(atomic_numbers), np.asarray(positions, dtype=float).reshape(-1, 3))
    try:
        with quiet_rdkit():
            with _quiet_stderr() if use_hueckel else contextlib.nullcontext():
                rdDetermineBonds.DetermineBonds(mol, charge=charge, useHueckel=use_hueckel)
            Chem.Kekulize(mol, clearAromaticFlags=True)
    except (ValueError, RuntimeError) as e:  # RDKit raises ValueError (valence) or RuntimeError (invariant)
        raise PerceptionError(" ".join(str(e).split())[:120]) from None
    if any(b.GetBondType() not in _ORDER for b in mol.GetBonds()):
        raise PerceptionError("unexpected bond type after kekulization")
    return mol


def canonical_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES without stereochemistry, every hydrogen implicit (the comparison key)."""
    return Chem.MolToSmiles(Chem.RemoveAllHs(mol), isomericSmiles=False)


def skeleton_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES of the graph with every bond single and every charge zero (explicit hydrogens):
    two molecules with equal skeletons differ only in bond orders and formal charges."""
    rw = Chem.RWMol(Chem.AddHs(mol))
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
    for bond in rw.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    return Chem.MolToSmiles(rw, isomericSmiles=False, canonical=True, allHsExplicit=False)


def _graph(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
    bonds = np.array([sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in mol.GetBonds()],
                     dtype=np.int64).reshape(-1, 2)
    orders = np.array([_ORDER[b.GetBondType()] for b in mol.GetBonds()], dtype=np.int64)
    return q, bonds, orders


def perceive_molecule(atomic_numbers: np.ndarray, positions: np.ndarray, reference_smiles: str | None = None,
                      charge: int = 0) -> Perception:
    """Perceive bonds and formal charges of one geometry and compare them with ``reference_smiles``.

    Args:
        atomic_numbers: ``[N]`` atomic numbers.
        positions: ``[N, 3]`` Angstrom.
        reference_smiles: the data set's SMILES (any RDKit-readable form), or None to skip the check.
        charge: total charge assumed by xyz2mol.

    Returns:
        A :class:`Perception`; never raises for a chemically odd geometry (the status says what happened).
    """
    ref_mol, ref_can, ref_net, ref_charged = None, None, None, 0
    if reference_smiles is not None:
        with quiet_rdkit():
            ref_mol = Chem.MolFromSmiles(reference_smiles)  # the naive reading (sanitized: N(=O)=O -> [N+](=O)[O-])
        if ref_mol is not None:
            ref_can = canonical_smiles(ref_mol)
            charges = [a.GetFormalCharge() for a in ref_mol.GetAtoms()]
            ref_net, ref_charged = int(sum(charges)), int(sum(c != 0 for c in charges))
    common = dict(reference_smiles=ref_can, reference_net_charge=ref_net, reference_charged_atoms=ref_charged)

    best: Perception | None = None
    reason = ""
    for method in ("radii", "hueckel"):
        try:
            mol = perceive_bonds(atomic_numbers, positions, charge, use_hueckel=method == "hueckel")
        except PerceptionError as e:
            reason = reason or f"xyz2mol ({method}): {e}"
            continue
        q, bonds, orders = _graph(mol)
        smi = canonical_smiles(mol)
        if reference_smiles is None or (ref_can is not None and smi == ref_can):
            return Perception("ok", q, bonds, orders, smi, method=method, **common)
        if best is None:
            if ref_mol is None:
                best = Perception("other", q, bonds, orders, smi, method=method,
                                  reason="reference SMILES not readable by RDKit", **common)
                break  # the other connectivity method cannot fix an unreadable reference
            same = skeleton_smiles(mol) == skeleton_smiles(ref_mol)
            best = Perception("disagree", q, bonds, orders, smi, method=method, same_skeleton=same,
                              reason="same connectivity, different bond orders/charges" if same
                              else "different connectivity", **common)
    if best is not None:
        return best
    return Perception("failed", method="", reason=reason, **common)


def _perceive_chunk(chunk: list[tuple[np.ndarray, np.ndarray, str | None]]) -> list[Perception]:
    return [perceive_molecule(z, pos, smi) for z, pos, smi in chunk]


def perceive_many(items: Sequence[tuple[np.ndarray, np.ndarray, str | None]], processes: int = 1,
                  progress: bool = True, chunk_size: int = 2000) -> list[Perception]:
    """:func:`perceive_molecule` over many ``(atomic_numbers, positions, reference_smiles)`` triples.

    Args:
        items: the molecules, in order; results come back in the same order.
        processes: worker processes (1 = in this process). Chunks of ``chunk_size`` molecules go to a pool
            started with ``fork`` where the platform has it (workers only run RDKit, no threads of the parent),
            else ``spawn`` (then the calling script needs an ``if __name__ == "__main__":`` guard).
        progress: show a tqdm bar counting molecules.
        chunk_size: molecules per task.
    """
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    bar = tqdm(total=len(items), desc="perceiving bonds", unit="mol", disable=not progress)
    out: list[Perception] = []
    try:
        if processes <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                out.extend(_perceive_chunk(chunk))
                bar.update(len(chunk))
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(processes) as pool:
                for res in pool.imap(_perceive_chunk, chunks):
                    out.extend(res)
                    bar.update(len(res))
    finally:
        bar.close()
    return out


def count_statuses(perceptions: Iterable[Perception]) -> dict[str, int]:
    """``{status: count}`` for every status in :data:`STATUSES` (zeros included), plus the naive-SMILES
    comparison counts used by the data report (see :func:`perceive_molecule`)."""
    counts = {s: 0 for s in STATUSES}
    counts.update({"ok_via_hueckel": 0, "disagree_same_skeleton": 0, "reference_charged": 0,
                   "reference_net_charge_nonzero": 0})
    for p in perceptions:
        counts[p.status] += 1
        counts["ok_via_hueckel"] += p.status == "ok" and p.method == "hueckel"
        counts["disagree_same_skeleton"] += p.status == "disagree" and bool(p.same_skeleton)
        counts["reference_charged"] += p.reference_charged_atoms > 0
        counts["reference_net_charge_nonzero"] += bool(p.reference_net_charge)
    return counts
