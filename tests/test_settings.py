"""No library function or import changes process-wide settings behind its caller's back: the scoped setters of
molgen.settings restore what they change (also when the block raises), and the code that needs another setting
(RDKit's logging, OMP_NUM_THREADS for quantum jobs, PoseBusters' logger, the torch RNG, matplotlib's backend)
leaves the caller's process as it found it."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from rdkit import Chem, rdBase

from molgen.settings import (env, environ_restored, logger_level, quiet_rdkit, rdkit_log_level, rdkit_log_status,
                             set_rdkit_log_status, torch_threads)

PENTAVALENT_CARBON = "C(C)(C)(C)(C)C"   # RDKit logs "Explicit valence ... greater than permitted" for it


class Boom(Exception):
    pass


# ------------------------------------------------------------------------------------- the context managers
def test_env_sets_and_unsets_inside_and_restores_after(monkeypatch):
    monkeypatch.setenv("MOLGEN_TEST_A", "caller")
    monkeypatch.delenv("MOLGEN_TEST_B", raising=False)
    with env(MOLGEN_TEST_A=None, MOLGEN_TEST_B=3):
        assert "MOLGEN_TEST_A" not in os.environ and os.environ["MOLGEN_TEST_B"] == "3"
    assert os.environ["MOLGEN_TEST_A"] == "caller" and "MOLGEN_TEST_B" not in os.environ


def test_environ_restored_undoes_every_change(monkeypatch):
    monkeypatch.setenv("MOLGEN_TEST_A", "caller")
    monkeypatch.delenv("MOLGEN_TEST_B", raising=False)
    before = dict(os.environ)
    with pytest.raises(Boom):
        with environ_restored():
            os.environ["MOLGEN_TEST_A"] = "changed"
            os.environ["MOLGEN_TEST_B"] = "added"
            del os.environ["HOME"]
            raise Boom()
    assert dict(os.environ) == before


def test_torch_threads_sets_inside_and_restores_after():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with torch_threads():                       # no count: keep it, but undo what the block sets
        torch.set_num_threads(other)
    assert torch.get_num_threads() == before

    @torch_threads()
    def stage():
        torch.set_num_threads(other)
        return "done"

    assert stage() == "done" and torch.get_num_threads() == before


def test_rdkit_log_level_silences_below_the_level_and_restores(capfd):
    before = rdkit_log_status()
    with quiet_rdkit():
        assert not any(rdkit_log_status().values())
        assert Chem.MolFromSmiles(PENTAVALENT_CARBON) is None
    assert "Explicit valence" not in capfd.readouterr().err
    assert rdkit_log_status() == before
    with rdkit_log_level("error"):
        status = rdkit_log_status()
        assert not status["debug"] and not status["info"] and not status["warning"]
        assert status["error"] == before["error"]
    assert rdkit_log_status() == before
    with pytest.raises(ValueError, match="unknown RDKit log level"):
        with rdkit_log_level("loud"):
            pass


def test_rdkit_log_level_never_enables_a_level_the_caller_disabled():
    before = rdkit_log_status()
    try:
        rdBase.DisableLog("rdApp.error")
        with rdkit_log_level("warning"):
            assert not rdkit_log_status()["error"]
        assert not rdkit_log_status()["error"]
    finally:
        set_rdkit_log_status(before)


def test_logger_level_sets_and_restores():
    logger = logging.getLogger("molgen.test_settings")
    logger.setLevel(logging.INFO)
    with logger_level("molgen.test_settings", logging.ERROR):
        assert logger.level == logging.ERROR
    assert logger.level == logging.INFO
    logger.setLevel(logging.NOTSET)


def _state():
    return (dict(os.environ), torch.get_num_threads(), rdkit_log_status(),
            logging.getLogger("molgen.test_settings").level)


@pytest.mark.parametrize("make, inside", [
    (lambda: env(MOLGEN_TEST_RAISE="1", HOME=None), lambda: os.environ.update(MOLGEN_TEST_INSIDE="x")),
    (lambda: torch_threads(1 if torch.get_num_threads() != 1 else 2), lambda: None),
    (lambda: torch_threads(None), lambda: torch.set_num_threads(3)),
    (lambda: quiet_rdkit(), lambda: None),
    (lambda: rdkit_log_level("error"), lambda: rdBase.EnableLog("rdApp.debug")),
    (lambda: logger_level("molgen.test_settings", logging.CRITICAL), lambda: None),
], ids=["env", "torch_threads", "torch_threads_none", "quiet_rdkit", "rdkit_log_level", "logger_level"])
def test_every_context_manager_restores_when_the_body_raises(make, inside):
    before = _state()
    try:
        with pytest.raises(Boom):
            with make():
                inside()
                raise Boom()
        after = _state()
    finally:
        os.environ.pop("MOLGEN_TEST_INSIDE", None)   # what the env body itself set is not env's to undo
    if "MOLGEN_TEST_INSIDE" in after[0]:
        after[0].pop("MOLGEN_TEST_INSIDE")
    assert after == before


# ------------------------------------------------------------------------------------- imports change nothing
IMPORT_EVERYTHING = """
import importlib, json, logging, os, pkgutil, sys
# the third-party libraries molgen builds on change their own settings when they are imported (torch_geometric
# sets TORCHINDUCTOR_CACHE_DIR, pytorch_lightning its logger's level): imported first, they are not molgen's doing
import torch, torch_geometric, pytorch_lightning, rdkit.Chem
from molgen.settings import rdkit_log_status
import molgen

