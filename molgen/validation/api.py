"""``molgen.validate``: run the validation suite on molecules or a file and write its outputs.

Outputs in ``out`` (when given): ``metrics.json``, ``molecules.csv`` (one row per molecule), ``molecules.sdf``
(the molecules with their bonds and verdicts as SD tags), ``report.md`` and a self-contained ``report.html``,
plus ``quantum.sqlite`` (the persistent store of xTB/DFT results) when quantum checks run.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from molgen.data.molecule import Molecule
from molgen.errors import ConfigError, DataError
from molgen.formatting import jsonable
from molgen.validation.reference import Reference, load_reference
from molgen.validation.structure import structure_table, summarize_structure, with_bonds

#: Properties a conditional generator may put in SD tags (molgen user units) and the DFT column judging them.
CONDITIONAL_PROPERTIES = {"homo": ("dft_homo_ev", "eV"), "lumo": ("dft_lumo_ev", "eV"),
                          "gap": ("dft_gap_ev", "eV"), "mu": ("dft_dipole_debye", "D"),
                          "alpha": ("dft_alpha_bohr3", "Bohr^3"),
                          "Cv": ("dft_cv_cal_molK", "cal_molK")}  # Cv at 298.15 K (QM9), needs dft.frequencies
PREDICTION_PREFIXES = ("pred_", "predicted_", "regressor_")

#: Which definition each headline figure uses (written into metrics.json and the report).
HEADLINE = {
    "atom_stability": ("stability_revised_atom", "PropMolFlow revised rule (valence - charge = neutral valence)"),
    "molecule_stability": ("stability_revised_mol", "PropMolFlow revised rule + closed shell (ions count)"),
    "validity": ("validity_largest_fragment", "largest fragment sanitizes in RDKit (MiDi/FlowMol)"),
    "valid_x_unique": ("valid_x_unique", "validity (largest fragment) x uniqueness (EDM)"),
    "closed_shell_ratio": ("closed_shell_ratio", "even electron count and no RDKit radical electrons"),
}


#: The headline molecule stability when net charge zero is required (a neutral reference data set, e.g. QM9).
NEUTRAL_HEADLINE = ("stability_revised_neutral_mol", "PropMolFlow revised rule + closed shell + net charge zero "
                                                     "(the reference data set is neutral)")

_BRACKET = re.compile(r"\[[^\]]*\]")
_CHARGE = re.compile(r"(\++|-+)(\d*)")


def smiles_net_charge(smiles: str) -> int:
    """Net formal charge written in a SMILES string (bracket atoms' ``+``, ``++``, ``-2``, ...), without RDKit."""
    total = 0
    for atom in _BRACKET.findall(smiles):
        for signs, digits in _CHARGE.findall(atom):
            magnitude = int(digits) if digits else len(signs)
            total += magnitude if signs[0] == "+" else -magnitude
    return total


def resolve_require_neutral(require_neutral: bool | None, ref: Reference | None) -> tuple[bool, str]:
    """Whether the headline molecule stability requires net charge zero, and why (one phrase for the report).
    None (the default) decides from the reference data set: required when every reference molecule is neutral."""
    if require_neutral is not None:
        return bool(require_neutral), "set by require_neutral"
    if ref is None or not ref.smiles:
        return False, "no reference data set: ions count as stable"
    charged = sum(1 for smi in ref.smiles if smiles_net_charge(smi) != 0)
    if charged == 0:
        return True, f"every molecule of the reference data set ({ref.name}) is neutral"
    return False, f"{charged} reference molecule(s) of {ref.name} carry a net charge"


@dataclass
class ValidationResult:
    """Metrics (flat dict, JSON-ready) and the per-molecule table; ``out``/``report`` when written."""

    metrics: dict[str, Any]
    table: pd.DataFrame
    out: Path | None = None
    report: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def scalar_metrics(self) -> dict[str, float | int | str | None]:
        """The metrics without nested dicts (what a pipeline stage returns to the runner)."""
        return {k: v for k, v in jsonable(self.metrics, finite=True).items() if not isinstance(v, (dict, list))}

    def __repr__(self) -> str:
        h = self.metrics.get("headline", {})
        figs = ", ".join(f"{k}={v['value']:.3f}" for k, v in h.items() if isinstance(v.get("value"), float))
        return f"ValidationResult({len(self.table)} molecules, {figs})"


def _as_molecules(mols_or_path) -> tuple[list[Molecule], list[tuple[str, str]], str]:
    from molgen.data.io import read_molecules

    if isinstance(mols_or_path, (str, Path)):
        path = Path(mols_or_path)
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"empty file: {path}")
        try:
            mols, report = read_molecules(path)
        except OSError as e:  # RDKit's SDMolSupplier raises OSError on unreadable files
            raise DataError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
        return mols, report.skipped, str(mols_or_path)
    items = list(mols_or_path)
    if not items:
        raise DataError("validate: no molecules given")
    out = []
    for k, m in enumerate(items):
        out.append(m if isinstance(m, Molecule) else Molecule.from_rdkit(m, name=f"molecule {k + 1}"))
    return out, [], f"{len(out)} molecules"


