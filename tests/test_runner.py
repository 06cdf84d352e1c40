"""The stage runner: cache reuse, nothing finished destroyed, resume after an interruption."""
import json

import pytest
from omegaconf import OmegaConf

from molgen.errors import ConfigError
from molgen.runner import Stage, read_state, run_stages, write_run_report

CALLS = []


def _make(cfg, ctx):
    CALLS.append(("make", ctx.resuming))
    (ctx.dir / "numbers.txt").write_text(" ".join(str(i) for i in range(cfg.make.n)))
    return {"n": cfg.make.n}


def _total(cfg, ctx):
    CALLS.append(("total", ctx.resuming))
    numbers = [int(x) for x in (ctx.input("make") / "numbers.txt").read_text().split()]
    if cfg.total.crash:
        (ctx.dir / "partial.txt").write_text("half")
        raise RuntimeError("simulated crash")
    (ctx.dir / "total.txt").write_text(str(sum(numbers) * cfg.total.scale))
    return {"total": sum(numbers) * cfg.total.scale}


STAGES = [Stage("make", _make, ("make",)), Stage("total", _total, ("total.scale",), needs=("make",))]


def cfg(n=5, scale=1, crash=False):
    return OmegaConf.create({"make": {"n": n}, "total": {"scale": scale, "crash": crash}})


@pytest.fixture(autouse=True)
def _clear():
    CALLS.clear()


def test_second_run_reuses_everything(tmp_path):
    run_stages(STAGES, cfg(), tmp_path)
    assert CALLS == [("make", False), ("total", False)]
    CALLS.clear()
    run_stages(STAGES, cfg(), tmp_path)
    assert CALLS == []
    assert (tmp_path / "total" / "total.txt").read_text() == "10"


def test_downstream_change_keeps_upstream_and_old_artifact(tmp_path):
    run_stages(STAGES, cfg(scale=1), tmp_path)
    old_key = read_state(tmp_path / "total")["key"]
    CALLS.clear()
    run_stages(STAGES, cfg(scale=3), tmp_path)
    assert CALLS == [("total", False)]  # make reused
    assert (tmp_path / "total" / "total.txt").read_text() == "30"
    kept = tmp_path / f"total@{old_key[:8]}"
    assert (kept / "total.txt").read_text() == "10"  # nothing finished destroyed
    CALLS.clear()
    run_stages(STAGES, cfg(scale=1), tmp_path)  # back to the first config: restored, not recomputed
    assert CALLS == []
    assert (tmp_path / "total" / "total.txt").read_text() == "10"


def test_upstream_change_invalidates_downstream(tmp_path):
    run_stages(STAGES, cfg(n=5), tmp_path)
    CALLS.clear()
    run_stages(STAGES, cfg(n=6), tmp_path)
    assert [c[0] for c in CALLS] == ["make", "total"]
    assert (tmp_path / "total" / "total.txt").read_text() == "15"


def test_interrupted_stage_resumes_with_same_key(tmp_path):
    with pytest.raises(RuntimeError):
        run_stages(STAGES, cfg(crash=True), tmp_path)
    state = read_state(tmp_path / "total")
    assert state["status"] == "running"
    CALLS.clear()
    # the crash flag is not part of the stage's key, so the same command resumes the same folder
    run_stages(STAGES, cfg(crash=False), tmp_path)
    assert CALLS == [("total", True)]
    assert (tmp_path / "total" / "partial.txt").exists()  # what the interrupted attempt wrote is still there
    assert read_state(tmp_path / "total")["attempts"] == 2


def test_interrupted_stage_set_aside_resumes_when_its_config_comes_back(tmp_path):
    """A training interrupted, then a run with another config (the interrupted folder moves aside), then the
    first config again: the interrupted folder comes back and resumes; the other one is kept aside."""
    with pytest.raises(RuntimeError):
        run_stages(STAGES, cfg(crash=True), tmp_path)
    first_key = read_state(tmp_path / "total")["key"]
    run_stages(STAGES, cfg(scale=2), tmp_path)
    second_key = read_state(tmp_path / "total")["key"]
    assert (tmp_path / f"total@{first_key[:8]}" / "partial.txt").exists()
    CALLS.clear()
    run_stages(STAGES, cfg(), tmp_path)
    assert CALLS == [("total", True)]                                  # resumed, not started afresh
    assert (tmp_path / "total" / "partial.txt").exists()
    state = read_state(tmp_path / "total")
    assert state["key"] == first_key and state["attempts"] == 2 and state["status"] == "complete"
    assert (tmp_path / f"total@{second_key[:8]}" / "total.txt").read_text() == "20"


