"""Training scales out through Lightning DDP: two CPU processes (gloo) train one PropMolFlow to a report, and a
killed DDP training resumes; the loss curve and the checkpoint are those of one run, not two."""
import csv
import json
import os
import signal
import subprocess
import sys

import torch

from tests.conftest import killed_after, killed_after_env

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_process_ddp_training_is_one_run_and_resumes_after_a_kill(tmp_path, tiny_propmolflow):
    args = ["pipeline=propmolflow", f"out={tmp_path}", "data.max_molecules=300", "stage=train", *tiny_propmolflow,
            "trainer.max_steps=40", "trainer.max_epochs=100", "+trainer.checkpoint_every_n_steps=1",
            "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    command = [sys.executable, "-m", "molgen.cli", "run", *args]
    train_dir = tmp_path / "propmolflow-qm9_subset" / "train"
    # both ranks die at once, as on a lost node, in rank 0's 6th training step (after last.ckpt of step 5 was
    # written and the rows before it logged): a fixed point of the run whatever the machine's speed (polling for
    # last.ckpt and killing 0.5 s later raced the training)
    killed = subprocess.run([*killed_after(tmp_path, "molgen.models.propmolflow.model:PropMolFlow.training_step", 6),
                             "run", *args], env=killed_after_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, "training ended before it could be interrupted"
    assert json.loads((train_dir / "_stage.json").read_text())["status"] == "running"
    resumed_from = torch.load(train_dir / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < resumed_from < 40

    r = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == f"report: {tmp_path / 'propmolflow-qm9_subset' / 'report.md'}"
    assert r.stdout.count("train: resuming") == 1          # rank 1 prints nothing of its own
    state = json.loads((train_dir / "_stage.json").read_text())
    assert state["status"] == "complete" and state["attempts"] == 2
    assert state["metrics"]["resumed_from"].endswith("last.ckpt") and state["metrics"]["steps"] == 40
    ckpt = torch.load(train_dir / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 40 and ckpt["molgen"]["pipeline"] == "propmolflow"
    with open(train_dir / "logs" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(set(steps)), "a step logged twice: two runs' curves, not one"
    assert min(steps) < resumed_from <= max(steps), "rows from before the interruption were dropped"
    assert len(steps) == 40, steps                 # one row per optimizer step, 0..39
    assert not list(train_dir.rglob("_ddp.json"))  # the rendezvous marker is gone