def _posebusters_mode(value) -> str:
    """``posebusters=`` as given by Python, Hydra or the command line -> ``"full"``, ``"fast"`` or ``"off"``."""
    text = str(value).strip().lower()
    modes = {"true": "full", "full": "full", "1": "full", "fast": "fast", "false": "off", "off": "off", "0": "off",
             "none": "off"}
    if text not in modes:
        raise ConfigError(f"posebusters={value}: choose true, fast or false")
    return modes[text]


def validate(mols_or_path: str | Path | Iterable, reference=None, out: str | Path | None = None,
             xtb: bool = False, dft: bool = False, posebusters: bool | str = True, distributions: bool = True,
             workers: int = 1, timeout: float = 600.0, engine: str = "process",
             xtb_options: dict | None = None, dft_options: dict | None = None,
             reference_molecules: int = 2000, fcd: bool = True, fcd_reference_molecules: int = 10_000,
             progress: bool = True, title: str | None = None, require_neutral: bool | None = None,
             depictions: int = 48, viewer: int = 6) -> ValidationResult:
    """Judge molecules with molgen's validation suite.

    Args:
        mols_or_path: an SDF/XYZ file, a folder of them, or a list of :class:`Molecule` / RDKit molecules.
            Unreadable records are skipped and counted (``metrics["n_skipped_records"]``).
        reference: novelty and distribution reference: ``"qm9"`` (QM9 training split), a path (.smi/.csv/
            .sdf/.xyz), a set of SMILES or a list of molecules; None skips novelty and distributions.
        out: output folder (created); None writes nothing.
        xtb: GFN2-xTB single point + relaxation (strain, heavy-atom RMSD) via tblite.
        dft: B3LYP/6-31G(2df,p) single points via PySCF (HOMO, LUMO, gap, dipole), QM9's level of theory.
        posebusters: PoseBusters "mol" intramolecular checks: True (all, ~1.7 s per QM9-sized molecule on one
            core, mostly the internal-energy ratio), ``"fast"`` (all but the energy ratio, ~25 ms), False.
        distributions: bond/angle/torsion Wasserstein distances to the reference molecules.
        workers: processes for xTB/DFT jobs; timeout: seconds per job; engine: ``"process"`` or ``"dask"``.
        xtb_options: ``max_molecules``, ``relax``, ``fmax``, ``steps``.
        dft_options: ``max_molecules``, ``basis``, ``xc``, ``grid_level``, ``conv_tol``, ``max_cycle``, ``alpha``,
            ``relax`` (geomeTRIC relaxation: ``relax_max_steps``, ``relax_convergence``), ``frequencies``
            (analytic Hessian: Cv, ZPVE, imaginary frequencies; ``temperature``, ``imag_threshold``).
        reference_molecules: reference geometries drawn for distribution distances (``"qm9"`` only).
        fcd: Fréchet ChemNet Distance of the valid generated SMILES against ``fcd_reference_molecules``
            reference SMILES (fixed seeded subset, statistics cached; needs the ``fcd`` package).
        require_neutral: whether the headline molecule stability also needs net charge zero (QM9's convention;
            the per-molecule ``mol_stable`` never does). None: required when every reference molecule is neutral
            (so on for ``reference="qm9"``, off without a reference); the report says which and why.
        depictions: molecules drawn in report.html's grid (failures first; 0: none).
        viewer: molecules shown in interactive 3D in report.html (3Dmol.js shipped with molgen; 0: none).

    Returns:
        :class:`ValidationResult` with ``metrics`` and ``table`` (one row per molecule).
    """
    t0 = time.time()
    mols, skipped, source = _as_molecules(mols_or_path)
    ref: Reference | None = load_reference(reference, n_molecules=reference_molecules if distributions else 0)
    outdir = Path(out) if out is not None else None
    lock = None
    if outdir is not None:  # one writer per output folder: a second validate into it is refused
        from molgen.files import claim

        lock = claim(outdir, "validate", f"{outdir}")
    try:
        return _validate(mols, skipped, source, ref, outdir, xtb, dft, posebusters, distributions, workers, timeout,
                         engine, xtb_options, dft_options, fcd, fcd_reference_molecules, progress, title,
                         require_neutral, depictions, viewer, t0)
    finally:
        if lock is not None:
            lock.release()