LOGGERS = ("posebusters", "rdkit", "pyscf", "pytorch_lightning", "lightning", "torch", "py.warnings", "")

def state():
    return {"env": dict(os.environ), "threads": torch.get_num_threads(), "rdkit": rdkit_log_status(),
            "dtype": str(torch.get_default_dtype()), "warning_filters": len(__import__("warnings").filters),
            **{f"logger {name or 'root'}": logging.getLogger(name).level for name in LOGGERS}}

names = sys.argv[1:] or [m.name for m in pkgutil.walk_packages(molgen.__path__, "molgen.")]
before = state()
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:  # a module another change broke is not this test's subject
        failed.append(f"{name}: {type(e).__name__}")
after = state()

def diff(b, a):
    if isinstance(b, dict):
        return {k: [b.get(k), a.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    return [b, a]

print(json.dumps({"changed": {k: diff(before[k], after[k]) for k in before if before[k] != after[k]},
                  "imported": len(names) - len(failed), "failed": failed}))
"""


def _import_in_fresh_process(*modules: str) -> dict:
    r = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING, *modules], capture_output=True, text=True,
                       timeout=600, env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_validation_structure_leaves_rdkit_logging_as_it_was():
    out = _import_in_fresh_process("molgen.validation.structure")
    assert out["imported"] == 1 and out["changed"] == {}, out


def test_importing_any_molgen_module_changes_no_process_wide_setting():
    out = _import_in_fresh_process()
    assert out["imported"] > 50 and out["changed"] == {}, out


# ------------------------------------------------------------------------------------- library calls
@contextlib.contextmanager
def _rdkit_output(capfd):
    """``read()`` returns what RDKit printed since the last call: to the stderr file descriptor (its default), or
    through Python's ``rdkit`` logger once something in the process called ``rdBase.LogToPythonLogger()``
    (PoseBusters does on import, and RDKit cannot switch back); that logger is listened to while the block runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("rdkit")
    logger.addHandler(handler)

    def read() -> str:
        text = capfd.readouterr().err + stream.getvalue()
        stream.seek(0)
        stream.truncate()
        return text
    try:
        yield read
    finally:
        logger.removeHandler(handler)


def test_structure_checks_are_quiet_and_leave_rdkit_logging_as_it_was(capfd):
    from molgen.data.molecule import Molecule
    from molgen.validation.structure import canonical_smiles, check_molecule

    before = rdkit_log_status()
    with _rdkit_output(capfd) as printed:
        assert canonical_smiles(PENTAVALENT_CARBON) is None
        # a carbon with five hydrogens: invalid, RDKit would log while sanitizing it
        ch5 = Molecule(np.array([[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0], [0, 0, 1.09]]),
                       [6, 1, 1, 1, 1, 1], bonds=np.array([[0, k] for k in range(1, 6)]), bond_orders=np.ones(5))
        assert check_molecule(ch5)["valid"] is False
        assert "Explicit valence" not in printed()
        assert rdkit_log_status() == before
        Chem.MolFromSmiles(PENTAVALENT_CARBON)          # the caller's RDKit still logs
        assert "Explicit valence" in printed()


def test_reading_molecules_leaves_rdkit_logging_as_it_was_between_records(tmp_path):
    from molgen.data.io import iter_molecules

    m = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    from rdkit.Chem import AllChem

    AllChem.EmbedMolecule(m, randomSeed=0)
    path = tmp_path / "two.sdf"
    with Chem.SDWriter(str(path)) as w:
        w.write(m)
        w.write(m)
    before = rdkit_log_status()
    for _ in iter_molecules(path):                 # the caller's code runs here, between two records
        assert rdkit_log_status() == before
    assert rdkit_log_status() == before


WATER_Z = np.array([8, 1, 1])
WATER_POS = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])


