"""Structure checks of 3D molecules: stability (three definitions), validity, open shells, fragments, uniqueness.

Every check is pure RDKit/NumPy and fast (~1 ms per QM9-sized molecule). :func:`structure_table` gives one row
per molecule; :func:`summarize_structure` turns the table into metrics; :func:`structure_metrics` does both.

Stability definitions (each metric key names its definition; tables in :mod:`molgen.validation.tables`):

* ``edm``: bonds inferred from interatomic distances with EDM's bond-length tables; neutral valences.
* ``lenient``: the molecule's own bonds with MiDi/FlowMol's charge-aware table (neutral C with 3 bonds passes).
* ``revised``: PropMolFlow's rule, explicit valence - formal charge = neutral valence for every atom, and a
  closed shell (even electron count, no radical electrons). This is chemistry, valid for ions: ammonium, a
  carboxylate, a protonated amine, a zwitterion with a net charge, a salt are stable. ``mol_stable_neutral``
  adds QM9's convention, net charge zero (the headline of a run whose reference data set is neutral, see
  :func:`molgen.validation.validate`'s ``require_neutral``). ``revised_nocharge`` is the per-atom rule alone,
  as PropMolFlow's code computes it (its net-charge check is a no-op).
* ``stable_single_fragment``: ``mol_stable`` and one connected piece (the molecule a user wanted).

Validity: ``valid`` = the whole molecule sanitizes in RDKit; ``valid_largest_fragment`` = the largest
fragment sanitizes (MiDi/FlowMol's definition); ``valid_edm`` = the molecule rebuilt from EDM's distance
bonds sanitizes (EDM's definition). Uniqueness and novelty follow EDM: unique valid SMILES / valid, novel
unique SMILES / unique, with SMILES of the largest fragment, without stereo.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from collections import Counter
from typing import Iterable

import numpy as np
import pandas as pd
from rdkit import Chem
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from molgen.data.molecule import ELEMENTS, BondOrder, Molecule
from molgen.settings import quiet_rdkit
from molgen.validation import tables


# ---------------------------------------------------------------------------------------------- bonds
@contextlib.contextmanager
def _quiet_stdout():
    """Silence C++ writes to stdout/stderr (RDKit's extended-Hueckel code prints '!!! Warning !!!' lines)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, s in zip((1, 2), saved):
            os.dup2(s, fd)
            os.close(s)


def edm_bond_orders(mol: Molecule) -> np.ndarray:
    """Bond orders inferred from distances with EDM's rule.

    Order 1 if ``d < L1 + 0.10 A``, 2 if also ``d < L2 + 0.05 A``, 3 if also ``d < L3 + 0.03 A``; element pairs
    without a tabulated single-bond length are never bonded.

    Shapes:
        returns ``[N, N]`` int64, symmetric, zero diagonal.
    """
    z = mol.atomic_numbers
    d = np.linalg.norm(mol.positions[:, None, :] - mol.positions[None, :, :], axis=-1)
    m1, m2, m3 = (m / 100.0 for m in tables.EDM_MARGINS_PM)
    l1, l2, l3 = (t[z[:, None], z[None, :]] for t in (tables.EDM_SINGLE_A, tables.EDM_DOUBLE_A, tables.EDM_TRIPLE_A))
    with np.errstate(invalid="ignore"):
        single = d < l1 + m1  # NaN compares False: untabulated pairs are never bonded
        double = single & (d < l2 + m2)
        triple = double & (d < l3 + m3)
    orders = single.astype(np.int64) + double + triple
    np.fill_diagonal(orders, 0)
    return orders


def molecule_from_order_matrix(mol: Molecule, orders: np.ndarray, neutral: bool = True) -> Molecule:
    """A copy of ``mol`` whose bonds are the upper triangle of ``orders`` (formal charges zeroed if neutral)."""
    i, j = np.nonzero(np.triu(orders, 1))
    return Molecule(mol.positions, mol.atomic_numbers, None if neutral else mol.formal_charges,
                    np.stack([i, j], 1), orders[i, j], dict(mol.properties), mol.name)


@quiet_rdkit()  # RDKit's lines for chemically invalid input are the expected case here
def with_bonds(mol: Molecule) -> tuple[Molecule, str]:
    """The molecule with bonds: its own if it has any, else inferred (RDKit's DetermineBonds for a neutral
    molecule, falling back to EDM's distance rule). Returns the molecule and the source: ``given``,
    ``rdkit`` or ``edm``."""
    if mol.num_bonds or mol.num_atoms == 1:
        return mol, "given"
    from rdkit.Chem import rdDetermineBonds

    # covalent-radius connectivity first; the extended-Hueckel connectivity rescues strained rings (long C-O
    # bonds in QM9's oxabicycles, ~6% of QM9) but is slower and prints warnings, so it comes second
    for hueckel in (False, True):
        try:
            rd = Chem.RWMol(mol.to_rdkit())
            with _quiet_stdout() if hueckel else contextlib.nullcontext():
                rdDetermineBonds.DetermineBonds(rd, charge=0, useHueckel=hueckel)
            inferred = Molecule.from_rdkit(rd, name=mol.name, properties=dict(mol.properties))
            return inferred, "rdkit"
        except Exception:  # noqa: BLE001 -- xyz2mol fails on odd-electron or strange geometries
            continue
    return molecule_from_order_matrix(mol, edm_bond_orders(mol)), "edm"


@quiet_rdkit()
def integer_valences(mol: Molecule) -> np.ndarray:
    """Explicit valence per atom with aromatic bonds kekulized (RDKit); if kekulization fails, aromatic bonds
    count 1.5 and the sum is floored (MiDi's convention). Shapes: ``[N]`` int64."""
    if not (mol.bond_orders == BondOrder.AROMATIC).any():
        return mol.valences().astype(np.int64)
    rd = mol.to_rdkit()
    try:
        Chem.Kekulize(rd, clearAromaticFlags=True)
        v = np.zeros(mol.num_atoms, dtype=np.int64)
        for b in rd.GetBonds():
            o = int(b.GetBondTypeAsDouble())
            v[b.GetBeginAtomIdx()] += o
            v[b.GetEndAtomIdx()] += o
        return v
    except Exception:  # noqa: BLE001 -- a non-kekulizable aromatic system
        return np.floor(mol.valences()).astype(np.int64)


# ---------------------------------------------------------------------------------------------- stability
def edm_atom_stable(mol: Molecule) -> np.ndarray:
    """EDM atom stability: distance-inferred bond-order sum is an allowed neutral valence. ``[N]`` bool."""
    val = edm_bond_orders(mol).sum(1)
    return np.array([int(v) in tables.EDM_VALENCES.get(s, ()) for s, v in zip(mol.symbols, val)], dtype=bool)


def lenient_atom_stable(mol: Molecule, valences: np.ndarray | None = None) -> np.ndarray:
    """MiDi/FlowMol atom stability on the molecule's own bonds and formal charges. ``[N]`` bool."""
    val = integer_valences(mol) if valences is None else valences
    out = []
    for s, q, v in zip(mol.symbols, mol.formal_charges.tolist(), val.tolist()):
        allowed = tables.lenient_allowed(s, int(q))
        out.append(allowed is not None and int(v) in allowed)
    return np.array(out, dtype=bool)


def revised_atom_stable(mol: Molecule, valences: np.ndarray | None = None) -> np.ndarray:
    """PropMolFlow's revised atom rule: explicit valence - formal charge is a neutral valence. ``[N]`` bool."""
    val = integer_valences(mol) if valences is None else valences
    return np.array([int(v - q) in tables.NEUTRAL_VALENCES.get(s, ())
                     for s, q, v in zip(mol.symbols, mol.formal_charges.tolist(), val.tolist())], dtype=bool)


# ---------------------------------------------------------------------------------------------- RDKit checks
def _sanitized(rd: Chem.Mol) -> Chem.Mol | None:
    rd = Chem.Mol(rd)
    try:
        Chem.SanitizeMol(rd)
        return rd
    except Exception:  # noqa: BLE001 -- any RDKit failure means "not valid"
        return None


def _smiles(rd: Chem.Mol) -> str:
    return Chem.MolToSmiles(Chem.RemoveHs(rd, sanitize=False), isomericSmiles=False)


def _largest_fragment(rd: Chem.Mol) -> Chem.Mol:
    frags = Chem.GetMolFrags(rd, asMols=True, sanitizeFrags=False)
    return max(frags, key=lambda m: m.GetNumAtoms()) if frags else rd


@quiet_rdkit()
def canonical_smiles(smiles: str) -> str | None:
    """Canonical non-isomeric SMILES of ``smiles`` (None if RDKit cannot parse it): the key for novelty."""
    m = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(m, isomericSmiles=False) if m is not None else None


def n_fragments(mol: Molecule) -> int:
    """Connected components of the bond graph."""
    if mol.num_atoms == 0:
        return 0
    a = csr_matrix((np.ones(mol.num_bonds), (mol.bonds[:, 0], mol.bonds[:, 1])), shape=(mol.num_atoms,) * 2)
    return int(connected_components(a, directed=False)[0])


# ---------------------------------------------------------------------------------------------- per molecule
@quiet_rdkit()
def check_molecule(mol: Molecule) -> dict:
    """Every structure check of one molecule as a flat row (see :func:`structure_table` for the columns)."""
    bonded, source = with_bonds(mol)
    val = integer_valences(bonded)
    edm = edm_atom_stable(mol)
    len_ok = lenient_atom_stable(bonded, val)
    rev_ok = revised_atom_stable(bonded, val)
    n_el = int(mol.atomic_numbers.sum()) - bonded.net_charge
    rd = bonded.to_rdkit()
    whole = _sanitized(rd)
    largest = _sanitized(_largest_fragment(rd))
    radicals = None
    if whole is not None:
        r = Chem.Mol(whole)
        Chem.AssignRadicals(r)
        radicals = int(sum(a.GetNumRadicalElectrons() for a in r.GetAtoms()))
    edm_mol = molecule_from_order_matrix(mol, edm_bond_orders(mol)).to_rdkit()
    edm_valid = _sanitized(edm_mol)
    ring_sizes = [len(r) for r in (whole or largest or rd).GetRingInfo().AtomRings()] if (whole or largest) else []
    open_shell = bool(n_el % 2) or bool(radicals)
    stable = bool(rev_ok.all()) and not open_shell
    n_frag = n_fragments(bonded)
    return {
        "name": mol.name,
        "formula": _formula(mol),
        "n_atoms": mol.num_atoms,
        "bonds_source": source,
        "net_charge": bonded.net_charge,
        "n_electrons": n_el,
        "smiles": _smiles(whole) if whole is not None else None,
        "smiles_largest_fragment": _smiles(largest) if largest is not None else None,
        "smiles_edm": _smiles(_largest_fragment(edm_valid)) if edm_valid is not None else None,
        "valid": whole is not None,
        "valid_largest_fragment": largest is not None,
        "valid_edm": edm_valid is not None,
        "n_fragments": n_frag,
        "radical_electrons": radicals,
        "odd_electrons": bool(n_el % 2),
        "open_shell": open_shell,
        "n_atoms_stable_edm": int(edm.sum()),
        "n_atoms_stable_lenient": int(len_ok.sum()),
        "n_atoms_stable_revised": int(rev_ok.sum()),
        "atom_stable_fraction_edm": float(edm.mean()) if mol.num_atoms else 0.0,
        "atom_stable_fraction_lenient": float(len_ok.mean()) if mol.num_atoms else 0.0,
        "atom_stable_fraction": float(rev_ok.mean()) if mol.num_atoms else 0.0,
        "mol_stable_edm": bool(edm.all()),
        "mol_stable_lenient": bool(len_ok.all()),
        "mol_stable_revised_nocharge": bool(rev_ok.all()),
        "net_charge_zero": bonded.net_charge == 0,
        "mol_stable": stable,
        "mol_stable_neutral": stable and bonded.net_charge == 0,
        "stable_single_fragment": stable and n_frag == 1,
        "unstable_atoms": ",".join(f"{s}{k}" for k, (s, ok) in enumerate(zip(mol.symbols, rev_ok)) if not ok),
        "atom_types": " ".join(_atom_label(z, q) for z, q in zip(bonded.atomic_numbers, bonded.formal_charges)),
        "ring_sizes": " ".join(str(s) for s in sorted(ring_sizes)),
    }


def _atom_label(z: int, q: int) -> str:
    return ELEMENTS[int(z)] + ("" if q == 0 else f"{q:+d}".replace("+1", "+").replace("-1", "-"))


def _formula(mol: Molecule) -> str:
    c = Counter(mol.symbols)
    order = (["C", "H"] if "C" in c else []) + sorted(k for k in c if k not in ("C", "H") or "C" not in c)
    return "".join(f"{s}{c[s] if c[s] > 1 else ''}" for s in order)


def structure_table(mols: Iterable[Molecule], progress: bool = False) -> pd.DataFrame:
    """One row of structure checks per molecule, indexed 0..n-1 (column ``index``).

    Columns: name, formula, n_atoms, bonds_source (given/rdkit/edm), net_charge, n_electrons, smiles (whole
    molecule, None if invalid), smiles_largest_fragment, smiles_edm, valid, valid_largest_fragment, valid_edm,
    n_fragments, radical_electrons, odd_electrons, open_shell, atom_stable_fraction[_edm|_lenient] (no suffix:
    revised), mol_stable[_edm|_lenient|_revised_nocharge] (no suffix: revised rule and closed shell),
    mol_stable_neutral (and net charge zero), stable_single_fragment (and one fragment), net_charge_zero,
    unstable_atoms (revised rule, ``C3,N5``), atom_types, ring_sizes.
    """
    mols = list(mols)
    it = mols
    if progress:
        from tqdm import tqdm

        it = tqdm(mols, desc="structure checks", unit="mol", leave=False)
    rows = [check_molecule(m) for m in it]
    table = pd.DataFrame(rows)
    table.insert(0, "index", np.arange(len(rows)))
    return table


# ---------------------------------------------------------------------------------------------- metrics
def summarize_structure(table: pd.DataFrame, reference_smiles: set[str] | None = None) -> dict:
    """Metrics from a :func:`structure_table`. Fractions are of all molecules unless the key says otherwise.

    Keys: ``stability_{edm,lenient,revised,revised_nocharge}_{atom,mol}`` (atom = stable atoms / all atoms,
    mol = molecules with every atom stable; ``revised_mol`` also needs a closed shell),
    ``stability_revised_neutral_mol`` (and net charge zero), ``stable_single_fragment_ratio``, ``closed_shell_ratio``,
    ``validity`` (whole molecule), ``validity_largest_fragment``, ``validity_edm``, ``connected_ratio``,
    ``fragments_mean``, ``uniqueness`` (unique / valid largest-fragment SMILES), ``valid_x_unique``,
    ``novelty`` (novel unique / unique, only with reference SMILES), ``atom_type_counts``, ``ring_size_counts``.
    """
    n = len(table)
    if n == 0:
        return {"n_molecules": 0}
    atoms = table["n_atoms"].sum()
    out: dict = {"n_molecules": int(n)}
    for rule, col in (("edm", "edm"), ("lenient", "lenient"), ("revised", "revised")):
        out[f"stability_{rule}_atom"] = float(table[f"n_atoms_stable_{col}"].sum() / max(atoms, 1))
    out["stability_edm_mol"] = float(table["mol_stable_edm"].mean())
    out["stability_lenient_mol"] = float(table["mol_stable_lenient"].mean())
    out["stability_revised_mol"] = float(table["mol_stable"].mean())
    out["stability_revised_neutral_mol"] = float(table["mol_stable_neutral"].mean())
    out["stable_single_fragment_ratio"] = float(table["stable_single_fragment"].mean())
    out["stability_revised_nocharge_mol"] = float(table["mol_stable_revised_nocharge"].mean())
    out["closed_shell_ratio"] = float((~table["open_shell"].astype(bool)).mean())
    out["even_electron_ratio"] = float((~table["odd_electrons"].astype(bool)).mean())
    out["net_charge_zero_ratio"] = float(table["net_charge_zero"].mean())
    out["validity"] = float(table["valid"].mean())
    out["validity_largest_fragment"] = float(table["valid_largest_fragment"].mean())
    out["validity_edm"] = float(table["valid_edm"].mean())
    out["connected_ratio"] = float((table["n_fragments"] == 1).mean())
    out["fragments_mean"] = float(table["n_fragments"].mean())
    smiles = [s for s in table["smiles_largest_fragment"] if isinstance(s, str)]
    unique = set(smiles)
    out["uniqueness"] = len(unique) / len(smiles) if smiles else 0.0
    out["valid_x_unique"] = out["validity_largest_fragment"] * out["uniqueness"]
    if reference_smiles is not None:
        novel = unique - set(reference_smiles)
        out["novelty"] = len(novel) / len(unique) if unique else 0.0
        out["novelty_of_valid"] = len([s for s in smiles if s in novel]) / len(smiles) if smiles else 0.0
    out["atom_type_counts"] = dict(sorted(Counter(t for s in table["atom_types"] for t in s.split()).items()))
    out["ring_size_counts"] = {str(k): v for k, v in sorted(Counter(
        int(t) for s in table["ring_sizes"] for t in str(s).split()).items())}
    return out


def structure_metrics(mols: list[Molecule], reference_smiles: set[str] | None = None) -> dict:
    """Structure metrics of ``mols`` (see :func:`summarize_structure` for the keys).

    Args:
        mols: molecules with explicit hydrogens; bonds are inferred if a molecule has none (XYZ input).
        reference_smiles: training-set SMILES for novelty (any SMILES; compared after canonicalization
            without stereo). None: novelty is not computed.

    Example:
        >>> from rdkit import Chem; from rdkit.Chem import AllChem
        >>> m = Chem.AddHs(Chem.MolFromSmiles("CCO")); _ = AllChem.EmbedMolecule(m, randomSeed=0)
        >>> metrics = structure_metrics([Molecule.from_rdkit(m)], reference_smiles={"OCC"})
        >>> metrics["stability_revised_mol"], metrics["novelty"]
        (1.0, 0.0)
    """
    ref = None
    if reference_smiles is not None:
        ref = {c for c in (canonical_smiles(s) for s in reference_smiles) if c}
    return summarize_structure(structure_table(mols), ref)


def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
