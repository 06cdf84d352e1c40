"""The ``molgen`` command.

    molgen run pipeline=NAME [stage=featurize|train|sample|validate|all] [key=value ...]
    molgen run --help
    molgen validate FILE_OR_FOLDER [key=value ...]

User errors print one line ``error: ...`` and exit with status 2 (``MOLGEN_DEBUG=1`` shows the traceback).
The last line printed by a successful run is ``report: <path>``.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from molgen.errors import MolgenError

USAGE = """usage: molgen run pipeline=NAME [stage=STAGE] [key=value ...]
       molgen run --help
       molgen validate FILE_OR_FOLDER [key=value ...]   (see `molgen validate --help`)
"""


def _run_help() -> str:
    from molgen.config import GROUPS, group_options, pipeline_module, pipelines

    lines = [USAGE, "Runs a pipeline's stages (featurize -> train -> sample -> validate) in runs/<run>/<stage>/;",
             "a finished stage whose config and inputs did not change is reused, an interrupted one resumes.", "",
             "pipelines and their stages:"]
    for name in pipelines():
        try:
            stages = pipeline_module(name).STAGES
            lines.append(f"  {name}: " + " -> ".join(s.name for s in stages))
            lines += [f"      {s.name:<10s} {s.description}" for s in stages if s.description]
        except Exception as e:  # noqa: BLE001 -- help must list what it can
            lines.append(f"  {name}: (cannot be imported here: {e})")
    lines += ["", "config groups (choose with group=option):"]
    for g in GROUPS:
        lines.append(f"  {g}: {', '.join(group_options(g))}")
    lines += ["", "common keys: stage=all|<stage>  out=runs  run=<name>  seed=0  ckpt=<path>",
              "examples:",
              "  molgen run pipeline=propmolflow",
              "  molgen run pipeline=propmolflow data=qm9 trainer.max_epochs=50 trainer.accelerator=gpu trainer.devices=4",
              "  molgen run pipeline=propmolflow stage=sample ckpt=runs/propmolflow-qm9_subset/train/last.ckpt "
              "sample.n=500 condition.property=gap condition.value=6.8"]
    return "\n".join(lines)


def cmd_run(args: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in args):
        print(_run_help())
        return 0
    from molgen.config import compose, pipeline_module
    from molgen.runner import run_stages, say, write_run_report

    cfg = compose(args)
    module = pipeline_module(cfg.pipeline.name)
    run_dir = Path(cfg.out) / cfg.run
    say(f"molgen: pipeline={cfg.pipeline.name} stage={cfg.stage} run folder={run_dir}")
    run_stages(module.STAGES, cfg, run_dir, target=str(cfg.stage))
    report = write_run_report(run_dir, module.STAGES, cfg, title=f"molgen run: {cfg.pipeline.name}")
    print(f"report: {report}", flush=True)
    return 0


def cmd_validate(args: list[str]) -> int:
    try:
        from molgen.validation.cli import main as validate_main
    except ModuleNotFoundError as e:
        raise MolgenError(f"molgen validate is not available: {e}") from None
    return validate_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {"run": cmd_run, "validate": cmd_validate}
    if command not in commands:
        print(f"error: unknown command '{command}' (expected one of: {', '.join(commands)})", file=sys.stderr)
        return 2
    try:
        return commands[command](rest)
    except MolgenError as e:
        if os.environ.get("MOLGEN_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (finished stages are kept; run the same command again to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- a bug: one line, traceback on request
        if os.environ.get("MOLGEN_DEBUG"):
            traceback.print_exc()
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        loc = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        print(f"error: {type(e).__name__}: {e}{loc} (set MOLGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