def test_a_quantum_job_runs_with_one_omp_thread_and_leaves_the_environment_unchanged(monkeypatch):
    import molgen.validation.quantum.xtb as xtb
    from molgen.validation.quantum.runner import run_job

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []

    def probe(numbers, positions, charge, options):
        seen.append(os.environ.get("OMP_NUM_THREADS"))
        raise Boom("fails like a job can")

    monkeypatch.setattr(xtb, "xtb_job", probe)
    before = dict(os.environ)
    status, payload, _ = run_job("xtb", WATER_Z, WATER_POS, 0, {}, 60)
    assert seen == ["1"] and status == "error" and "Boom" in payload["reason"]
    assert dict(os.environ) == before
    monkeypatch.setenv("OMP_NUM_THREADS", "2")      # the caller's own choice is used, and kept
    run_job("xtb", WATER_Z, WATER_POS, 0, {}, 60)
    assert seen == ["1", "2"] and os.environ["OMP_NUM_THREADS"] == "2"


def test_a_real_quantum_run_in_this_process_leaves_the_environment_unchanged(tmp_path, monkeypatch):
    pytest.importorskip("tblite")
    from molgen.data.molecule import Molecule
    from molgen.validation.quantum.runner import run_quantum

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = dict(os.environ)
    water = Molecule(WATER_POS, WATER_Z, bonds=np.array([[0, 1], [0, 2]]), bond_orders=np.array([1, 1]))
    res, m = run_quantum([water], None, tmp_path / "q.sqlite", xtb=True, workers=1, progress=False)
    assert list(res["xtb_status"]) == ["ok"] and m["quantum_jobs_computed"] == 1
    assert dict(os.environ) == before


def test_a_dask_quantum_run_leaves_the_environment_unchanged(tmp_path, monkeypatch):
    """dask's nanny writes OMP_NUM_THREADS, MKL_NUM_THREADS, MALLOC_TRIM_THRESHOLD_, ... into the parent's
    environment for the workers it spawns: run_quantum(engine="dask") restores it."""
    pytest.importorskip("distributed")
    pytest.importorskip("tblite")
    from molgen.data.molecule import Molecule
    from molgen.validation.quantum.runner import run_quantum

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = dict(os.environ)
    water = Molecule(WATER_POS, WATER_Z, bonds=np.array([[0, 1], [0, 2]]), bond_orders=np.array([1, 1]))
    res, _ = run_quantum([water], None, tmp_path / "q.sqlite", xtb=True, workers=1, engine="dask", progress=False)
    assert list(res["xtb_status"]) == ["ok"]
    assert dict(os.environ) == before


def test_posebusters_logger_level_and_rdkit_logging_are_restored():
    with quiet_rdkit():   # PoseBusters switches RDKit's log levels when it is imported: its doing, not molgen's
        pytest.importorskip("posebusters")
    from rdkit.Chem import AllChem

    from molgen.validation.geometry import posebusters_table

    logger = logging.getLogger("posebusters")
    level = logger.level
    m = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(m, randomSeed=0)
    before = rdkit_log_status()
    table = posebusters_table([m, None], mode="fast")
    assert len(table) == 2 and logger.level == level and rdkit_log_status() == before


def test_equivariance_error_does_not_reset_the_callers_random_stream():
    from molgen.evaluation.trajectories import equivariance_error
    from molgen.models.atom.egno import StaticBaseline

    x0, v0 = torch.randn(1, 4, 3, dtype=torch.float64), torch.randn(1, 4, 3, dtype=torch.float64)
    z = torch.full((1, 4), 6)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert equivariance_error(StaticBaseline(), x0, v0, z, n_rotations=2, seed=0) < 1e-12
    assert torch.equal(torch.rand(3), expected)


def test_plots_leave_matplotlib_backend_as_it_was(tmp_path):
    import matplotlib

    from molgen.evaluation.trajectories import plot_error_curves

    previous = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        path = plot_error_curves({"ethanol": (np.ones(3), 2 * np.ones(3))}, np.arange(3), tmp_path / "curves.png")
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(previous)


def test_capturing_library_output_leaves_rdkit_log_levels_as_they_were(capfd):
    from molgen.console import capture_library_output

    before = rdkit_log_status()
    try:
        rdBase.DisableLog("rdApp.warning")             # a caller's own choice, not RDKit's default
        chosen = rdkit_log_status()
        with capture_library_output(show=False) as captured:
            assert Chem.MolFromSmiles(PENTAVALENT_CARBON) is None
        assert captured.total == 1 and rdkit_log_status() == chosen
        assert "Explicit valence" not in capfd.readouterr().err
    finally:
        set_rdkit_log_status(before)
