"""xTB and DFT jobs against known values; store, resume, time limits and failure recording."""
import ast
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from molgen.validation.quantum.runner import run_job, run_quantum
from molgen.validation.quantum.xtb import HARTREE_TO_EV

from tests.conftest import killed_after, killed_after_env

from .conftest import DATA

# QM9 molecule 3 (water), B3LYP/6-31G(2df,p) geometry and properties (Ramakrishnan et al. 2014, via qm9pack)
WATER_Z = np.array([8, 1, 1])
WATER_POS = np.array([[-0.0343604951, 0.9775395708, 0.0076015923], [0.0647664923, 0.0205721989, 0.0015346341],
                      [0.8717903737, 1.3007924048, 0.0006931336]])
QM9_WATER = {"homo_ev": -0.2928 * HARTREE_TO_EV, "lumo_ev": 0.0687 * HARTREE_TO_EV, "mu": 1.8511,
             "cv": 6.002, "freq_cm": [1671.4222, 3803.6305, 3907.698], "zpve_ev": 0.021375 * HARTREE_TO_EV}
R_CAL = 1.98720425864  # gas constant, cal/(mol K)


def test_water_geometry_matches_qm9pack():
    from molgen.validation.reference import qm9pack_data_dir, qm9_table

    if qm9pack_data_dir() is None:
        pytest.skip("qm9pack not installed")
    row = qm9_table(["XYZ_Ang", "HOMO_au", "LUMO_au", "Dipole_debye", "Harmonic_Freq_cmi", "ZPVE_au",
                     "Heatcapacity_Cv_cal_mol_K"]).iloc[2]
    np.testing.assert_allclose(np.array(ast.literal_eval(row["XYZ_Ang"])), WATER_POS, atol=1e-8)
    assert row["HOMO_au"] * HARTREE_TO_EV == pytest.approx(QM9_WATER["homo_ev"])
    assert row["Heatcapacity_Cv_cal_mol_K"] == QM9_WATER["cv"]
    assert ast.literal_eval(row["Harmonic_Freq_cmi"]) == QM9_WATER["freq_cm"]
    assert row["ZPVE_au"] * HARTREE_TO_EV == pytest.approx(QM9_WATER["zpve_ev"])


def test_dft_water_at_qm9_level_matches_qm9():
    """Gaussian's B3LYP (PySCF 'b3lypg') with Gaussian's 2d exponents (6-31G* d exponent x 2 and x 1/2) reproduces
    QM9's water: HOMO within 15 meV, LUMO within 80 meV, dipole within 0.01 D, alpha within 2 %. PySCF's own
    6-31G(2df,p) file (6-311G*-based d exponents) gives 1.98 D, and the VWN5 functional misses the HOMO by ~100 meV."""
    status, r, _ = run_job("dft", WATER_Z, WATER_POS, 0, {"alpha": True}, 300)
    assert status == "ok" and not r["dft_uks"] and r["dft_n_basis"] == 36
    assert abs(r["dft_homo_ev"] - QM9_WATER["homo_ev"]) < 0.015
    assert abs(r["dft_lumo_ev"] - QM9_WATER["lumo_ev"]) < 0.080
    assert abs(r["dft_gap_ev"] - (r["dft_lumo_ev"] - r["dft_homo_ev"])) < 1e-9
    assert abs(r["dft_dipole_debye"] - QM9_WATER["mu"]) < 0.01
    assert abs(r["dft_alpha_bohr3"] - 6.31) / 6.31 < 0.02
    _, bse, _ = run_job("dft", WATER_Z, WATER_POS, 0, {"pople_d": "bse"}, 300)
    assert abs(bse["dft_dipole_debye"] - QM9_WATER["mu"]) > 0.1
    _, r5, _ = run_job("dft", WATER_Z, WATER_POS, 0, {"xc": "b3lyp5"}, 300)
    assert abs(r5["dft_homo_ev"] - QM9_WATER["homo_ev"]) > 0.07


