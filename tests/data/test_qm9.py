"""QM9 loader: embedded subset, units, EDM splits, the xyz archive reader, and what a user sees on bad input."""
from __future__ import annotations

import gzip
import importlib.util
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molgen.data.qm9 import (
    EDM_SIZES, QM9_PROPERTIES, edm_assignment, edm_split_indices, edm_train_halves, included_indices, load_qm9,
)
from molgen.data.qm9_sources import (
    EMBEDDED_CSV, EMBEDDED_DIR, HARTREE_TO_EV, N_QM9, parse_qm9_xyz, qm9pack_csv_paths, read_xyz_archive,
)
from molgen.errors import ConfigError, DataError

# Published QM9 values (Ramakrishnan et al. 2014, dsgdb9nsd_000001/3.xyz, line 2) in the archive's own units:
# mu [D], alpha [Bohr^3], homo/lumo/gap [Hartree], Cv [cal/(mol K)].
METHANE = {"mu": 0.0, "alpha": 13.21, "homo": -0.3877, "lumo": 0.1171, "gap": 0.5048, "Cv": 6.469}
WATER = {"mu": 1.8511, "alpha": 6.31, "homo": -0.2928, "lumo": 0.0687, "gap": 0.3615, "Cv": 6.002}


@pytest.fixture(scope="module")
def subset_data():
    return load_qm9({"source": "embedded"}, progress=False)


@pytest.fixture(scope="module")
def subset_csv() -> pd.DataFrame:
    return pd.read_csv(EMBEDDED_DIR / EMBEDDED_CSV, dtype=str, keep_default_na=False)


def _by_name(data) -> dict:
    return {m.name: (k, m) for k, mols in data.splits.items() for m in mols}


def test_embedded_counts_add_up(subset_data, subset_csv):
    s = subset_data.summary
    assert s["read"] == len(subset_csv) == sum(s["sizes"].values()) + s["excluded"] + s["not_in_split"]
    p = s["perception"]
    assert p["ok"] + p["failed"] + p["disagree"] + p["other"] == s["read"]
    assert s["excluded"] == p["failed"] + p["disagree"] + p["other"] == sum(s["removed"].values())
    assert p["ok"] / s["read"] > 0.99
    md = subset_data.summary_markdown()
    assert "| generator |" in md and f"{p['ok']} ok" in md


@pytest.mark.parametrize("name, ref", [("dsgdb9nsd_000001", METHANE), ("dsgdb9nsd_000003", WATER)])
def test_properties_in_user_units(subset_data, name, ref):
    _, mol = _by_name(subset_data)[name]
    assert set(mol.properties) == set(QM9_PROPERTIES) == {"alpha", "gap", "homo", "lumo", "mu", "Cv"}
    for key, value in ref.items():
        factor = 27.211386 if key in ("homo", "lumo", "gap") else 1.0
        assert mol.properties[key] == pytest.approx(value * factor, rel=1e-6, abs=1e-9), key
    assert QM9_PROPERTIES["gap"].unit == "eV" and HARTREE_TO_EV == pytest.approx(27.211386, abs=1e-6)


def test_molecules_carry_perceived_graphs(subset_data):
    by_name = _by_name(subset_data)
    _, water = by_name["dsgdb9nsd_000003"]
    assert water.symbols == ["O", "H", "H"] and water.bond_orders.tolist() == [1, 1]
    _, zwitterion = by_name["dsgdb9nsd_000271"]
    assert sorted(zwitterion.formal_charges[zwitterion.formal_charges != 0].tolist()) == [-1, 1]
    for split in subset_data.splits.values():
        for m in split[:200]:
            assert m.net_charge == 0 and set(m.bond_orders.tolist()) <= {1, 2, 3}
            assert m.smiles() is not None


def test_splits_follow_edm_and_are_disjoint(subset_data, subset_csv):
    by_name = _by_name(subset_data)
    assert len(by_name) == sum(len(v) for v in subset_data.splits.values())  # no molecule in two splits
    expected = {("train", "a"): "generator", ("train", "b"): "regressor", ("valid", ""): "valid", ("test", ""): "test"}
    for row in subset_csv.itertuples(index=False):
        name = f"dsgdb9nsd_{int(row.Index):06d}"
        if name in by_name:
            assert by_name[name][0] == expected[(row.edm_split, row.edm_half)]
    # the stored split column agrees with the split recomputed from the index space
    split_of, half_of = edm_assignment()
    idx = subset_csv["Index"].astype(int).to_numpy()
    assert (split_of[idx] == subset_csv["edm_split"].to_numpy()).all()
    assert (half_of[idx] == subset_csv["edm_half"].to_numpy()).all()
    # generator_half=b swaps the two train halves
    swapped = load_qm9({"source": "embedded", "generator_half": "b", "max_molecules": 400}, progress=False)
    first = load_qm9({"source": "embedded", "max_molecules": 400}, progress=False)
    assert [m.name for m in swapped.splits["generator"]] == [m.name for m in first.splits["regressor"]]
    assert [m.name for m in swapped.splits["valid"]] == [m.name for m in first.splits["valid"]]


