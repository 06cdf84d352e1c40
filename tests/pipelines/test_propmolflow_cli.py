"""`molgen run pipeline=propmolflow` end to end on the embedded QM9 subset, as a user runs it."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import molgen
from molgen.data.io import read_molecules
from tests.conftest import killed_after, killed_after_env

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def molgen_run(args, timeout=900):
    return subprocess.run([sys.executable, "-m", "molgen.cli", "run", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def run_args(tmp_path_factory, tiny_propmolflow):
    out = tmp_path_factory.mktemp("runs")
    return ["pipeline=propmolflow", "condition=gap", f"out={out}", "data.max_molecules=300", *tiny_propmolflow,
            "sample.n=8"], out / "propmolflow-qm9_subset"


@pytest.fixture(scope="module")
def finished(run_args):
    args, run_dir = run_args
    r = molgen_run(args)
    assert r.returncode == 0, r.stderr[-2000:]
    return r, run_dir


def test_all_stages_end_with_report_line(finished):
    r, run_dir = finished
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"report: {run_dir / 'report.md'}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"featurize", "train", "regressor", "predictor", "sample", "validate"}
    assert "skipped" in metrics["predictor"]                       # best-of-K sampling is opt-in (predictor=none)
    v = metrics["validate"]
    assert 0.0 <= v["stability_revised_mol"] <= v["stability_revised_atom"] <= 1.0
    assert v["property"] == "gap" and v["property_mae_unit"] == "meV" and v["property_mae"] > 0
    assert (run_dir / "validate" / "report.html").exists() and (run_dir / "validate" / "molecules.csv").exists()
    mols, _ = read_molecules(run_dir / "sample" / "samples.sdf")
    assert all(abs(m.positions.mean(0)).max() < 1e-3 for m in mols)  # zero centre of mass, as generated
    report = (run_dir / "report.md").read_text()
    assert "## validate" in report and "## featurize" in report


def test_second_run_reuses_every_stage(finished, run_args):
    args, run_dir = run_args
    # other tests of this module change the sampling and the validation of the shared run: the same command first
    # brings the run folder back to this configuration (whichever tests ran before), then it must reuse everything
    assert molgen_run(args).returncode == 0
    before = (run_dir / "sample" / "samples.sdf").read_bytes()
    r = molgen_run(args)
    assert r.returncode == 0
    assert r.stdout.count("reusing") == 6 and "running" not in r.stdout.replace("molgen: pipeline", "")
    assert (run_dir / "sample" / "samples.sdf").read_bytes() == before


def test_validate_puts_other_runs_side_by_side(finished, run_args, tmp_path):
    import shutil

    args, run_dir = run_args
    assert molgen_run(args).returncode == 0               # this configuration again, whichever tests changed it
    other = tmp_path / "other-generator"
    shutil.copytree(run_dir, other)                       # a finished run judged by the same suite
    r = molgen_run([*args, "stage=validate", f"validate.compare=[{other}]"])
    assert r.returncode == 0, r.stderr
    report = (run_dir / "validate" / "report.md").read_text()
    table = report[report.index("## Side by side"):]
    assert "(this run)" in table and "| other-generator |" in table and "GeoLDM (published, QM9)" in table
    ours, theirs = [line for line in table.splitlines() if "(this run)" in line or "| other-generator |" in line]
    assert ours.split("|")[5:] == theirs.split("|")[5:]    # the same molecules give the same figures
    before = (run_dir / "validate" / "report.md").read_text()
    r = molgen_run([*args, "stage=validate", f"validate.compare=[{tmp_path}]"])   # not a run folder
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no metrics.json (not a finished molgen run folder)"]
    assert (run_dir / "validate" / "report.md").read_text() == before          # refused before any work


def test_changed_sampling_keeps_the_old_samples(finished, run_args):
    args, run_dir = run_args
    r = molgen_run([*args, "sample.n=6", "stage=sample"])
    assert r.returncode == 0 and "previous artifact kept" in r.stdout
    assert "[1/3] featurize: reusing" in r.stdout and "train: reusing" in r.stdout
    kept = [p for p in run_dir.iterdir() if p.name.startswith("sample@")]
    assert len(kept) == 1 and (kept[0] / "samples.sdf").exists()


def test_checkpoint_loads_by_path_and_samples(finished):
    _, run_dir = finished
    model = molgen.load(run_dir / "train" / "last.ckpt")
    mols = model.sample(3, condition={"gap": 6.8}, steps=3, seed=0)
    assert len(mols) == 3 and all(m.GetNumConformers() == 1 for m in mols)
    again = model.sample(3, condition={"gap": 6.8}, steps=3, seed=0)
    assert [m.GetNumAtoms() for m in mols] == [m.GetNumAtoms() for m in again]


def test_killed_training_resumes(tmp_path, tiny_propmolflow):
    args = ["pipeline=propmolflow", f"out={tmp_path}", "data.max_molecules=300", "stage=train", *tiny_propmolflow,
            "trainer.max_steps=40", "trainer.max_epochs=100", "+trainer.checkpoint_every_n_steps=1"]
    train_dir = tmp_path / "propmolflow-qm9_subset" / "train"
    # killed in the 6th training step (after last.ckpt of step 5 was written): a fixed point of the run whatever
    # the machine's speed (polling for last.ckpt every 0.5 s raced a training that can finish in less)
    killed = subprocess.run([*killed_after(tmp_path, "molgen.models.propmolflow.model:PropMolFlow.training_step", 6),
                             "run", *args], env=killed_after_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, "training ended before it could be interrupted"
    state = json.loads((train_dir / "_stage.json").read_text())
    assert state["status"] == "running"
    assert 0 < torch.load(train_dir / "last.ckpt", weights_only=True)["global_step"] < 40
    r = molgen_run(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train: resuming" in r.stdout
    state = json.loads((train_dir / "_stage.json").read_text())
    assert state["status"] == "complete" and state["metrics"]["resumed_from"].endswith("last.ckpt")
    assert state["metrics"]["steps"] == 40


def test_checkpoint_of_another_pipeline_is_refused(finished, run_args, tmp_path):
    args, _ = run_args
    cpd = molgen.checkpoint.checkpoints_dir() / "cpdiffusion_ss-cath.ckpt"
    if not cpd.exists():
        pytest.skip("no shipped checkpoint of another pipeline")
    r = molgen_run([*args, "stage=sample", f"ckpt={cpd}", f"out={tmp_path}"])
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "PropMolFlow" in r.stderr


def test_console_shows_no_library_warnings_and_the_report_counts_them(finished):
    r, run_dir = finished
    console = r.stdout + r.stderr
    for noise in ("Explicit valence", "Warning:", "GPU available", "Tip:"):
        assert noise not in console, noise
    state = json.loads((run_dir / "train" / "_stage.json").read_text())
    assert state["library_messages"]["total"] >= 1 and state["library_messages"]["examples"]
    assert "Library messages while this stage ran" in (run_dir / "report.md").read_text()
