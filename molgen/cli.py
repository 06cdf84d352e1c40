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

from omegaconf import OmegaConf

from molgen.errors import ConfigError, MolgenError

USAGE = """usage: molgen [-v] run pipeline=NAME [stage=STAGE] [key=value ...]
       molgen run --help
       molgen [-v] validate FILE_OR_FOLDER [key=value ...]   (see `molgen validate --help`)

-v shows the warnings of the libraries molgen drives (RDKit, Lightning, ...); by default they are counted
in the reports.
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
    from molgen.runner import launch_rank, run_stages, say, write_run_report

    cfg = compose(args)
    module = pipeline_module(cfg.pipeline.name)
    run_dir = Path(cfg.out) / cfg.run
    say(f"molgen: pipeline={cfg.pipeline.name} stage={cfg.stage} run folder={run_dir}")
    run_stages(module.STAGES, cfg, run_dir, target=str(cfg.stage))
    if launch_rank() != 0:  # a distributed follower: rank 0 writes the report
        return 0
    report = write_run_report(run_dir, module.STAGES, cfg, title=f"molgen run: {cfg.pipeline.name}")
    print(f"report: {report}", flush=True)
    return 0


VALIDATE_HELP = """usage: molgen validate FILE_OR_FOLDER [key=value ...]

Judges 3D molecules (SDF/XYZ file or a folder of them) with molgen's validation suite: structure (validity,
three stability definitions, closed shells, fragments, uniqueness, novelty), PoseBusters geometry checks,
bond/angle/torsion distribution distances, and optionally GFN2-xTB (tblite) and DFT B3LYP/6-31G(2df,p) (PySCF).
Writes metrics.json, molecules.csv, molecules.sdf, report.md and report.html into `out`.

keys (defaults in brackets):
  out=DIR                  output folder [<input name>_validation]
  reference=qm9|PATH       novelty + distribution reference: QM9 train split, or .smi/.csv/.sdf/.xyz [none]
  posebusters=true|fast|false [true]   fast: without the internal-energy ratio (~70x faster)
  distributions=true|false [true]
  fcd=true|false           [true] Frechet ChemNet Distance to the reference (fcd package; ChemNet shipped)
  fcd_reference_molecules=N [10000] reference SMILES drawn (seed 0) for FCD; their statistics are cached
  xtb=true|false           [false]     xtb.max_molecules=N [200]  xtb.relax=true|false [true]
  dft=true|false           [false]     dft.max_molecules=N [20]   dft.xc=b3lypg  dft.basis=6-31G(2df,p)
  dft.alpha=true           polarizability by finite field
  dft.relax=true           B3LYP relaxation (geomeTRIC): energy drop, RMSD, HOMO/LUMO/gap/dipole at the minimum
  dft.frequencies=true     analytic Hessian: Cv at 298.15 K, ZPVE, imaginary frequencies (at the relaxed
                           geometry with dft.relax=true, else at the given one)
  workers=N                [1] processes for xTB/DFT   timeout=SECONDS [600] per job
  engine=process|dask      [process]
Quantum results are kept in <out>/quantum.sqlite: re-running (after an interruption) recomputes nothing.

examples:
  molgen validate samples.sdf
  molgen validate samples.sdf out=val/ reference=qm9
  molgen validate samples.sdf reference=qm9 xtb=true dft=true dft.max_molecules=50 workers=2
"""


def _validate_defaults():
    from molgen.config import config_dir

    cfg = OmegaConf.load(config_dir() / "validate" / "molecules.yaml")
    cfg.reference = None
    cfg.out = None
    return cfg


def parse_validate(args: list[str]):
    """(input path, config) from the command line; raise ConfigError with one line on a bad key."""
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1:
        raise ConfigError("molgen validate needs exactly one FILE_OR_FOLDER (see `molgen validate --help`)"
                          if not paths else f"more than one input given: {' '.join(paths)}")
    cfg = _validate_defaults()
    OmegaConf.set_struct(cfg, True)
    dotlist = []
    for a in args:
        if "=" not in a:
            continue
        key, value = a.split("=", 1)
        if key in ("xtb", "dft"):
            key = f"{key}.enabled"
        dotlist.append(f"{key}={value}")
    try:
        cfg.merge_with(OmegaConf.from_dotlist(dotlist))
    except Exception as e:  # noqa: BLE001 -- OmegaConf's messages are multi-line
        raise ConfigError(f"invalid key: {str(e).splitlines()[0]} (see `molgen validate --help`)") from None
    return Path(paths[0]), cfg


def cmd_validate(args: list[str]) -> int:
    if not args or any(a in ("-h", "--help", "help") for a in args):
        print(VALIDATE_HELP)
        return 0 if args else 2
    try:
        from molgen.validation.api import validate_from_config
    except ModuleNotFoundError as e:
        raise MolgenError(f"molgen validate is not available: {e}") from None
    from molgen.console import capture_library_output

    path, cfg = parse_validate(args)
    out = Path(cfg.out) if cfg.out else Path(f"{path.name.split('.')[0] or 'molecules'}_validation")
    with capture_library_output() as captured:
        result = validate_from_config(path, cfg, out)
    if captured.total:
        print(f"molgen validate: {captured.total} library warnings (RDKit, ...) captured; `molgen -v validate ...` "
              "shows them", flush=True)
    m = result.metrics
    print(f"molgen validate: {m['n_molecules']} molecules ({m['n_skipped_records']} records skipped), "
          f"molecule stability {100 * m['headline']['molecule_stability']['value']:.1f}% "
          f"({m['headline']['molecule_stability']['definition']}), "
          f"{100 * m['stability_lenient_mol']:.1f}% (lenient), {100 * m['stability_edm_mol']:.1f}% (EDM); "
          f"validity {100 * m['validity_largest_fragment']:.1f}%; closed shell {100 * m['closed_shell_ratio']:.1f}%",
          flush=True)
    print(f"report: {result.report}", flush=True)
    return 0


def _start_command(argv: list[str]) -> list[str]:
    """Settings that belong to a molgen command (not to the library): ``-v`` shows library messages, and
    Lightning's promotional tips stay off."""
    if any(a in ("-v", "--verbose") for a in argv):
        os.environ["MOLGEN_VERBOSE"] = "1"
        argv = [a for a in argv if a not in ("-v", "--verbose")]
    os.environ.setdefault("LITLOGGER_DISABLE_TIP", "1")
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = _start_command(list(sys.argv[1:] if argv is None else argv))
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
