"""``molgen validate FILE_OR_FOLDER [key=value ...]``: the validation suite from the command line.

Keys and defaults are those of ``configs/validate/molecules.yaml`` plus ``out`` (output folder) and
``reference`` (default: none). ``xtb=true``/``dft=true`` switch the quantum checks on; ``dft.max_molecules=50``
and friends set their options. The last line printed is ``report: <path to report.html>``.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from molgen.errors import ConfigError

HELP = """usage: molgen validate FILE_OR_FOLDER [key=value ...]

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


def defaults():
    from molgen.config import config_dir

    cfg = OmegaConf.load(config_dir() / "validate" / "molecules.yaml")
    cfg.reference = None
    cfg.out = None
    return cfg


def parse(args: list[str]):
    """(input path, config) from the command line; raise ConfigError with one line on a bad key."""
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1:
        raise ConfigError("molgen validate needs exactly one FILE_OR_FOLDER (see `molgen validate --help`)"
                          if not paths else f"more than one input given: {' '.join(paths)}")
    cfg = defaults()
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


def run_from_config(source, cfg, out, title: str | None = None, reference=None):
    """Run :func:`molgen.validation.validate` with a config node shaped like configs/validate/molecules.yaml
    (what a pipeline's validate stage calls). ``reference`` overrides ``cfg.reference``."""
    from molgen.validation.api import validate

    c = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else {
        k: (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v) for k, v in cfg.items()}
    xtb, dft = dict(c.get("xtb") or {}), dict(c.get("dft") or {})
    return validate(source, reference=reference if reference is not None else c.get("reference"), out=out,
                    xtb=bool(xtb.pop("enabled", False)), dft=bool(dft.pop("enabled", False)),
                    posebusters=c.get("posebusters", True), distributions=bool(c.get("distributions", True)),
                    workers=int(c.get("workers", 1)), timeout=float(c.get("timeout", 600)),
                    engine=str(c.get("engine", "process")), xtb_options=xtb, dft_options=dft,
                    reference_molecules=int(c.get("reference_molecules", 2000)), fcd=bool(c.get("fcd", True)),
                    fcd_reference_molecules=int(c.get("fcd_reference_molecules", 10_000)), title=title)


def main(args: list[str]) -> int:
    if not args or any(a in ("-h", "--help", "help") for a in args):
        print(HELP)
        return 0 if args else 2
    path, cfg = parse(args)
    out = Path(cfg.out) if cfg.out else Path(f"{path.name.split('.')[0] or 'molecules'}_validation")
    result = run_from_config(path, cfg, out)
    m = result.metrics
    print(f"molgen validate: {m['n_molecules']} molecules ({m['n_skipped_records']} records skipped), "
          f"molecule stability {100 * m['stability_revised_mol']:.1f}% (PropMolFlow revised + net charge 0), "
          f"{100 * m['stability_lenient_mol']:.1f}% (lenient), {100 * m['stability_edm_mol']:.1f}% (EDM); "
          f"validity {100 * m['validity_largest_fragment']:.1f}%; closed shell {100 * m['closed_shell_ratio']:.1f}%",
          flush=True)
    print(f"report: {result.report}", flush=True)
    return 0
