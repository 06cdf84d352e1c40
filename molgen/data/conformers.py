"""3D pretraining data for GraphMVP: (2D graph, 3D geometry) pairs of the same molecule.

Each pair is one PyG ``Data`` over the heavy atoms of a molecule with

* the 2D view of :func:`molgen.data.moleculenet.mol_to_graph` (``x [N, 2]``, ``edge_index``, ``edge_attr``),
* the 3D view ``z [N]`` (atomic numbers) and ``pos [N, 3]`` (Angstrom).

Three sources:

* :func:`etkdg_pairs`: RDKit ETKDGv3 conformers, MMFF94-optimised, for any SMILES set (failures counted);
* :func:`qm9_pairs`: QM9's DFT (B3LYP/6-31G(2df,p)) geometries, with bonds perceived from the coordinates;
* :func:`geom_pairs`: GEOM's published ``rdkit_folder`` (``summary_drugs.json`` + one pickle per molecule
  whose ``"conformers"`` list holds ``{"rd_mol": Mol, ...}``), GraphMVP's data: shuffled with seed 777, up to
  ``n_conformers`` conformers per molecule.

GraphMVP pretrains on GEOM molecules (hydrogens possibly kept); here the pairs hold heavy atoms only, as the
downstream 2D graphs do.
"""
from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Data
from tqdm import tqdm

from molgen.data.moleculenet import mol_to_graph, parse_smiles
from molgen.errors import DataError
from molgen.settings import quiet_rdkit


@dataclass
class PairReport:
    """What a pair builder did: how many molecules it tried, kept, and why others failed."""

    source: str
    tried: int = 0
    kept: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    no_mmff: int = 0  # kept with the ETKDG geometry because MMFF94 has no parameters for the molecule

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    def as_dict(self) -> dict:
        return {"source": self.source, "tried": self.tried, "kept": self.kept, "kept_without_mmff": self.no_mmff,
                "failed": sum(self.failures.values()), **{f"failed_{k}": v for k, v in self.failures.items()}}


def pair_from_mol(mol: Chem.Mol, conf_id: int = -1) -> Data:
    """The (2D, 3D) pair of an RDKit molecule with a conformer; hydrogens are removed first."""
    heavy = Chem.RemoveHs(mol, sanitize=False) if any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()) else mol
    g = mol_to_graph(heavy)
    pos = heavy.GetConformer(conf_id).GetPositions()
    g.z = torch.tensor([a.GetAtomicNum() for a in heavy.GetAtoms()], dtype=torch.long)
    g.pos = torch.tensor(pos, dtype=torch.float32)
    return g


def embed_conformer(smiles: str, seed: int = 0, mmff: bool = True, max_attempts: int = 2) -> tuple[Chem.Mol | None, str]:
    """One ETKDGv3 conformer (MMFF94-optimised if ``mmff``) of ``smiles``; returns ``(mol or None, why)``."""
    mol = parse_smiles(smiles)
    if mol is None:
        return None, "unparsable"
    molh = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    with quiet_rdkit():
        for attempt in range(max_attempts):
            if attempt:  # ETKDG's documented fallback for hard cases: random starting coordinates
                params.useRandomCoords = True
            if AllChem.EmbedMolecule(molh, params) == 0:
                break
        else:
            return None, "embedding"
        if mmff:
            if AllChem.MMFFHasAllMoleculeParams(molh):
                AllChem.MMFFOptimizeMolecule(molh, maxIters=500)
            else:
                return molh, "ok_no_mmff_params"
    return molh, "ok"


def etkdg_pairs(smiles: Iterable[str], seed: int = 0, mmff: bool = True, progress: bool = True
                ) -> tuple[list[Data], PairReport]:
    """ETKDG(+MMFF) pairs for a SMILES set; molecules whose embedding fails are skipped and counted."""
    report = PairReport("etkdg+mmff" if mmff else "etkdg")
    pairs: list[Data] = []
    smiles = list(smiles)
    for i, s in enumerate(tqdm(smiles, desc="conformers (ETKDG+MMFF)", disable=not progress, mininterval=2)):
        report.tried += 1
        mol, why = embed_conformer(s, seed=seed + i, mmff=mmff)
        if mol is None:
            report.fail(why)
            continue
        if why == "ok_no_mmff_params":
            report.no_mmff += 1
        g = pair_from_mol(mol)
        g.idx = i
        pairs.append(g)
        report.kept += 1
    return pairs, report


