"""Graph utilities: the bond type of every edge of a complete graph, checked against RDKit's bond list."""
import pytest
import torch

from molgen.nn.graph import complete_graph, edge_bond_types


def rdkit_molecule(smiles: str):
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    Chem.Kekulize(mol, clearAromaticFlags=True)
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())) for b in mol.GetBonds()]
    return mol, bonds


def rdkit_order(mol, i: int, j: int) -> int:
    b = mol.GetBondBetweenAtoms(i, j)
    return 0 if b is None else int(b.GetBondTypeAsDouble())


def test_ethanol_with_explicit_hydrogens_matches_rdkit():
    mol, bonds = rdkit_molecule("CCO")
    n = mol.GetNumAtoms()
    assert n == 9 and len(bonds) == 8
    ei = complete_graph(torch.zeros(n, dtype=torch.long))[0]
    bond_index = torch.tensor([[i for i, _, _ in bonds], [j for _, j, _ in bonds]])
    bond_type = torch.tensor([t for _, _, t in bonds])
    labels = edge_bond_types(ei, bond_index, bond_type, n)
    assert labels.dtype == torch.long and labels.shape == (n * (n - 1),)
    assert labels.tolist() == [rdkit_order(mol, i, j) for i, j in ei.T.tolist()]
    assert int((labels > 0).sum()) == 2 * len(bonds)


def test_a_batch_with_double_and_aromatic_bonds_matches_rdkit():
    mols = [rdkit_molecule(s) for s in ("CCO", "CC(=O)O", "c1ccc(O)cc1", "CC#N")]
    sizes = [m.GetNumAtoms() for m, _ in mols]
    batch = torch.repeat_interleave(torch.arange(len(mols)), torch.tensor(sizes))
    offsets = [sum(sizes[:k]) for k in range(len(mols))]
    bond_index = torch.tensor([[o + i, o + j] for (_, bonds), o in zip(mols, offsets) for i, j, _ in bonds]).T
    bond_type = torch.tensor([t for _, bonds in mols for _, _, t in bonds])
    ei = complete_graph(batch, len(mols))[0]
    labels = edge_bond_types(ei, bond_index, bond_type, int(batch.numel()))
    want = []
    for i, j in ei.T.tolist():
        k = int(batch[i])
        want.append(rdkit_order(mols[k][0], i - offsets[k], j - offsets[k]))
    assert labels.tolist() == want
    assert set(labels.tolist()) == {0, 1, 2, 3}
    # any edge order, bonds listed in either or both directions
    perm = torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(edge_bond_types(ei[:, perm], bond_index, bond_type, batch.numel()), labels[perm])
    both = torch.cat([bond_index, bond_index.flip(0)], 1)
    assert torch.equal(edge_bond_types(ei, both, torch.cat([bond_type, bond_type]), batch.numel()), labels)
    assert torch.equal(edge_bond_types(ei, bond_index.flip(0), bond_type, batch.numel()), labels)


def test_no_bonds_and_no_edges():
    ei = complete_graph(torch.zeros(3, dtype=torch.long))[0]
    empty = torch.zeros(2, 0, dtype=torch.long)
    none = edge_bond_types(ei, empty, torch.zeros(0, dtype=torch.long), 3)
    assert torch.equal(none, torch.zeros(6, dtype=torch.long))
    out = edge_bond_types(torch.zeros(2, 0, dtype=torch.long), torch.tensor([[0], [1]]), torch.tensor([1]), 2)
    assert out.shape == (0,)


@pytest.mark.parametrize("importer", ["propmolflow", "sild"])
def test_the_generators_use_it(importer):
    import importlib

    module = importlib.import_module(f"molgen.models.{importer}.model")
    assert module.edge_bond_types is edge_bond_types
