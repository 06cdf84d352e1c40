"""Molecule, SDF/XYZ I/O and the graph data set on real QM9 molecules (embedded subset)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.loader import DataLoader

from molgen.data.graph import GraphDataset, MoleculeVocab, from_dense, to_graph
from molgen.data.io import parse_xyz_block, read_molecules, write_sdf, write_xyz
from molgen.data.molecule import BondOrder, Molecule
from molgen.data.qm9 import load_qm9
from molgen.errors import DataError
from molgen.testing import assert_equivariant


@pytest.fixture(scope="module")
def qm9_mols() -> list[Molecule]:
    data = load_qm9({"source": "embedded", "max_molecules": 300}, progress=False)
    mols = [m for split in data.splits.values() for m in split]
    charged = [m for m in mols if m.formal_charges.any()]
    return charged + [m for m in mols if not m.formal_charges.any()][:40]


def _same_graph(a: Molecule, b: Molecule) -> bool:
    """Same atoms, charges and bonds (bond list order may differ: a dense matrix is read row by row)."""
    return (a.atomic_numbers.tolist() == b.atomic_numbers.tolist()
            and a.formal_charges.tolist() == b.formal_charges.tolist()
            and (a.bond_matrix() == b.bond_matrix()).all())


# ------------------------------------------------------------------------------------- Molecule
def test_rdkit_round_trip_keeps_graph_charges_and_properties(qm9_mols):
    for m in qm9_mols:
        back = Molecule.from_rdkit(m.to_rdkit())
        assert _same_graph(m, back) and np.allclose(back.positions, m.positions)
        assert back.properties == pytest.approx(m.properties) and back.name == m.name
        assert Chem.MolToSmiles(Chem.RemoveHs(m.to_rdkit(sanitize=True))) == m.smiles()


def test_valences_and_bond_matrix(qm9_mols):
    for m in qm9_mols[:20]:
        # closed-shell valence with formal charges: N+ 4, O- 1, O+ 3, C+/C- 3
        neutral = np.array([{1: 1, 6: 4, 7: 3, 8: 2, 9: 1}[z] for z in m.atomic_numbers])
        q, z = m.formal_charges, m.atomic_numbers
        expected = neutral + np.where(np.isin(z, [7, 8]), q, 0) - np.where(z == 6, np.abs(q), 0)
        assert m.valences().tolist() == expected.astype(float).tolist(), m.name
        b = m.bond_matrix()
        assert (b == b.T).all() and (b > 0).sum() == 2 * m.num_bonds


def test_centered_and_aromatic_valence():
    m = Molecule(np.array([[1.0, 2, 3], [3.0, 2, 1]]), [6, 6], bonds=[[1, 0]], bond_orders=[BondOrder.AROMATIC])
    assert np.allclose(m.centered().positions.mean(0), 0) and m.bonds.tolist() == [[0, 1]]
    assert m.valences().tolist() == [1.5, 1.5] and BondOrder.AROMATIC.valence == 1.5


@pytest.mark.parametrize("kwargs, message", [
    (dict(positions=np.full((2, 3), np.nan), atomic_numbers=[6, 6]), "non-finite"),
    (dict(positions=np.zeros((3, 3)), atomic_numbers=[6, 6]), "2 atoms but 3 positions"),
    (dict(positions=np.zeros((2, 3)), atomic_numbers=[6, 0]), "unknown element"),
    (dict(positions=np.zeros((2, 3)), atomic_numbers=[6, 6], bonds=[[0, 2]], bond_orders=[1]), "missing atom"),
    (dict(positions=np.zeros((2, 3)), atomic_numbers=[6, 6], bonds=[[0, -1]], bond_orders=[1]), "missing atom"),
    (dict(positions=np.zeros((2, 3)), atomic_numbers=[6, 6], bonds=[[0, 1], [1, 0]], bond_orders=[1, 2]), "twice"),
    (dict(positions=np.zeros((2, 3)), atomic_numbers=[6, 6], bonds=[[0, 1]], bond_orders=[7]), "bond order 7"),
    (dict(positions=np.zeros((2, 3)), atomic_numbers=[6, 6], bonds=[[0, 1]], bond_orders=[1, 1]), "1 bonds but 2"),
])
def test_molecule_rejects_bad_input_with_one_line(kwargs, message):
    with pytest.raises(DataError, match=message) as e:
        Molecule(**kwargs, name="mol7")
    assert "\n" not in str(e.value) and "mol7" in str(e.value)


def test_from_rdkit_without_conformer_names_the_molecule():
    with pytest.raises(DataError, match="ethane has no 3D conformer"):
        Molecule.from_rdkit(Chem.MolFromSmiles("CC"), name="ethane")


# ------------------------------------------------------------------------------------------ I/O
def test_sdf_round_trip_is_lossless(qm9_mols, tmp_path):
    path = write_sdf(qm9_mols, tmp_path / "mols.sdf")
    text = path.read_text()
    assert "molgen_alpha" not in text and text.count(">  <alpha>") == len(qm9_mols)
    back, report = read_molecules(path)
    assert report.read == len(qm9_mols) and report.n_skipped == 0
    for a, b in zip(qm9_mols, back):
        assert _same_graph(a, b) and b.name == a.name
        assert np.allclose(a.positions, b.positions, atol=1e-4)  # molfile keeps 4 decimals
        assert b.properties == a.properties  # exact: properties are written with repr()
    assert not (tmp_path / "mols.sdf.tmp").exists()


def test_sdf_corrupted_record_is_skipped(qm9_mols, tmp_path):
    path = write_sdf(qm9_mols[:3], tmp_path / "mols.sdf")
    blocks = path.read_text().split("$$$$\n")
    lines = blocks[1].splitlines()
    lines[5] = "garbage line"  # an atom line
    path.write_text(blocks[0] + "$$$$\n" + "\n".join(lines) + "\n$$$$\n" + blocks[2] + "$$$$\n")
    mols, report = read_molecules(path)
    assert len(mols) == 2 and report.n_skipped == 1 and "record 2" in report.skipped[0][0]
    assert "skipped 1" in report.summary()


def test_xyz_star_exponents_and_fifth_column():
    block = ["3", "gdb 3\t799.58812\t437.90386", "O\t-3.43604951*^-2\t 0.9775395708\t 0.0076015923\t-0.589706",
             "H\t 0.0647664923\t 2.05721989*^-2\t 0.0015346341\t 0.294853",
             "H\t 0.8717903737\t 1.3007924048\t 6.931336*^-4\t 0.294853"]
    mol, comment = parse_xyz_block(block, "water.xyz")
    assert mol.symbols == ["O", "H", "H"] and comment.startswith("gdb 3")
    assert np.allclose(mol.positions[:, 0], [-0.0343604951, 0.0647664923, 0.8717903737])
    assert mol.positions[2, 2] == pytest.approx(6.931336e-4)
    # RDKit's own reader rejects this notation, which is why molgen parses XYZ itself
    assert Chem.MolFromXYZBlock("\n".join(block[:1] + [""] + [" ".join(b.split()[:4]) for b in block[2:]])) is None


def test_xyz_round_trip_and_bad_blocks(qm9_mols, tmp_path):
    path = write_xyz(qm9_mols[:5], tmp_path / "mols.xyz")
    back, report = read_molecules(path)
    assert [m.atomic_numbers.tolist() for m in back] == [m.atomic_numbers.tolist() for m in qm9_mols[:5]]
    assert all(np.allclose(a.positions, b.positions, atol=1e-6) for a, b in zip(qm9_mols, back))
    text = path.read_text().splitlines()
    n0 = qm9_mols[0].num_atoms
    text[2] = "Xx 0.0 0.0 0.0"  # unknown element in the first block
    path.write_text("\n".join(text) + "\n")
    back, report = read_molecules(path)
    assert len(back) == 4 and report.n_skipped == 1 and "unknown element" in report.skipped[0][1]
    assert n0 > 0


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="file not found: .*missing.sdf"):
        read_molecules(tmp_path / "missing.sdf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .sdf/.xyz files in folder"):
        read_molecules(tmp_path / "empty")
    (tmp_path / "bad.xyz").write_text("2\n\nC 0 0\n")
    with pytest.raises(DataError, match="no readable molecule in .*bad.xyz.*skipped 1"):
        read_molecules(tmp_path / "bad.xyz")
    (tmp_path / "mol.pdb").write_text("ATOM\n")
    with pytest.raises(DataError, match="unsupported format '.pdb'"):
        read_molecules(tmp_path / "mol.pdb")


# ---------------------------------------------------------------------------------------- graphs
def test_graph_dataset_round_trip_weights_only(qm9_mols, tmp_path):
    vocab = MoleculeVocab()
    ds = GraphDataset.from_molecules(qm9_mols, vocab, ("alpha", "gap"))
    path = ds.save(tmp_path / "train.pt")
    torch.load(path, weights_only=True)  # plain tensors, lists and dicts only
    ds2 = GraphDataset.load(path)
    assert len(ds2) == len(qm9_mols) and ds2.property_names == ("alpha", "gap")
    assert ds2.num_atoms().tolist() == [m.num_atoms for m in qm9_mols]
    for i, m in enumerate(qm9_mols):
        back = ds2.molecule(i)
        assert _same_graph(m, back) and back.name == m.name
        assert np.allclose(back.positions, m.centered().positions, atol=1e-5)
        assert back.properties["gap"] == pytest.approx(m.properties["gap"], rel=1e-6)
    batch = next(iter(DataLoader(ds2, batch_size=4)))
    n0 = qm9_mols[0].num_atoms
    assert batch.bond_index[:, ds2[0].bond_index.shape[1]:].min() >= n0  # second molecule offset by PyG
    assert batch.y.shape == (4, 2)


def test_graph_is_translation_invariant_and_dense_round_trip(qm9_mols):
    vocab = MoleculeVocab()
    m = qm9_mols[0]
    g1 = to_graph(m, vocab)
    # centred: translations drop out of the graph's positions (and rotations rotate them)
    assert_equivariant(lambda pos: to_graph(Molecule(pos, m.atomic_numbers, m.formal_charges, m.bonds, m.bond_orders,
                                                     m.properties), vocab).pos.double(),
                       m.positions, "position", "vector", permute=False, translation_scale=7.5, atol=1e-5, rtol=1e-5)
    assert g1.pos.mean(0).abs().max() < 1e-5
    dense = torch.zeros(m.num_atoms, m.num_atoms, dtype=torch.long)
    dense[g1.bond_index[0], g1.bond_index[1]] = g1.bond_type
    back = from_dense(g1.pos, g1.atom_type, g1.charge, dense, vocab)
    assert _same_graph(m, back)


def test_vocab_rejects_unknown_element_and_charge():
    vocab = MoleculeVocab()
    cl = Molecule(np.array([[0.0, 0, 0], [1.3, 0, 0]]), [6, 17], name="chloro")
    assert vocab.check(cl) == "element Cl not in the model's vocabulary"
    with pytest.raises(DataError, match="chloro: element Cl"):
        to_graph(cl, vocab)
    q = Molecule(np.zeros((1, 3)), [6], formal_charges=[-3])
    assert "formal charge -3" in vocab.check(q)
    with pytest.raises(DataError, match="empty data set"):
        GraphDataset.from_molecules([], vocab)
    with pytest.raises(DataError, match="data set file not found"):
        GraphDataset.load("/nonexistent/train.pt")
