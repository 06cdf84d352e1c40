"""Fréchet ChemNet Distance on real data: QM9 against QM9 is small, drug-like molecules against QM9 are far;
the reference statistics are cached; without the fcd package the report says so."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from molgen.data.embedded import embedded_dir
from molgen.validation.structure import canonical_smiles

pytest.importorskip("fcd")


@pytest.fixture(scope="module")
def smiles_sets():
    """Two disjoint random QM9 samples (embedded subset) and BBBP's drug-like molecules (MoleculeNet)."""
    qm9 = pd.read_csv(embedded_dir("qm9_subset") / "qm9_subset.csv.gz", usecols=["SMILES"])["SMILES"]
    qm9 = [c for c in (canonical_smiles(s) for s in qm9) if c]
    perm = np.random.RandomState(0).permutation(len(qm9))
    bbbp = pd.read_csv(embedded_dir("moleculenet") / "BBBP.csv.gz")["smiles"]
    drugs = [c for c in (canonical_smiles(s) for s in bbbp) if c]
    drugs = [drugs[i] for i in np.random.RandomState(0).permutation(len(drugs))[:500]]
    return {"reference": {qm9[i] for i in perm[:1000]}, "qm9": [qm9[i] for i in perm[1000:1500]], "drugs": drugs}


def test_fcd_qm9_vs_qm9_small_drugs_vs_qm9_large_and_cached(smiles_sets, tmp_path):
    from molgen.validation.frechet import frechet_chemnet_distance

    ref = smiles_sets["reference"]
    assert not ref & set(smiles_sets["qm9"])
    same = frechet_chemnet_distance(smiles_sets["qm9"], ref, n_reference=1000, cache=tmp_path)
    far = frechet_chemnet_distance(smiles_sets["drugs"], ref, n_reference=1000, cache=tmp_path)
    assert not same["fcd_reference_cached"] and far["fcd_reference_cached"]   # ChemNet ran once on the reference
    assert len(list(tmp_path.glob("reference_1000_*.npz"))) == 1
    assert same["fcd_n_generated"] == 500 and same["fcd_n_reference"] == 1000
    assert 0 < same["fcd"] < 3 and far["fcd"] > 10 * same["fcd"]
    # a smaller reference subset is a different, seeded sample with its own cache entry
    sub = frechet_chemnet_distance(smiles_sets["qm9"][:50], ref, n_reference=100, cache=tmp_path)
    assert sub["fcd_n_reference"] == 100 and len(list(tmp_path.glob("reference_*.npz"))) == 2


def test_reference_subset_is_fixed_and_seeded():
    from molgen.validation.frechet import reference_subset

    pool = {f"C{'C' * k}O" for k in range(50)}
    a, b = reference_subset(pool, 10, seed=0), reference_subset(list(pool)[::-1], 10, seed=0)
    assert a == b and len(a) == 10 and a == sorted(a) and set(a) <= pool
    assert reference_subset(pool, 10, seed=1) != a and reference_subset(pool, 100) == sorted(pool)


def test_validate_reports_fcd_or_why_not(tmp_path, monkeypatch, smiles_sets, handmade):
    from molgen.validation import validate

    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path / "cache"))
    mols = list(handmade.values())
    ref = set(sorted(smiles_sets["reference"])[:200])
    res = validate(mols, reference=ref, out=tmp_path / "val", posebusters=False, distributions=False,
                   progress=False)
    m = res.metrics
    n_valid = int(res.table["smiles_largest_fragment"].notna().sum())
    assert m["fcd"] > 0 and m["fcd_n_generated"] == n_valid and m["fcd_n_reference"] == 200
    assert len(list((tmp_path / "cache" / "fcd").glob("*.npz"))) == 1
    html = (tmp_path / "val" / "report.html").read_text()
    assert f"FCD = {m['fcd']:.3f}" in html and "ChemNet v0.13" in html

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fcd" else real_find_spec(name, *a))
    res = validate(mols, reference=ref, out=tmp_path / "val2", posebusters=False, distributions=False,
                   progress=False)
    assert res.metrics["fcd"] is None
    assert "fcd package is not installed" in (tmp_path / "val2" / "report.html").read_text()
