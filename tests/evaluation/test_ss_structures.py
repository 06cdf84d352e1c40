"""Structure-based CPDiffusion-SS evaluation on real CATH structures (no folding model needed) and the ESMFold
oracle's availability check (on this machine: no weights, so it must refuse with one line and download nothing)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from molgen.data.proteins import element_string, read_structure, ss8_to_ss3
from molgen.errors import MolgenError
from molgen.evaluation.esmfold_oracle import ESMFOLD_WEIGHTS, esmfold_missing, mean_plddt, require_esmfold
from molgen.evaluation.ss_metrics import consistency
from molgen.evaluation.ss_structures import structure_evaluation, tm_to_template

DATA = Path(__file__).parents[1] / "data" / "cpdiffusion_ss"


def reference_ss3(domain: str) -> str:
    """3-state string of the reference DSSP file (CMBI DSSP 2.0) shipped with the domain."""
    lines = (DATA / f"{domain}.dssp").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("  #  RESIDUE"))
    return ss8_to_ss3("".join(l[16] if l[16] != " " else "-" for l in lines[start + 1:] if l[13] != "!"))


def test_ss_from_structures_matches_reference_dssp(tmp_path):
    # a "design" structure written under another name and moved in space: same SS as the reference DSSP
    p = read_structure(DATA / "1g5aA03.pdb")
    moved = tmp_path / "design_0.pdb"
    lines = []
    for line in (DATA / "1g5aA03.pdb").read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")):
            x, y, z = (float(line[30 + 8 * k:38 + 8 * k]) for k in range(3))
            line = f"{line[:30]}{z + 3.0:8.3f}{x - 11.0:8.3f}{y:8.3f}{line[54:]}"  # a rotation (axis cycle) + shift
        lines.append(line)
    moved.write_text("\n".join(lines) + "\n")
    ev = structure_evaluation([DATA / "1r7aA02.pdb", moved], template=p)
    assert ev["ss3"][0] == reference_ss3("1r7aA02")
    assert ev["ss3"][1] == reference_ss3("1g5aA03")
    # a design whose structure is the template's (moved) scores ID 100 against the template's plan
    assert consistency([ev["ss3"][1]], reference_ss3("1g5aA03"))["ID"] == pytest.approx(100.0)
    assert element_string(ev["ss3"][0]) != element_string(ev["ss3"][1])
    assert ev["tm_to_template"][1] == pytest.approx(1.0, abs=1e-3)


def test_tm_diversity_identical_and_unrelated_structures():
    same = structure_evaluation([DATA / "1r7aA02.pdb"] * 3)
    assert same["tm_diversity"] == pytest.approx(1.0, abs=1e-3)   # identical designs: no structural diversity
    # 1r7aA02 (3.90.400.10) and 1c0pA01 (3.50.50.60): unrelated folds; 1c0pA01 also has chain breaks
    mixed = structure_evaluation([DATA / "1r7aA02.pdb", DATA / "1c0pA01.pdb"])
    assert mixed["tm_diversity"] < 0.5
    related = structure_evaluation([DATA / "1r7aA02.pdb", DATA / "1g5aA03.pdb"])  # same superfamily
    assert mixed["tm_diversity"] < related["tm_diversity"] < 1.0
    assert np.isnan(structure_evaluation([DATA / "1r7aA02.pdb"])["tm_diversity"])  # one design: undefined
    a, c = read_structure(DATA / "1r7aA02.pdb"), read_structure(DATA / "1c0pA01.pdb")
    assert tm_to_template(c, a) < 0.5 and tm_to_template(a, a) == pytest.approx(1.0, abs=1e-3)


def test_bad_design_structure_is_one_line_error(tmp_path):
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    with pytest.raises(MolgenError, match="empty file"):
        structure_evaluation([DATA / "1r7aA02.pdb", empty])


def test_esmfold_missing_names_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub: the weights are absent
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(MolgenError) as e:
        require_esmfold()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("validate.oracle=esmfold:")
    assert all(w in msg for w in ESMFOLD_WEIGHTS) and str(hub) in msg
    if importlib.util.find_spec("esm") is None:
        assert "the esm package" in msg and 'pip install "fair-esm[esmfold]"' in msg
    elif importlib.util.find_spec("openfold") is None:  # fair-esm without ESMFold's extras (this machine)
        assert "dependency 'openfold'" in msg
    if importlib.util.find_spec("openfold") is None:  # OpenFold is not on PyPI: the git install is named
        assert "'openfold @ git+https://github.com/aqlaboratory/openfold.git@" in msg
    assert not hub.exists() or not any(hub.iterdir())  # nothing was downloaded
    # a configured hub folder holding the files: the weights are no longer reported
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    for w in ESMFOLD_WEIGHTS:
        (mine / "checkpoints" / w).write_bytes(b"")
    assert not any("weights" in m for m in esmfold_missing(mine))
    assert any("weights" in m and str(tmp_path / "elsewhere") in m for m in esmfold_missing(tmp_path / "elsewhere"))


def test_mean_plddt_reads_ca_b_factors(tmp_path):
    src = (DATA / "1r7aA02.pdb").read_text().splitlines()
    ca = [l for l in src if l.startswith("ATOM") and l[12:16].strip() == "CA"]
    expected = np.mean([float(l[60:66]) for l in ca])
    assert mean_plddt(DATA / "1r7aA02.pdb") == pytest.approx(expected)
    assert 0 < expected < 100


def test_too_short_design_structures_are_left_out_of_tm(tmp_path):
    # a 2-residue design (TM-align needs 3): no TM to template, and it does not enter the diversity
    lines = [l for l in (DATA / "1r7aA02.pdb").read_text().splitlines() if l.startswith("ATOM")]
    first = sorted({int(l[22:26]) for l in lines})[:2]
    short = tmp_path / "short.pdb"
    short.write_text("\n".join(l for l in lines if int(l[22:26]) in first) + "\nEND\n")
    ev = structure_evaluation([short, DATA / "1r7aA02.pdb", DATA / "1r7aA02.pdb"], template=read_structure(DATA / "1r7aA02.pdb"))
    assert len(ev["ss3"][0]) == 2
    assert np.isnan(ev["tm_to_template"][0]) and ev["tm_to_template"][1] == pytest.approx(1.0, abs=1e-3)
    assert ev["tm_diversity"] == pytest.approx(1.0, abs=1e-3)