def test_single_stage_runs_its_inputs_first(tmp_path):
    run_stages(STAGES, cfg(), tmp_path, target="total")
    assert [c[0] for c in CALLS] == ["make", "total"]
    with pytest.raises(ConfigError, match="unknown stage"):
        run_stages(STAGES, cfg(), tmp_path, target="nope")


def test_report_and_metrics_side_by_side(tmp_path):
    run_stages(STAGES, cfg(), tmp_path)
    report = write_run_report(tmp_path, STAGES, cfg(), "toy")
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics == {"make": {"n": 5}, "total": {"total": 10}}
    assert "## total" in report.read_text()


def test_stage_held_by_another_live_process_is_refused(tmp_path):
    import subprocess
    import sys

    from molgen.errors import MolgenError

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
        "sys.stdin.readline()"), str(tmp_path / ".make.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"   # a live process holds the stage
        with pytest.raises(MolgenError, match="another molgen process"):
            run_stages(STAGES, cfg(), tmp_path)
        assert not (tmp_path / "make").exists()
    finally:
        holder.communicate("\n", timeout=30)               # it ends: the OS releases its lock
    (tmp_path / ".make.lock").write_text("12345")            # a leftover lock file of a dead process is no lock
    run_stages(STAGES, cfg(), tmp_path)
    assert read_state(tmp_path / "make")["status"] == "complete"


def test_an_option_added_with_a_neutral_default_keeps_finished_artifacts(tmp_path):
    stages = [STAGES[0], Stage("total", _total, ("total",), needs=("make",), ignore_keys=("total.crash",))]
    added = {"total.method": (2, "sum")}            # the schema, version 2: a new option and its neutral value
    run_stages(stages, cfg(), tmp_path, added=added)            # made before the option existed
    CALLS.clear()
    grown = cfg()
    grown.total.method = "sum"                      # the new option at the value that reproduces the old output
    run_stages(stages, grown, tmp_path, added=added)
    assert CALLS == []                              # still reused
    grown.total.method = "product"
    run_stages(stages, grown, tmp_path, added=added)
    assert CALLS == [("total", False)]              # another value is a real change


def test_checks_run_before_any_stage(tmp_path):
    def refuse(c):
        raise ConfigError("total.scale=0: cannot run here")

    guarded = [STAGES[0], Stage("total", _total, ("total.scale",), needs=("make",), check=refuse)]
    with pytest.raises(ConfigError, match="cannot run here"):
        run_stages(guarded, cfg(), tmp_path)
    assert CALLS == [] and not (tmp_path / "make").exists()


def test_a_folder_input_is_keyed_by_content_not_names_and_sizes(tmp_path):
    from molgen.runner import file_digest

    folder = tmp_path / "structures"
    folder.mkdir()
    (folder / "a.pdb").write_text("ATOM      1  CA  ALA A   1       0.000   0.000   0.000")
    before = file_digest(folder)
    (folder / "a.pdb").write_text("ATOM      1  CA  ALA A   1       1.000   0.000   0.000")  # same size
    assert file_digest(folder) != before
    (folder / "a.pdb").write_text("ATOM      1  CA  ALA A   1       0.000   0.000   0.000")
    assert file_digest(folder) == before


def test_a_follower_rank_writes_nothing_and_joins_no_finished_stage(tmp_path, monkeypatch):
    run_stages(STAGES, cfg(), tmp_path)               # rank 0 finished everything
    CALLS.clear()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_stages(STAGES, cfg(), tmp_path) == {}
    assert CALLS == [] and sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_stage_runs_with_the_runner_threads_and_the_caller_keeps_its_own(tmp_path, monkeypatch):
    import torch

    seen = []

    def threads(cfg, ctx):
        seen.append(torch.get_num_threads())
        torch.set_num_threads(1)                      # a stage may change them; the caller's count comes back
        return {}

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run_stages([Stage("threads", threads, ("make",))], cfg(), tmp_path)
    assert seen == [2] and torch.get_num_threads() == before


@pytest.mark.parametrize("value, expected", [("3", 3), ("", None), ("abc", None), ("0", None)])
def test_cpu_threads_reads_omp_num_threads_and_ignores_empty_or_malformed(monkeypatch, value, expected):
    """An empty OMP_NUM_THREADS (``OMP_NUM_THREADS= molgen run ...``) must not crash a stage's report."""
    import os

    from molgen.runner import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert cpu_threads() == (expected if expected is not None else (os.cpu_count() or 1))
