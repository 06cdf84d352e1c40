"""What a user sees from the command line: help, one-line errors, exit codes."""
import subprocess
import sys

import pytest

from molgen.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "molgen.cli", *args], capture_output=True, text=True, timeout=300)


def test_run_help_lists_pipelines_stages_and_groups(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "propmolflow" in out and "featurize" in out and "condition:" in out and "data:" in out


@pytest.mark.parametrize("args, needle", [
    (["run", "pipeline=nope"], "unknown pipeline"),
    (["run", "pipeline=propmolflow", "data=nope"], "data/nope"),
    (["run", "pipeline=propmolflow", "foo.bar=1"], "foo"),
    (["run", "stage"], "not an override"),
    (["frobnicate"], "unknown command"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_stage_is_a_config_error(tmp_path):
    r = run_cli("run", "pipeline=propmolflow", "stage=bake", f"out={tmp_path}")
    assert r.returncode == 2 and "unknown stage" in r.stderr