def _validate(mols, skipped, source, ref, outdir, xtb, dft, posebusters, distributions, workers, timeout, engine,
              xtb_options, dft_options, fcd, fcd_reference_molecules, progress, title, require_neutral, depictions,
              viewer, t0) -> ValidationResult:
    table = structure_table(mols, progress=progress)
    metrics: dict[str, Any] = {"source": source, "n_skipped_records": len(skipped)}
    if skipped:
        metrics["skipped_reasons"] = _count(r for _, r in skipped)
    metrics.update(summarize_structure(table, ref.smiles if ref else None))
    metrics["reference"] = ref.name if ref else None
    bonded = [with_bonds(m)[0] for m in mols]

    pb_mode = _posebusters_mode(posebusters)
    metrics["posebusters_mode"] = pb_mode
    if pb_mode != "off":
        from molgen.validation.geometry import posebusters_table

        rd = [_posebusters_input(m, v) for m, v in zip(bonded, table["valid"])]
        pb = posebusters_table(rd, mode=pb_mode)
        table["posebusters_pass"] = pb["posebusters_pass"].values
        table["posebusters_failed"] = pb["posebusters_failed"].values
        tested = pb["posebusters_pass"].dropna()
        metrics["posebusters_pass_rate"] = float(tested.astype(bool).sum() / len(table)) if len(table) else 0.0
        metrics["posebusters_pass_rate_of_valid"] = float(tested.astype(bool).mean()) if len(tested) else None
        for col in pb.columns:
            if col not in ("posebusters_pass", "posebusters_failed"):
                vals = pb[col].dropna()
                metrics[f"posebusters_{col}"] = float(vals.astype(bool).mean()) if len(vals) else None

    if distributions and ref is not None and ref.molecules:
        from molgen.validation.geometry import distribution_distances

        ref_bonded = [with_bonds(m)[0] for m in ref.molecules]
        ref.molecules = ref_bonded
        dist = distribution_distances(bonded, ref_bonded)
        metrics["distribution_per_type"] = dist.pop("per_type")
        metrics.update(dist)
    if not fcd:
        metrics.update({"fcd": None, "fcd_note": "FCD not computed: switched off (fcd=false)."})
    elif ref is None or not ref.smiles:
        metrics.update({"fcd": None, "fcd_note": "FCD not computed: no reference SMILES (reference=none)."})
    else:
        from molgen.validation.frechet import frechet_chemnet_distance
        from molgen.validation.structure import canonical_smiles

        gen = [canonical_smiles(s) for s in table["smiles_largest_fragment"] if isinstance(s, str)]
        metrics.update(frechet_chemnet_distance([s for s in gen if s], ref.smiles, fcd_reference_molecules))

    if xtb or dft:
        from molgen.validation.quantum.runner import run_quantum

        store = (outdir or Path.cwd()) / "quantum.sqlite"
        qtable, qmetrics = run_quantum(bonded, table, store, xtb=xtb, dft=dft, workers=workers, timeout=timeout,
                                       engine=engine, xtb_options=xtb_options or {},
                                       dft_options=dft_options or {}, progress=progress)
        for col in qtable.columns:
            table[col] = qtable[col].values
        metrics.update(qmetrics)
        metrics.update(conditional_metrics(mols, table))

    neutral, why = resolve_require_neutral(require_neutral, ref)
    metrics["require_neutral"], metrics["require_neutral_reason"] = neutral, why
    headline = dict(HEADLINE, molecule_stability=NEUTRAL_HEADLINE) if neutral else HEADLINE
    metrics["headline"] = {k: {"value": metrics.get(key), "metric": key, "definition": d}
                           for k, (key, d) in headline.items()}
    metrics["seconds"] = round(time.time() - t0, 2)
    result = ValidationResult(metrics, table, outdir, None, skipped)
    if outdir is not None:
        result.report = write_outputs(result, bonded, title or f"molgen validation: {source}", ref,
                                      depictions=depictions, viewer=viewer)
    return result


def _posebusters_input(mol: Molecule, valid: bool):
    """Sanitized RDKit molecule for PoseBusters (None: not tested, because RDKit cannot sanitize it)."""
    if not valid:
        return None
    try:
        return mol.to_rdkit(sanitize=True)
    except Exception:  # noqa: BLE001
        return None