def test_gaussian_polarization_exponents():
    from molgen.validation.quantum.dft import method_name, pople_basis

    b = pople_basis("6-31G(2df,p)", ["O", "C", "H"])
    assert [s[1][0] for s in b["O"] if s[0] == 2] == [1.6, 0.4]          # 0.8 x (2, 1/2)
    assert [s[1][0] for s in b["C"] if s[0] == 2] == [1.6, 0.4]
    assert [s[1][0] for s in b["H"] if s[0] == 1] == [1.1]               # (p) on H unchanged
    assert pople_basis("6-31G(2df,p)", ["O"], "bse") == "6-31G(2df,p)"
    assert pople_basis("cc-pvdz", ["O"]) == "cc-pvdz"
    assert method_name({}) != method_name({"pople_d": "bse"})            # the store never mixes the two


def test_dft_open_shell_uses_uks():
    # methyl radical, planar, C-H 1.08 A
    pos = np.array([[0, 0, 0], [1.08, 0, 0], [-0.54, 0.935, 0], [-0.54, -0.935, 0]])
    status, r, _ = run_job("dft", np.array([6, 1, 1, 1]), pos, 0, {"basis": "6-31g"}, 120)
    assert status == "ok" and r["dft_uks"] and r["dft_spin"] == 1
    assert r["dft_dipole_debye"] < 1e-3  # D3h symmetry


def test_xtb_relaxation_strain():
    status, r, _ = run_job("xtb", WATER_Z, WATER_POS, 0, {"relax": True}, 60)
    assert status == "ok" and r["xtb_relax_converged"]
    assert 0 <= r["xtb_strain_kcal"] < 2 and r["xtb_rmsd_heavy_A"] < 0.05
    stretched = WATER_POS.copy()
    stretched[1] = WATER_POS[0] + 1.4 * (WATER_POS[1] - WATER_POS[0])  # O-H 0.96 -> 1.35 A
    _, r2, _ = run_job("xtb", WATER_Z, stretched, 0, {"relax": True}, 60)
    assert r2["xtb_strain_kcal"] > 20 * max(r["xtb_strain_kcal"], 0.1)


def test_xtb_frontier_orbitals(handmade):
    """HOMO < LUMO; conjugation narrows the gap (ethene < ethane, C-C bonds 1.33 / 1.54 A); relaxing a relaxed
    molecule leaves the gap as it was; stretching a bond narrows it."""
    status, r, _ = run_job("xtb", WATER_Z, WATER_POS, 0, {"relax": True}, 60)
    assert status == "ok" and r["xtb_homo_ev"] < r["xtb_lumo_ev"]
    assert r["xtb_gap_ev"] == pytest.approx(r["xtb_lumo_ev"] - r["xtb_homo_ev"])
    assert abs(r["xtb_relaxed_gap_ev"] - r["xtb_gap_ev"]) < 0.3
    stretched = WATER_POS.copy()
    stretched[1] = WATER_POS[0] + 1.4 * (WATER_POS[1] - WATER_POS[0])
    _, r2, _ = run_job("xtb", WATER_Z, stretched, 0, {"relax": False}, 60)
    assert r2["xtb_gap_ev"] < r["xtb_gap_ev"] - 1.0 and "xtb_relaxed_gap_ev" not in r2

    def gap(smiles):
        from rdkit import Chem
        from rdkit.Chem import AllChem

        m = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(m, randomSeed=0)
        AllChem.MMFFOptimizeMolecule(m)
        z = np.array([a.GetAtomicNum() for a in m.GetAtoms()])
        return run_job("xtb", z, m.GetConformer().GetPositions(), 0, {"relax": False}, 60)[1]["xtb_gap_ev"]

    assert gap("C=C") < gap("CC") - 2.0


def test_failures_are_recorded_not_raised(tmp_path, handmade):
    mols = [handmade["ethanol"], handmade["acetonitrile"]]
    res, m = run_quantum(mols, None, tmp_path / "q.sqlite", dft=True, timeout=0.01,
                         dft_options={"basis": "6-31g", "max_molecules": 1}, progress=False)
    assert list(res["dft_status"][:1]) == ["timeout"] and m["dft_failures"] == {"timeout": 1}
    res, m = run_quantum(mols, None, tmp_path / "q.sqlite", dft=True, timeout=60,
                         dft_options={"basis": "6-31g", "max_cycle": 1, "max_molecules": 1}, progress=False)
    assert res["dft_status"][0] == "scf_not_converged" and "not converged" in res["dft_reason"][0]
    assert m["quantum_jobs_computed"] == 1  # a timeout is retried under a longer time limit