def test_train_smiles_cover_both_train_halves(subset_data, subset_csv):
    assert len(subset_data.train_smiles) > 0.95 * (subset_csv["edm_split"] == "train").sum()
    for key in ("generator", "regressor"):
        assert all(m.smiles() in subset_data.train_smiles for m in subset_data.splits[key][:300])


def _edm_reference(included: np.ndarray) -> dict:
    """EDM's gen_splits_gdb9 followed step by step (global NumPy seed, np.split, index lookup)."""
    state = np.random.get_state()
    try:
        n = len(included)
        n_train, n_test = 100000, int(0.1 * n)
        n_valid = n - (n_train + n_test)
        np.random.seed(0)
        perm = np.random.permutation(n)
        train, valid, test, extra = np.split(perm, [n_train, n_train + n_valid, n_train + n_valid + n_test])
        assert len(extra) == 0
        np.random.seed(42)
        fixed = np.random.permutation(n_train)
    finally:
        np.random.set_state(state)
    # EDM keeps each split in archive (= index) order; the halves index that stored order
    stored_train = np.array(sorted(included[train]))
    return {"train": stored_train, "valid": np.array(sorted(included[valid])), "test": np.array(sorted(included[test])),
            "a": stored_train[fixed[: n_train // 2]], "b": stored_train[fixed[n_train // 2:]]}


def test_edm_split_sizes_on_full_index_space():
    included = included_indices()
    assert len(included) == N_QM9
    splits = edm_split_indices(included)
    assert {k: len(v) for k, v in splits.items()} == EDM_SIZES
    all_idx = np.concatenate(list(splits.values()))
    assert len(np.unique(all_idx)) == N_QM9 and set(all_idx.tolist()) == set(included.tolist())
    a, b = edm_train_halves(splits["train"])
    assert len(a) == len(b) == 50000 and not set(a.tolist()) & set(b.tolist())
    ref = _edm_reference(included)
    for k in ("train", "valid", "test"):
        assert (splits[k] == ref[k]).all()
    assert (a == ref["a"]).all() and (b == ref["b"]).all()


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed")
def test_uncharacterized_list_matches_qm9pack():
    index = np.concatenate([pd.read_csv(p, usecols=["Index"])["Index"].to_numpy() for p in qm9pack_csv_paths()])
    assert (np.sort(index) == included_indices()).all()


def test_max_molecules_takes_first_in_file_order(subset_csv):
    data = load_qm9({"source": "embedded", "max_molecules": 25}, progress=False)
    assert data.summary["read"] == 25
    names = {m.name for mols in data.splits.values() for m in mols}
    first = {f"dsgdb9nsd_{int(i):06d}" for i in subset_csv["Index"][:25]}
    assert names <= first and len(names) == 25 - data.summary["excluded"]


# ----------------------------------------------------------------------------------- xyz archive
def _qm9_xyz_text(row, star_exponents: bool) -> str:
    """One dsgdb9nsd_*.xyz file in the archive's layout, from a qm9pack-format row."""
    els = [e.strip("'") for e in row.Elements[1:-1].split(",")]
    xyz = np.array(row.XYZ_Ang.replace("[", "").replace("]", "").split(","), dtype=float).reshape(-1, 3)
    mull = row.Mulliken_pop[1:-1].split(",")
    props = [row.RotA_GHz, row.RotB_GHz, row.RotC_GHz, row.Dipole_debye, row.Polarizability_bohr3, row.HOMO_au,
             row.LUMO_au, row.HOMO_LUMO_gap_au, row.R2_bohr2, row.ZPVE_au, row.InternalEnergy_0K_au,
             row.InternalEnergy_298K_au, row.Enthalphy_298K_au, row.GibbsFreeEnergy_298K_au,
             row.Heatcapacity_Cv_cal_mol_K]
    lines = [str(len(els)), "\t".join([f"gdb {int(row.Index)}"] + props) + "\t"]
    for k, (e, (x, y, z), q) in enumerate(zip(els, xyz, mull)):
        if star_exponents and k == 0:
            coords = [f"{c * 1e6:.10f}*^-6" for c in (x, y, z)]  # the Mathematica notation RDKit rejects
        else:
            coords = [f"{c: .10f}" for c in (x, y, z)]
        lines.append("\t".join([e] + coords + [q]))
    lines.append("\t".join(row.Harmonic_Freq_cmi[1:-1].split(",")))
    lines.append(f"{row.SMILES}\t{row.SMILES}")
    lines.append(f"{row.InChi}\t{row.InChi}")
    return "\n".join(lines) + "\n"


@pytest.fixture()
def archive_folder(tmp_path, subset_csv) -> Path:
    folder = tmp_path / "dsgdb9nsd"
    folder.mkdir()
    for row in subset_csv[subset_csv["Index"].isin(["3", "271"])].itertuples(index=False):
        (folder / f"dsgdb9nsd_{int(row.Index):06d}.xyz").write_text(_qm9_xyz_text(row, star_exponents=True))
    return folder


def test_xyz_archive_reader_with_star_exponents(archive_folder, subset_data):
    text = (archive_folder / "dsgdb9nsd_000271.xyz").read_text()
    assert "*^-6" in text
    index, smiles, z, pos, props = parse_qm9_xyz(text, "dsgdb9nsd_000271.xyz")
    ref = _by_name(subset_data)["dsgdb9nsd_000271"][1]
    assert index == 271 and smiles == "[NH3+]CCC([O-])=O"
    assert z.tolist() == ref.atomic_numbers.tolist() and np.allclose(pos, ref.positions, atol=1e-9)
    data = load_qm9({"source": "xyz_archive", "path": str(archive_folder)}, progress=False)
    got = _by_name(data)
    assert set(got) == {"dsgdb9nsd_000003", "dsgdb9nsd_000271"}
    for name, (split, mol) in got.items():
        split_ref, mol_ref = _by_name(subset_data)[name]
        assert split == split_ref and mol.bonds.tolist() == mol_ref.bonds.tolist()
        assert mol.formal_charges.tolist() == mol_ref.formal_charges.tolist()
        for key in QM9_PROPERTIES:
            assert mol.properties[key] == pytest.approx(mol_ref.properties[key], rel=1e-9)


def test_xyz_archive_tar_and_uncharacterized_list(archive_folder, tmp_path):
    (archive_folder / "uncharacterized.txt").write_text("header\n  Index  SMILES\n   271  [NH3+]CCC([O-])=O\n")
    rec = read_xyz_archive(archive_folder)
    assert rec.index == [3] and "1 uncharacterized molecules excluded" in rec.note
    tar_path = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(tar_path, "w:bz2") as tar:
        for f in sorted(archive_folder.glob("*.xyz")):
            tar.add(f, arcname=f.name)
    rec = read_xyz_archive(tar_path)  # no uncharacterized.txt next to it: molgen's embedded list (271 is kept)
    assert rec.index == [3, 271] and "embedded" in rec.note


def test_xyz_archive_skips_corrupted_file(archive_folder):
    (archive_folder / "dsgdb9nsd_000999.xyz").write_text("5\ngdb 999\tnot numbers\nC 0 0 0 0\n")
    data = load_qm9({"source": "xyz_archive", "path": str(archive_folder)}, progress=False)
    assert data.summary["read"] == 2 and data.summary["skipped_records"] == 1


# ------------------------------------------------------------------------------------- bad input
def test_missing_paths_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        load_qm9({"source": "embedded", "path": str(missing)}, progress=False)
    with pytest.raises(DataError, match="nowhere"):
        load_qm9({"source": "xyz_archive", "path": str(missing)}, progress=False)
    with pytest.raises(DataError, match=r"qm9_part1\.csv"):
        load_qm9({"source": "qm9pack", "path": str(tmp_path)}, progress=False)
    with pytest.raises(ConfigError, match="data.path"):
        load_qm9({"source": "xyz_archive"}, progress=False)
    with pytest.raises(ConfigError, match="data.source=zinc"):
        load_qm9({"source": "zinc"}, progress=False)
    with pytest.raises(ConfigError, match="generator_half"):
        load_qm9({"source": "embedded", "generator_half": "c"}, progress=False)


def _write_subset(folder: Path, text: str) -> None:
    folder.mkdir(exist_ok=True)
    with gzip.open(folder / EMBEDDED_CSV, "wt") as f:
        f.write(text)


def test_corrupted_rows_are_skipped_and_counted(tmp_path):
    with gzip.open(EMBEDDED_DIR / EMBEDDED_CSV, "rt") as f:
        lines = [next(f) for _ in range(7)]
    header, rows = lines[0], lines[1:]
    rows[1] = rows[1].replace("[[", "[[abc", 1)  # a coordinate that does not parse
    rows[3] = ",".join(rows[3].split(",")[:3]) + "\n"  # a truncated line (wrong number of fields)
    _write_subset(tmp_path / "bad", header + "".join(rows))
    data = load_qm9({"source": "embedded", "path": str(tmp_path / "bad")}, progress=False)
    assert data.summary["read"] == 4 and data.summary["skipped_records"] == 2
    # nothing readable at all: one DataError line naming the source and the reasons
    _write_subset(tmp_path / "empty", header + rows[1])
    with pytest.raises(DataError, match="no readable QM9 molecule.*corrupted row"):
        load_qm9({"source": "embedded", "path": str(tmp_path / "empty")}, progress=False)
    _write_subset(tmp_path / "notcsv", "hello,world\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        load_qm9({"source": "embedded", "path": str(tmp_path / "notcsv")}, progress=False)
