"""MoleculeNet loader, scaffold split and Hu et al. features on the embedded real data."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from molgen.data.moleculenet import (MASK_ATOM_INDEX, load_moleculenet, murcko_scaffold, scaffold_split,
                                     smiles_to_graph)
from molgen.errors import DataError


@pytest.fixture(scope="module")
def bbbp():
    return load_moleculenet("bbbp")


def test_bbbp_parsable_rows_and_skips_counted(bbbp):
    # MANIFEST: 2050 rows, 2039 parsable by RDKit (Hu et al. keep 2039)
    assert len(bbbp) == 2039 and len(bbbp.skipped) == 11
    assert bbbp.tasks == ("p_np",) and bbbp.labels.shape == (2039, 1)
    assert set(np.unique(bbbp.labels)) == {0.0, 1.0}
    assert len(set(bbbp.rows.tolist()) | {r for r, _ in bbbp.skipped}) == 2050


def test_clintox_two_tasks_embedded():
    d = load_moleculenet("clintox")
    assert d.tasks == ("FDA_APPROVED", "CT_TOX") and len(d) + len(d.skipped) == 1484


def test_scaffold_split_deterministic_disjoint_and_sized(bbbp):
    a = scaffold_split(bbbp.smiles)
    b = scaffold_split(list(bbbp.smiles))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert [len(s) for s in a] == [1631, 204, 204]  # Hu et al.'s BBBP scaffold split sizes
    assert len(np.unique(np.concatenate(a))) == len(bbbp)
    scaff = [{murcko_scaffold(bbbp.smiles[i]) for i in s} for s in a]
    assert not (scaff[0] & scaff[1]) and not (scaff[0] & scaff[2]) and not (scaff[1] & scaff[2])


def test_train_subsample_is_seeded_and_leaves_valid_test_whole(bbbp):
    from molgen.pipelines.graphmvp import subsample_train

    split = scaffold_split(bbbp.smiles)
    a, b = subsample_train(split, 500), subsample_train(split, 500)
    assert len(a[0]) == 500 and np.array_equal(a[0], b[0])
    assert set(a[0].tolist()) <= set(split[0].tolist())           # no valid/test molecule enters training
    assert np.array_equal(a[1], split[1]) and np.array_equal(a[2], split[2])
    assert subsample_train(split, None) is split and subsample_train(split, 10**6) is split


def test_scaffold_split_largest_sets_go_to_train():
    # 6 benzene-scaffold molecules, 2 cyclohexane, 1 pyridine, 1 acyclic: the largest group fills train first
    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "c1ccccc1N", "c1ccccc1F", "c1ccccc1Cl",
              "C1CCCCC1C", "C1CCCCC1O", "c1ccncc1C", "CCO"]
    train, valid, test = scaffold_split(smiles, (0.6, 0.2, 0.2))
    assert train.tolist() == [0, 1, 2, 3, 4, 5]
    assert valid.tolist() == [6, 7]
    assert sorted(test.tolist()) == [8, 9]


def test_hu_features_shapes_and_values():
    g = smiles_to_graph("C[C@H](N)O")
    assert g.x.shape == (4, 2) and g.edge_index.shape == (2, 6) and g.edge_attr.shape == (6, 2)
    assert g.x[:, 0].tolist() == [5, 5, 6, 7]  # atomic number - 1
    assert g.x[1, 1].item() in (1, 2) and g.x[0, 1].item() == 0  # chiral centre tagged, methyl not
    benzene = smiles_to_graph("c1ccccc1")
    assert (benzene.edge_attr[:, 0] == 3).all()  # aromatic
    src, dst = benzene.edge_index
    assert {(int(i), int(j)) for i, j in zip(src, dst)} == {(int(j), int(i)) for i, j in zip(src, dst)}
    trans, cis = smiles_to_graph("F/C=C/F"), smiles_to_graph("F/C=C\\F")
    assert trans.edge_attr.tolist() == [[0, 1], [0, 1], [1, 0], [1, 0], [0, 1], [0, 1]]  # single/up, double/none
    assert cis.edge_attr[4:, 1].tolist() == [2, 2]  # the second single bond points down: cis differs
    assert smiles_to_graph("[Na+].[Cl-]").edge_index.shape == (2, 0)
    assert MASK_ATOM_INDEX not in g.x[:, 0]
    assert smiles_to_graph("*C(=O)O").x[0, 0].item() == 118  # dummy atom (in ClinTox): the "other" index


def test_every_embedded_molecule_fits_the_embeddings():
    from molgen.data.moleculenet import NUM_ATOM_TYPES, NUM_BOND_DIRECTIONS, NUM_BOND_TYPES, NUM_CHIRALITY_TAGS

    for name in ("bbbp", "clintox"):
        for s in load_moleculenet(name).smiles:
            g = smiles_to_graph(s)
            assert 0 <= g.x[:, 0].min() and g.x[:, 0].max() < NUM_ATOM_TYPES - 1
            assert 0 <= g.x[:, 1].min() and g.x[:, 1].max() < NUM_CHIRALITY_TAGS
            if g.edge_attr.numel():
                assert g.edge_attr[:, 0].max() < NUM_BOND_TYPES - 2 and g.edge_attr[:, 1].max() < NUM_BOND_DIRECTIONS


def _write(tmp_path, name, df):
    p = tmp_path / name
    with gzip.open(p, "wt") as f:
        df.to_csv(f, index=False)
    return p


def test_missing_labels_masked_and_unparsable_counted(tmp_path):
    df = pd.DataFrame({"smiles": ["CCO", "not_a_smiles", "c1ccccc1", "CCN"], "A": [1, 0, None, 0],
                       "B": [None, 1, 1, 0]})
    d = load_moleculenet(path=_write(tmp_path, "x.csv.gz", df), tasks=["A", "B"])
    assert len(d) == 3 and d.skipped == [(1, "not_a_smiles")]
    assert np.isnan(d.labels[0, 1]) and np.isnan(d.labels[1, 0]) and d.labels[2].tolist() == [0.0, 0.0]


def test_bad_inputs_give_one_line_errors(tmp_path):
    df = pd.DataFrame({"smiles": ["CCO", "CCC"], "p_np": [1, 0]})
    # the label column is missing
    with pytest.raises(DataError, match=r"label column\(s\) 'HIV_active' not found") as e:
        load_moleculenet(path=_write(tmp_path, "a.csv.gz", df), tasks=["HIV_active"])
    assert "\n" not in str(e.value)
    # a BBBP-named CSV without p_np in a user folder
    (tmp_path / "root").mkdir()
    _write(tmp_path / "root", "BBBP.csv.gz", df.rename(columns={"p_np": "label"}))
    with pytest.raises(DataError, match="'p_np' not found"):
        load_moleculenet("bbbp", tmp_path / "root")
    # an empty task
    df2 = pd.DataFrame({"smiles": ["CCO", "CCC"], "A": [None, None]})
    with pytest.raises(DataError, match="task column 'A' has no labels"):
        load_moleculenet(path=_write(tmp_path, "b.csv.gz", df2), tasks=["A"])
    # labels that are not 0/1
    df3 = pd.DataFrame({"smiles": ["CCO", "CCC"], "A": [0.5, 1]})
    with pytest.raises(DataError, match="row 2, column 'A': label '0.5' is not 0/1"):
        load_moleculenet(path=_write(tmp_path, "c.csv.gz", df3), tasks=["A"])
    # nothing parsable
    df4 = pd.DataFrame({"smiles": ["xx", "yy"], "A": [0, 1]})
    with pytest.raises(DataError, match="none of the 2 SMILES"):
        load_moleculenet(path=_write(tmp_path, "d.csv.gz", df4), tasks=["A"])
    # a set that is not embedded
    with pytest.raises(DataError, match="set data.root=FOLDER"):
        load_moleculenet("tox21")
    with pytest.raises(DataError, match="cannot be parsed"):
        smiles_to_graph("C1CC")


def test_feature_tensors_are_long():
    g = smiles_to_graph("CC(=O)O")
    assert g.x.dtype == torch.long and g.edge_attr.dtype == torch.long
