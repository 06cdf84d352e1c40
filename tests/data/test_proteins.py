"""Protein data layer: DSSP against reference DSSP files, SS elements and SS graph on real CATH domains,
readers (PDB, mmCIF, chain_set json), bad input, and the homology-aware split of the embedded subset."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from molgen.data.proteins import (Protein, assign_ss, element_string, read_proteins, read_structure, ss8_to_ss3,
                                  ss_elements, ss_graph)
from molgen.errors import DataError

DATA = Path(__file__).parents[1] / "data" / "cpdiffusion_ss"
SUBSET = Path(__file__).parents[2] / "data" / "cath_subset"


def reference_dssp(path: Path) -> str:
    """8-state string of a classic DSSP file ('-' for blank), chain-break '!' lines dropped."""
    lines = path.read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("  #  RESIDUE"))
    return "".join((l[16] if l[16] != " " else "-") for l in lines[start + 1:] if l[13] != "!")


@pytest.mark.parametrize("domain", ["1r7aA02", "1g5aA03"])
def test_dssp_matches_reference(domain):
    p = assign_ss(read_structure(DATA / f"{domain}.pdb"))
    assert p.ss8 == reference_dssp(DATA / f"{domain}.dssp")


def test_dssp_with_chain_breaks_close_to_reference():
    p = assign_ss(read_structure(DATA / "1c0pA01.pdb"))
    assert any("2 chain break" in n for n in p.notes)
    ref = reference_dssp(DATA / "1c0pA01.dssp")
    assert len(ref) == len(p)
    assert np.mean([a == b for a, b in zip(p.ss8, ref)]) > 0.97


def test_ss8_to_ss3_mapping_is_the_papers():
    assert ss8_to_ss3("HGIEBTSP- ") == "HHCEECCCCC"


def test_elements_segment_real_structure():
    p = assign_ss(read_structure(DATA / "1r7aA02.pdb"))
    elements = ss_elements(p.ss3)
    assert elements[0].start == 0 and elements[-1].end == len(p)
    for a, b in zip(elements, elements[1:]):
        assert a.end == b.start and a.ss != b.ss          # contiguous, maximal runs
    for e in elements:
        assert set(p.ss3[e.start:e.end]) == {e.ss}
    assert element_string(p.ss3) == element_string(ss8_to_ss3(reference_dssp(DATA / "1r7aA02.dssp")))


def test_ss_graph_on_real_structure():
    p = assign_ss(read_structure(DATA / "1c0pA01.pdb"))
    g = ss_graph(p)
    elements = ss_elements(p.ss3)
    assert g.num_nodes == len(elements) and g.ss == element_string(p.ss3)
    for k, e in enumerate(elements):
        np.testing.assert_allclose(g.pos[k], p.ca[e.start:e.end].mean(0), atol=1e-4)
    edges = {tuple(e) for e in g.edge_index.T}
    assert all((j, i) in edges for i, j in edges)            # undirected
    assert all((i - 1, i) in edges for i in range(1, g.num_nodes))  # sequential edges
    d = np.linalg.norm(g.pos[:, None] - g.pos[None], axis=-1)
    for i in range(g.num_nodes):
        for cand in (np.arange(i + 2, g.num_nodes), np.arange(0, max(i - 1, 0))):
            close = [j for j in cand if d[i, j] <= 20.0]
            if close:                                         # the nearest one in each direction is linked
                assert (i, min(close, key=lambda j: d[i, j])) in edges
    nonseq = [(i, j) for i, j in edges if abs(i - j) > 1]
    assert nonseq and all(d[i, j] <= 20.0 for i, j in nonseq)
    np.testing.assert_allclose(g.edge_attr, 1 / d[g.edge_index[0], g.edge_index[1]], rtol=1e-5)
    assert g.lengths.sum() == len(p)


def test_mmcif_reads_like_pdb(tmp_path):
    from Bio.PDB import MMCIFIO, PDBParser

    s = PDBParser(QUIET=True).get_structure("x", DATA / "1g5aA03.pdb")
    io = MMCIFIO()
    io.set_structure(s)
    io.save(str(tmp_path / "1g5aA03.cif"))
    a, b = read_structure(DATA / "1g5aA03.pdb"), read_structure(tmp_path / "1g5aA03.cif")
    assert a.sequence == b.sequence
    np.testing.assert_allclose(a.coords, b.coords, atol=1e-3)


def test_chain_set_json_round_trip(tmp_path):
    p = assign_ss(read_structure(DATA / "1r7aA02.pdb"))
    p.cath = ["3.40.50"]
    (tmp_path / "one.json").write_text(json.dumps([{"name": "x", "seq": p.sequence,
                                                    "coords": p.coords.round(3).tolist()}]))  # TS50 layout
    (tmp_path / "two.jsonl").write_text(json.dumps(p.to_dict()) + "\n")                     # chain_set layout
    (q,), _ = read_proteins(tmp_path / "one.json")
    (r,), _ = read_proteins(tmp_path / "two.jsonl")
    assert q.sequence == r.sequence == p.sequence and r.cath == ["3.40.50"] and r.topologies == ["3.40.50"]
    assert q.ss8 == p.ss8 == r.ss8


def test_non_standard_residue_skipped_and_noted():
    p = read_structure(DATA / "non_std_amino_acid_hetatm_1.pdb")
    assert "skipped 1x HOX" in p.notes and set(p.sequence) <= set("ACDEFGHIKLMNPQRSTVWY")
    assert any("chain break" in n for n in p.notes)   # the removed residue leaves a gap


def test_bad_inputs_give_one_line_errors(tmp_path):
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    with pytest.raises(DataError, match="empty file"):
        read_structure(empty)
    no_ca = tmp_path / "no_ca.pdb"
    no_ca.write_text("".join(l for l in (DATA / "1r7aA02.pdb").open() if l[12:16].strip() != "CA"))
    with pytest.raises(DataError, match="no amino-acid residue with a C-alpha") as e:
        read_structure(no_ca)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="file not found"):
        read_structure(tmp_path / "missing.pdb")
    with pytest.raises(DataError, match="no chain 'Z'"):
        read_structure(DATA / "1r7aA02.pdb", chain="Z")
    with pytest.raises(DataError, match="non-standard residue letters"):
        Protein("bad", "AXA", np.zeros((3, 4, 3)))


def test_embedded_split_has_no_homology_leak():
    from molgen.data.protein_split import _aligner, local_identity

    proteins, _ = read_proteins(SUBSET / "chains.jsonl.gz")
    split = {r["name"]: r["split"] for r in csv.DictReader(open(SUBSET / "split.tsv"), delimiter="\t")}
    train = [p for p in proteins if split[p.name] == "train"]
    test = [p for p in proteins if split[p.name] == "test"]
    assert len(test) >= 40 and len(train) >= 300
    train_topologies = {t for p in train for t in p.topologies}
    assert not any(set(p.topologies) & train_topologies for p in test)
    aligner = _aligner()
    worst = 0.0
    for p in test:
        for q in train:
            if aligner.score(p.sequence, q.sequence) >= 1.5 * 0.3 * min(len(p), len(q)):
                worst = max(worst, local_identity(p.sequence, q.sequence, aligner))
    assert worst < 0.3


def test_homology_clusters_link_mutants_not_strangers():
    from molgen.data.protein_split import homology_clusters, split_clusters

    a = read_structure(DATA / "1r7aA02.pdb")
    b = read_structure(DATA / "1g5aA03.pdb")
    rng = np.random.default_rng(0)
    seq = list(a.sequence)
    for i in rng.choice(len(seq), size=len(seq) * 6 // 10, replace=False):  # 40 % identity left
        seq[i] = "ACDEFGHIKLMNPQRSTVWY"[(("ACDEFGHIKLMNPQRSTVWY".index(seq[i]) + 7) % 20)]
    mutant = Protein("mutant", "".join(seq), a.coords)
    c = homology_clusters([a, b, mutant], identity=0.3, progress=False)
    assert c[0] == c[2] and c[0] != c[1]
    s = split_clusters(np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), (0.2, 0.2), seed=0)
    assert s[0] == s[1]