# --------------------------------------------------------------------------------------------- QM9
def qm9_pairs(max_molecules: int | None = 10000, processes: int = 1, progress: bool = True
              ) -> tuple[list[Data], PairReport]:
    """Pairs from QM9's DFT geometries (the first ``max_molecules`` records of qm9pack, None: all 130,831).

    Bonds come from :func:`molgen.data.qm9.load_qm9`'s perception (xyz2mol on the DFT geometry, kept only where it
    agrees with the data set's SMILES; ``processes`` workers), the molecules of every EDM split (the downstream
    tasks are not QM9's). Counted failures: ``bond_perception`` (no graph, or one that disagrees with the data set),
    ``outside_edm_split`` (EDM's 3,054 uncharacterized molecules; qm9pack already leaves them out), ``single_heavy_atom`` (CH4, NH3, H2O: no 2D structure
    to contrast).
    """
    from molgen.data.qm9 import load_qm9

    data = load_qm9({"source": "qm9pack", "max_molecules": max_molecules, "split": "edm",
                     "exclude_mismatch": True, "perception_processes": processes}, progress=progress)
    s = data.summary
    report = PairReport("qm9_dft", tried=int(s["read"]))
    for why, n in (("bond_perception", s["excluded"]), ("outside_edm_split", s["not_in_split"])):
        if n:
            report.failures[why] = int(n)
    mols = sorted((m for split in data.splits.values() for m in split), key=lambda m: str(m.name))
    pairs: list[Data] = []
    for k, m in enumerate(tqdm(mols, desc="QM9 pairs", disable=not progress, mininterval=2)):
        try:
            with quiet_rdkit():
                mol = m.to_rdkit(sanitize=True)
                Chem.AssignStereochemistryFrom3D(mol)
        except Exception:  # noqa: BLE001 -- RDKit raises ValueError/RuntimeError variants
            report.fail("bond_perception")
            continue
        g = pair_from_mol(mol)
        if g.num_nodes < 2:
            report.fail("single_heavy_atom")
            continue
        g.idx = k
        pairs.append(g)
        report.kept += 1
    return pairs, report


# --------------------------------------------------------------------------------------------- GEOM
def geom_pairs(root: str | Path, max_molecules: int = 50000, n_conformers: int = 5, seed: int = 777,
               summary: str = "summary_drugs.json", progress: bool = True) -> tuple[list[Data], PairReport]:
    """Pairs from GEOM's ``rdkit_folder`` (Axelrod & Gomez-Bombarelli 2022), GraphMVP's selection rule.

    ``root/summary`` maps SMILES to entries with a ``pickle_path`` (relative to ``root``); each pickle holds
    ``{"conformers": [{"rd_mol": Mol, ...}, ...], ...}``. Molecules are shuffled with ``seed``, the first
    ``n_conformers`` conformers of each are kept, until ``max_molecules`` molecules are read.

    Note: pickles execute code when loaded; read only GEOM archives you trust.
    """
    root = Path(root).expanduser()
    summary_path = root / summary
    if not summary_path.is_file():
        raise DataError(f"GEOM summary not found: {summary_path} (expected GEOM's rdkit_folder layout)")
    entries = json.loads(summary_path.read_text())
    keys = sorted(k for k, v in entries.items() if isinstance(v, dict) and v.get("pickle_path"))
    random.Random(seed).shuffle(keys)
    report = PairReport("geom")
    pairs: list[Data] = []
    n_mol = 0
    for key in tqdm(keys, desc="GEOM conformers", disable=not progress, mininterval=2):
        if n_mol >= max_molecules:
            break
        report.tried += 1
        path = root / entries[key]["pickle_path"]
        try:
            with open(path, "rb") as f:
                record = pickle.load(f)  # noqa: S301 -- GEOM's published format is a pickle of RDKit molecules
            confs = record["conformers"][:n_conformers]
        except (OSError, KeyError, pickle.UnpicklingError, EOFError, TypeError):
            report.fail("unreadable_pickle")
            continue
        got = 0
        for c in confs:
            mol = c.get("rd_mol") if isinstance(c, dict) else None
            if mol is None or mol.GetNumConformers() == 0:
                continue
            g = pair_from_mol(mol)
            g.idx = n_mol
            pairs.append(g)
            got += 1
        if got == 0:
            report.fail("no_conformer")
            continue
        n_mol += 1
        report.kept += 1
    return pairs, report