def _store_rows(path):
    if not path.exists():
        return 0
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def test_resume_after_kill_recomputes_nothing(tmp_path):
    """Kill `molgen validate` midway through its DFT jobs, run it again: only the missing jobs run.

    The kill lands right after the second result is stored, whatever the machine's speed (polling the store every
    0.2 s and killing then raced jobs that take less)."""
    out = tmp_path / "val"
    args = ["validate", str(DATA / "handmade.sdf"), f"out={out}", "dft=true", "dft.basis=sto-3g", "dft.grid_level=0",
            "dft.conv_tol=1e-6", "dft.max_molecules=5", "posebusters=false", "distributions=false"]
    cmd = [sys.executable, "-m", "molgen.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([*killed_after(tmp_path, "molgen.validation.quantum.store:ResultStore.put", 2), *args],
                            env=killed_after_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, "the kill must land midway"
    done = _store_rows(out / "quantum.sqlite")
    assert done == 2, "the kill must land midway"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith("report: ")
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["quantum_jobs_reused_from_store"] == done and m["quantum_jobs_computed"] == 5 - done
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    m = json.loads((out / "metrics.json").read_text())
    assert m["quantum_jobs_computed"] == 0 and m["quantum_jobs_reused_from_store"] == 5


# the scaling path the README promises for validation (a local dask.distributed cluster): runs in CI
def test_dask_engine_uses_the_same_store(tmp_path, handmade):
    pytest.importorskip("distributed")
    mols = [handmade["ethanol"], handmade["acetonitrile"]]
    store = tmp_path / "q.sqlite"
    res, m = run_quantum(mols, None, store, xtb=True, workers=1, engine="dask", progress=False)
    assert list(res["xtb_status"]) == ["ok", "ok"] and m["quantum_jobs_computed"] == 2
    res2, m2 = run_quantum(mols, None, store, xtb=True, workers=2, engine="process", progress=False)
    assert m2["quantum_jobs_computed"] == 0
    np.testing.assert_allclose(res2["xtb_strain_kcal"].astype(float), res["xtb_strain_kcal"].astype(float))


# ------------------------------------------------------------------ DFT relaxation and frequencies (Cv)
def _distorted_water():
    d = WATER_POS.copy()
    d[1] = WATER_POS[0] + 1.15 * (WATER_POS[1] - WATER_POS[0])  # O-H 0.96 -> 1.10 A
    d[2] = WATER_POS[0] + 0.95 * (WATER_POS[2] - WATER_POS[0])  # O-H 0.96 -> 0.91 A
    return d


def test_dft_frequencies_water_at_qm9_level_match_qm9():
    """B3LYP/6-31G(2df,p) analytic Hessian at QM9's water geometry: three real frequencies within 15 cm^-1 of
    QM9's (PySCF's 5D shells give +9..10 cm^-1), Cv at 298.15 K within 0.01 cal/(mol K) of QM9's 6.002 and above
    the rigid-rotor 3R, ZPVE within 4 meV; QM9's geometry is a minimum at this level."""
    from molgen.validation.quantum.dft import method_name

    status, r, _ = run_job("dft", WATER_Z, WATER_POS, 0, {"frequencies": True}, 300)
    assert status == "ok" and r["dft_freq_geometry"] == "given"
    freqs = np.array(r["dft_frequencies_cm"])
    assert freqs.shape == (3,) and (freqs > 0).all() and r["dft_n_imaginary"] == 0
    assert np.abs(freqs - QM9_WATER["freq_cm"]).max() < 15
    assert abs(r["dft_cv_cal_molK"] - QM9_WATER["cv"]) < 0.01 and r["dft_cv_cal_molK"] > 3 * R_CAL
    assert abs(r["dft_zpve_ev"] - QM9_WATER["zpve_ev"]) < 0.004
    assert r["dft_is_minimum"] and r["dft_lowest_freq_cm"] == pytest.approx(freqs.min())
    assert abs(r["dft_homo_ev"] - QM9_WATER["homo_ev"]) < 0.015           # the single point is unchanged
    keys = {method_name({}), method_name({"frequencies": True}), method_name({"relax": True}),
            method_name({"relax": True, "frequencies": True}), method_name({"frequencies": True, "temperature": 300})}
    assert len(keys) == 5 and method_name({}).endswith("/cycles100")  # stores never mix; old keys still match


def test_dft_relaxation_brings_distorted_water_back_to_qm9():
    """Relax a distorted water at QM9's level: energy drops, the relaxed geometry is QM9's to < 0.005 A, the
    frequencies (at the relaxed geometry) have no imaginary one, and HOMO there matches QM9's."""
    from molgen.validation.quantum.xtb import kabsch_rmsd

    d = _distorted_water()
    status, r, _ = run_job("dft", WATER_Z, d, 0, {"relax": True, "frequencies": True}, 300)
    assert status == "ok" and r["dft_relax_converged"] and r["dft_freq_geometry"] == "relaxed"
    assert r["dft_relax_energy_drop_kcal"] > 1.0
    relaxed = np.array(r["dft_relaxed_positions"])
    assert kabsch_rmsd(d, WATER_POS) > 0.05 and kabsch_rmsd(relaxed, WATER_POS) < 0.005
    assert r["dft_relax_rmsd_heavy_A"] == pytest.approx(kabsch_rmsd(d, relaxed), abs=1e-5)  # < 3 heavy atoms: all
    assert r["dft_n_imaginary"] == 0 and r["dft_is_minimum"] and r["dft_relax_max_gradient"] < 4.5e-4
    assert abs(r["dft_cv_cal_molK"] - QM9_WATER["cv"]) < 0.01
    assert abs(r["dft_relaxed_homo_ev"] - QM9_WATER["homo_ev"]) < 0.015
    assert abs(r["dft_homo_ev"] - QM9_WATER["homo_ev"]) > 0.03             # the distorted geometry's is off


def test_dft_relax_failures_and_time_limit_are_recorded(tmp_path):
    """A relaxation that runs out of steps is a recorded failure that keeps the single point; frequencies are
    not computed at its non-stationary geometry; the time limit interrupts relaxation/Hessian jobs."""
    from molgen.data.molecule import Molecule

    water = Molecule(_distorted_water(), WATER_Z, bonds=np.array([[0, 1], [0, 2]]), bond_orders=np.array([1, 1]))
    opts = {"basis": "6-31g*", "relax": True, "relax_max_steps": 1, "frequencies": True}
    res, m = run_quantum([water], None, tmp_path / "q.sqlite", dft=True, dft_options=opts, progress=False)
    assert res["dft_status"][0] == "relax_not_converged" and "not converged in 1 steps" in res["dft_reason"][0]
    assert m["dft_failures"] == {"relax_not_converged": 1} and m["dft_relax_converged_ratio"] == 0.0
    assert np.isfinite(res["dft_homo_ev"][0]) and res["dft_relax_energy_drop_kcal"][0] > 0
    assert "dft_cv_cal_molK" not in res.columns
    # the time limit: 3 single points' time at this level on this machine (measured, not a constant: with a fixed
    # 2 s, a machine a few times faster or with more OpenMP threads finished the job in time), while the relaxation
    # (~5 gradient steps) plus the Hessian take 10-14 single points: the alarm lands inside the relaxation
    status, _, single_point = run_job("dft", WATER_Z, water.positions, 0, {}, 300)
    assert status == "ok"
    res, m = run_quantum([water], None, tmp_path / "q2.sqlite", dft=True, timeout=3 * single_point, progress=False,
                         dft_options={"relax": True, "frequencies": True})
    assert res["dft_status"][0] == "timeout" and m["dft_failures"] == {"timeout": 1}


def test_validate_reports_cv_against_the_conditional_target(tmp_path):
    """A conditionally generated molecule carrying a target Cv (SD tag ``Cv``): validate with dft.frequencies
    compares DFT's Cv with it (QM9's own water Cv as the target), writes the columns, and reuses the store."""
    import json

    import pandas as pd

    from molgen.data.molecule import Molecule
    from molgen.validation import validate

    water = Molecule(WATER_POS, WATER_Z, bonds=np.array([[0, 1], [0, 2]]), bond_orders=np.array([1, 1]),
                     properties={"Cv": QM9_WATER["cv"], "pred_Cv": 7.0}, name="qm9_000003")
    kw = dict(out=tmp_path / "val", dft=True, posebusters=False, distributions=False, progress=False,
              dft_options={"basis": "6-31g*", "frequencies": True})
    res = validate([water], **kw)
    m = res.metrics
    assert m["dft_n_ok"] == 1 and m["dft_vs_target_Cv_n"] == 1
    assert m["dft_vs_target_Cv_mae_cal_molK"] < 0.05                  # Cv is insensitive to the basis
    assert m["dft_vs_prediction_Cv_mae_cal_molK"] == pytest.approx(abs(7.0 - res.table["dft_cv_cal_molK"][0]))
    table = pd.read_csv(tmp_path / "val" / "molecules.csv")
    for col in ("dft_cv_cal_molK", "dft_zpve_ev", "dft_n_imaginary", "dft_is_minimum", "Cv_target"):
        assert col in table.columns
    assert "dft_vs_target_Cv_mae_cal_molK" in (tmp_path / "val" / "report.html").read_text()
    m2 = validate([water], **kw).metrics
    assert m2["quantum_jobs_computed"] == 0 and json.loads((tmp_path / "val" / "metrics.json").read_text())[
        "dft_cv_cal_molK_median"] == pytest.approx(m["dft_cv_cal_molK_median"])


@pytest.mark.slow  # ~2-4 min on one core
def test_dft_frequencies_on_small_qm9_molecules_match_qm9():
    """CH4, NH3, H2O, HCN (QM9 1, 2, 3, 5; embedded subset) at QM9's geometries and level: no imaginary
    frequency, frequency MAE < 15 cm^-1, Cv within 0.1 cal/(mol K) and ZPVE within 10 meV of QM9's."""
    import pandas as pd

    from molgen.data.embedded import embedded_dir
    from molgen.data.io import _SYMBOL_TO_Z

    df = pd.read_csv(embedded_dir("qm9_subset") / "qm9_subset.csv.gz").set_index("Index")
    for idx in (1, 2, 3, 5):
        row = df.loc[idx]
        z = np.array([_SYMBOL_TO_Z[e.lower()] for e in ast.literal_eval(row["Elements"])])
        status, r, _ = run_job("dft", z, np.array(ast.literal_eval(row["XYZ_Ang"])), 0, {"frequencies": True}, 600)
        qm9_freq = np.array(ast.literal_eval(row["Harmonic_Freq_cmi"]))
        freqs = np.array(r["dft_frequencies_cm"])
        assert status == "ok" and r["dft_n_imaginary"] == 0 and freqs.shape == qm9_freq.shape, row["SMILES"]
        assert np.abs(freqs - qm9_freq).mean() < 15, row["SMILES"]
        assert abs(r["dft_cv_cal_molK"] - row["Heatcapacity_Cv_cal_mol_K"]) < 0.1, row["SMILES"]
        assert abs(r["dft_zpve_ev"] - row["ZPVE_au"] * HARTREE_TO_EV) < 0.010, row["SMILES"]


FORK_AFTER_THREADS = """
import sys, numpy as np, torch
from molgen.data.io import read_molecules
from molgen.validation.quantum.runner import run_quantum
torch.set_num_threads(2)
a = torch.randn(512, 512)
for _ in range(20):
    a = torch.tanh(a @ a.T / 512)          # the parent's OpenMP pool has run (as after sampling a generator)
mols, _ = read_molecules(sys.argv[1])
res, m = run_quantum(mols[:2], None, sys.argv[2], xtb=True, workers=2, progress=False,
                     xtb_options={"max_molecules": 2})
print("done", m["quantum_jobs_computed"], int(np.isfinite(res["xtb_gap_ev"].astype(float)).sum()))
"""


def test_parallel_xtb_after_torch_threads_in_the_parent(tmp_path):
    """Workers forked from a process whose OpenMP pool had run hung in a futex before any job; they are spawned."""
    r = subprocess.run([sys.executable, "-c", FORK_AFTER_THREADS, str(DATA / "handmade.sdf"),
                        str(tmp_path / "q.sqlite")], env={**os.environ, "OMP_NUM_THREADS": "2"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-3:] == ["done", "2", "2"]
