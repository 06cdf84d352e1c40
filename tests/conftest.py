"""Shared fixtures: small real molecules (RDKit ETKDG conformers, explicit H, kekulized bonds)."""
from __future__ import annotations

import pytest

QM9_LIKE_SMILES = ("CCO", "CC(=O)O", "CC#N", "OCC(F)N", "C1CC1O", "c1ccc(O)cc1", "CN=CO", "NC(=O)CF")


def embed_molecules(smiles=QM9_LIKE_SMILES, seed: int = 0):
    """Molecules with 3D coordinates from ETKDG (deterministic for a seed), as molgen Molecules."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molgen.data.molecule import Molecule

    out = []
    for k, smi in enumerate(smiles):
        m = Chem.AddHs(Chem.MolFromSmiles(smi))
        Chem.Kekulize(m, clearAromaticFlags=True)
        assert AllChem.EmbedMolecule(m, randomSeed=seed + k) == 0
        out.append(Molecule.from_rdkit(m, name=smi, properties={"gap": 5.0 + 0.3 * k, "mu": 0.5 * k}))
    return out


@pytest.fixture(scope="session")
def real_molecules():
    return embed_molecules()


@pytest.fixture(scope="session")
def real_graphs(real_molecules):
    """A GraphDataset of the molecules above with properties (gap, mu)."""
    from molgen.data.graph import GraphDataset, MoleculeVocab

    return GraphDataset.from_molecules(real_molecules, MoleculeVocab(), ("gap", "mu"))
