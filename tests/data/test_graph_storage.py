"""GraphDataset and PackedGraphs on one storage (PyG collate/separate): round trips, items, format-1 files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molgen.data.graph import STORE_FORMAT, GraphDataset, MoleculeVocab, PackedGraphStore, to_graph
from molgen.data.packed import PackedGraphs
from molgen.errors import DataError

LEGACY = Path(__file__).parent / "legacy_graphs"  # written by the code before the shared storage (PROVENANCE.md)


def assert_same_item(got: Data, want: dict) -> None:
    """Same attributes, types, dtypes, shapes and values (NaN equal to NaN)."""
    assert set(got.keys()) == set(want), (set(got.keys()), set(want))
    for key, value in want.items():
        mine = got[key]
        if torch.is_tensor(value):
            assert torch.is_tensor(mine) and mine.dtype == value.dtype and mine.shape == value.shape, key
            assert torch.equal(mine.nan_to_num(-1e9), value.nan_to_num(-1e9)), key
        else:
            assert type(mine) is type(value) and mine == value, key


def item_dict(d: Data) -> dict:
    return {k: d[k] for k in d.keys()}


def small_graphs() -> list[Data]:
    """Graphs with node (x, pos, z), edge (edge_attr) and graph-level (y) tensors, one without edges, an extra
    attribute that is not stored and idx values that are not the positions."""
    g = torch.Generator().manual_seed(0)
    out = []
    for k, (n, e) in enumerate([(3, 4), (1, 0), (5, 6), (2, 2)]):
        out.append(Data(x=torch.randint(0, 9, (n, 2), generator=g), pos=torch.randn(n, 3, generator=g),
                        z=torch.randint(1, 10, (n,), generator=g),
                        edge_index=torch.randint(0, n, (2, e), generator=g),
                        edge_attr=torch.randint(0, 4, (e, 2), generator=g), y=torch.tensor([[float(k), -1.0]]),
                        idx=10 + 3 * k, smiles="C" * n))
    return out


# ------------------------------------------------------------------------------------------ new files
def test_graph_dataset_items_equal_the_encoded_molecules_and_round_trip(real_molecules, tmp_path):
    vocab = MoleculeVocab()
    ds = GraphDataset.from_molecules(real_molecules, vocab, ("gap", "mu"))
    path = ds.save(tmp_path / "set.pt")
    raw = torch.load(path, weights_only=True)       # plain tensors, lists and dicts only
    assert raw["format"] == STORE_FORMAT and raw["kind"] == "GraphDataset" and raw["version"] == 2
    back = GraphDataset.load(path)
    assert len(back) == len(real_molecules) and back.property_names == ("gap", "mu") and back.vocab == vocab
    assert back.num_atoms().tolist() == [m.num_atoms for m in real_molecules]
    assert back.properties().shape == (len(real_molecules), 2)
    for i, m in enumerate(real_molecules):
        want = {**item_dict(to_graph(m, vocab, ("gap", "mu"))), "idx": i}
        assert_same_item(ds[i], want)
        assert_same_item(back[i], want)
        assert back.molecule(i).name == m.name
    assert_same_item(back[-1], item_dict(back[len(back) - 1]))
    with pytest.raises(IndexError):
        back[len(back)]
    assert len(list(back)) == len(back)                  # iteration stops at the end


def test_packed_graphs_items_equal_the_source_graphs_and_round_trip(tmp_path):
    graphs = small_graphs()
    packed = PackedGraphs.from_graphs(graphs, meta={"source": "test", "kept": 4})
    back = PackedGraphs.load(packed.save(tmp_path / "pairs.pt"))
    torch.load(tmp_path / "pairs.pt", weights_only=True)
    assert len(back) == 4 and back.meta == {"source": "test", "kept": 4}
    for i, g in enumerate(graphs):
        want = {k: g[k] for k in ("x", "pos", "z", "edge_index", "edge_attr", "y")}
        want.update(num_nodes=g.num_nodes, idx=g.idx)   # the extra `smiles` is not stored
        assert_same_item(packed[i], want)
        assert_same_item(back[i], want)
    # idx defaults to the position; attributes the first graph lacks are not stored
    plain = PackedGraphs.from_graphs([Data(edge_index=g.edge_index, x=g.x) for g in graphs])
    assert [plain[i].idx for i in range(4)] == [0, 1, 2, 3] and set(plain[2].keys()) == {
        "x", "edge_index", "num_nodes", "idx"}


def test_batches_offset_edges_as_before(tmp_path):
    graphs = small_graphs()
    batch = next(iter(DataLoader(PackedGraphs.from_graphs(graphs), batch_size=4)))
    assert batch.num_graphs == 4 and batch.y.shape == (4, 2) and batch.x.shape[0] == sum(g.num_nodes for g in graphs)
    assert int(batch.edge_index[:, 4:].min()) >= graphs[0].num_nodes + graphs[1].num_nodes  # third graph offset


def test_wrong_kind_and_foreign_files_are_refused(tmp_path, real_graphs):
    path = PackedGraphs.from_graphs(small_graphs()).save(tmp_path / "pairs.pt")
    with pytest.raises(DataError, match="holds a PackedGraphs data set, not a GraphDataset"):
        GraphDataset.load(path)
    with pytest.raises(DataError, match="holds a GraphDataset data set, not a PackedGraphs"):
        PackedGraphs.load(real_graphs.save(tmp_path / "set.pt"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a molgen GraphDataset file"):
        GraphDataset.load(tmp_path / "other.pt")
    with pytest.raises(DataError, match="empty data set"):
        PackedGraphs.from_graphs([])
    newer = {**real_graphs.state(), "version": 99}
    with pytest.raises(DataError, match="format 99 is newer"):
        GraphDataset(newer)
    assert issubclass(GraphDataset, PackedGraphStore) and issubclass(PackedGraphs, PackedGraphStore)


# ------------------------------------------------------------------------------------------ format 1
@pytest.fixture(scope="module")
def expected() -> dict:
    """The items the code before the shared storage returned for the two files (PROVENANCE.md)."""
    return torch.load(LEGACY / "expected_items.pt", weights_only=True)


@pytest.mark.parametrize("cls, name", [(GraphDataset, "graphdataset"), (PackedGraphs, "packedgraphs")])
def test_format1_files_load_with_the_same_items(cls, name, expected, tmp_path):
    old = LEGACY / f"{name}_v1.pt"
    assert "format" not in torch.load(old, weights_only=True)   # really a format-1 file
    ds = cls.load(old)
    resaved = cls.load(ds.save(tmp_path / "v2.pt"))       # and written again in format 2
    for d in (ds, resaved):
        assert len(d) == len(expected[name])
        for i, want in enumerate(expected[name]):
            assert_same_item(d[i], want["values"])


def test_format1_graph_dataset_keeps_names_properties_and_molecules():
    ds = GraphDataset.load(LEGACY / "graphdataset_v1.pt")
    raw = torch.load(LEGACY / "graphdataset_v1.pt", weights_only=True)
    assert ds.names == ["CCO", "CC#N", "C1CC1O", "NC(=O)CF"] and ds.property_names == ("gap", "mu")
    assert torch.equal(ds.num_atoms(), raw["atom_ptr"].diff())
    assert torch.isnan(ds.properties()[1, 1]) and ds.properties()[0, 0] == pytest.approx(5.0)
    assert [ds.molecule(i).smiles() for i in range(len(ds))] == ["CCO", "CC#N", "OC1CC1", "NC(=O)CF"]


def test_format1_packed_graphs_keep_meta_and_idx():
    ds = PackedGraphs.load(LEGACY / "packedgraphs_v1.pt")
    assert ds.meta["source"] == "etkdg" and ds.meta["kept"] == 4
    assert [ds[i].idx for i in range(len(ds))] == [0, 2, 3, 1]
