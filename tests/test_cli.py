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


@pytest.mark.parametrize("override, needle", [
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc: expected an integer"),
    ("trainer.max_epochs=-3", "must be >= -1"),
    ("sample.n=0", "sample.n=0: must be >= 1"),
    ("trainer.accelerator=gpx", "choose from cpu"),
    ("+trainer.no_such_arg=1", "unknown trainer key"),
    ("trainer.precision=17", "pytorch_lightning.Trainer's precision"),
    ("model.s_dim=1.5", "model.s_dim=1.5: expected an integer"),
    ("condition.property=xyz", "choose from null, alpha"),
])
def test_schema_violations_are_one_line_exit_2_before_any_stage(tmp_path, override, needle):
    r = run_cli("run", "pipeline=propmolflow", override, f"out={tmp_path}")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not any(tmp_path.iterdir()), "nothing may run or be written before the config is checked"


def test_documented_non_boolean_option_values_pass_the_schema():
    """Options whose default is a boolean but that take a documented word too."""
    from molgen.config import compose

    cfg = compose(["pipeline=propmolflow", "validate.posebusters=fast", "sample.valence_decode=true"])
    assert cfg.validate.posebusters == "fast" and cfg.sample.valence_decode is True
    with pytest.raises(Exception, match="validate.posebusters=quick: choose from"):
        compose(["pipeline=propmolflow", "validate.posebusters=quick"])


def test_any_trainer_argument_passes_through(tmp_path):
    from molgen.config import compose

    cfg = compose(["pipeline=propmolflow", "+trainer.limit_train_batches=3", "trainer.precision=bf16-mixed",
                   "+trainer.accumulate_grad_batches=2"])
    assert cfg.trainer.limit_train_batches == 3 and cfg.trainer.accumulate_grad_batches == 2


def test_every_shipped_option_of_every_group_passes_the_schema():
    """Each option of each group composes under at least one pipeline and passes the schema."""
    from molgen.config import GROUPS, compose, group_options, pipelines
    from molgen.errors import ConfigError

    for group in GROUPS[1:]:
        for option in group_options(group):
            errors = []
            for p in pipelines():
                try:
                    compose([f"pipeline={p}", f"{group}={option}"])
                    break
                except ConfigError as e:
                    errors.append(str(e))
            else:
                schema = [e for e in errors if "invalid override" not in e and "Interpolation" not in e]
                pytest.fail(f"{group}={option} fits no pipeline: {schema or errors}")