def conditional_metrics(mols: list[Molecule], table: pd.DataFrame) -> dict:
    """DFT vs the target property (SD tag ``gap``, ...) and vs a regressor's prediction (``pred_gap``, ...).

    Per property: MAE (target units; meV for orbital energies) and Pearson correlation over molecules with a
    converged DFT result.
    """
    out: dict = {}
    for prop, (col, unit) in CONDITIONAL_PROPERTIES.items():
        if col not in table.columns:
            continue
        dft = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        scale, unit_out = (1000.0, "meV") if unit == "eV" else (1.0, unit)
        sources = {"target": [m.properties.get(prop, np.nan) for m in mols]}
        for pre in PREDICTION_PREFIXES:
            if any(f"{pre}{prop}" in m.properties for m in mols):
                sources["prediction"] = [m.properties.get(f"{pre}{prop}", np.nan) for m in mols]
                break
        for what, vals in sources.items():
            v = np.asarray(vals, dtype=float)
            ok = np.isfinite(v) & np.isfinite(dft)
            if ok.sum() == 0:
                continue
            table[f"{prop}_{what}"] = v
            err = np.abs(dft[ok] - v[ok])
            out[f"dft_vs_{what}_{prop}_mae_{unit_out}"] = float(err.mean() * scale)
            out[f"dft_vs_{what}_{prop}_n"] = int(ok.sum())
            if ok.sum() > 2 and np.std(v[ok]) > 0 and np.std(dft[ok]) > 0:
                out[f"dft_vs_{what}_{prop}_pearson_r"] = float(np.corrcoef(dft[ok], v[ok])[0, 1])
    return out


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


SDF_COLUMNS = ("smiles", "valid", "mol_stable", "mol_stable_neutral", "net_charge", "mol_stable_edm", "mol_stable_lenient", "atom_stable_fraction",
               "open_shell", "n_fragments", "posebusters_pass", "xtb_strain_kcal", "xtb_rmsd_heavy_A",
               "dft_homo_ev", "dft_lumo_ev", "dft_gap_ev", "dft_dipole_debye", "dft_relax_energy_drop_kcal",
               "dft_relax_rmsd_heavy_A", "dft_cv_cal_molK", "dft_zpve_ev", "dft_n_imaginary", "dft_is_minimum",
               "dft_status", "xtb_status")


def write_outputs(result: ValidationResult, bonded: list[Molecule], title: str, ref: Reference | None,
                  depictions: int = 48, viewer: int = 6) -> Path:
    """Write metrics.json, molecules.csv, molecules.sdf, report.md and report.html into ``result.out``."""
    from molgen.data.io import write_sdf
    from molgen.validation.report import write_reports

    out = result.out
    assert out is not None
    from molgen.files import write_atomic

    write_atomic(out / "metrics.json", json.dumps(jsonable(result.metrics, finite=True), indent=2))
    write_atomic(out / "molecules.csv", result.table.to_csv(index=False))
    extra = []
    for _, row in result.table.iterrows():
        extra.append({f"molgen_validation_{c}": row[c] for c in SDF_COLUMNS
                      if c in row.index and not (isinstance(row[c], float) and math.isnan(row[c]))
                      and row[c] is not None})
    write_sdf(bonded, out / "molecules.sdf", extra=extra)
    return write_reports(result, bonded, title, ref, depictions=depictions, viewer=viewer)


def validate_from_config(source, cfg, out, title: str | None = None, reference=None):
    """Run :func:`molgen.validation.validate` with a config node shaped like configs/validate/molecules.yaml
    (what ``molgen validate`` and the pipelines' validate stages call). ``reference`` overrides ``cfg.reference``."""
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else {
        k: (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v) for k, v in cfg.items()}
    xtb, dft = dict(c.get("xtb") or {}), dict(c.get("dft") or {})
    return validate(source, reference=reference if reference is not None else c.get("reference"), out=out,
                    xtb=bool(xtb.pop("enabled", False)), dft=bool(dft.pop("enabled", False)),
                    posebusters=c.get("posebusters", True), distributions=bool(c.get("distributions", True)),
                    workers=int(c.get("workers", 1)), timeout=float(c.get("timeout", 600)),
                    engine=str(c.get("engine", "process")), xtb_options=xtb, dft_options=dft,
                    reference_molecules=int(c.get("reference_molecules", 2000)), fcd=bool(c.get("fcd", True)),
                    fcd_reference_molecules=int(c.get("fcd_reference_molecules", 10_000)), title=title,
                    require_neutral=c.get("require_neutral"), depictions=int(c.get("depictions", 48)),
                    viewer=int(c.get("viewer", 6)))
