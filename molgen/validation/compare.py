"""Side-by-side table of molecule generators judged by the same validation suite (SiLD vs PropMolFlow, ...),
next to the published QM9 figures of EDM and GeoLDM (Hoogeboom et al. 2022, Table 1; Xu et al. 2023, Table 1;
10,000 samples each). Used by the validate stage (``validate.compare=[RUN_DIR, ...]``) and by
``scripts/compare_generators.py``.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from molgen.errors import DataError
from molgen.formatting import fmt, markdown_table, pct

PUBLISHED = [  # name, samples, sampler, atom stability, molecule stability, validity, validity x uniqueness (EDM rule)
    ("EDM (published, QM9)", "10,000", "ancestral, 1000", 98.7, 82.0, 91.9, 90.7),
    ("GeoLDM (published, QM9)", "10,000", "ancestral, 1000", 98.9, 89.4, 93.8, 92.7),
    ("QM9 data (published)", "–", "–", 99.0, 95.2, 97.7, 97.7),
]


DASH = "–"  # a figure this table has no value for
_pct = partial(pct, none=DASH, sep=" ")  # this table's percentages: "85.7 %", missing "–"


def row(name: str, sample: dict, validate: dict, sample_seconds: float | None = None) -> dict:
    """One generator's figures: its sample stage's metrics and its validate stage's metrics."""
    n = int(sample.get("molecules") or sample.get("n") or validate.get("n_molecules"))
    seconds = sample.get("seconds", sample_seconds)
    return {"run": name, "n": n, "steps": sample.get("steps"), "sampler": sample.get("solver") or sample.get("sampler"),
            "s_per_mol": None if seconds is None else float(seconds) / n, "v": validate}


def run_row(run: Path) -> dict:
    """:func:`row` of a finished ``molgen run`` folder (its ``metrics.json``)."""
    path = Path(run) / "metrics.json"
    if not path.is_file():
        raise DataError(f"{run}: no metrics.json (not a finished molgen run folder)")
    m = json.loads(path.read_text())
    if not m.get("validate") or not m.get("sample"):
        raise DataError(f"{run}: no sample/validate metrics (run its sample and validate stages first)")
    return row(Path(run).name, m["sample"], m["validate"])


def side_by_side(rows: list[dict]) -> str:
    """Markdown table of ``rows`` (from :func:`row` / :func:`run_row`) beside EDM's and GeoLDM's QM9 figures.
    Raises DataError when the runs are not comparable (reference set, property, number of samples)."""
    for key in ("reference", "property"):
        vals = {r["v"].get(key) for r in rows}
        if len(vals) > 1:
            raise DataError(f"the runs differ in {key} ({sorted(map(str, vals))}): not comparable")
    if len({r["n"] for r in rows}) > 1:
        raise DataError(f"the runs sampled different numbers of molecules ({[r['n'] for r in rows]})")
    prop, unit = rows[0]["v"].get("property"), rows[0]["v"].get("property_mae_unit", "")
    head = ["run", "samples", "sampler, steps", "s / molecule", "atom stab. (revised)", "mol. stab. (revised)",
            "stable, one fragment", "atom / mol. stab. (EDM rule)", "validity", "uniqueness", "novelty", "valid x unique", "closed shell",
            "FCD"]
    if prop:
        head += [f"{prop} MAE ({unit})", "regressor floor", "#atoms only", "naive"]
    body = []
    for r in rows:
        v = r["v"]
        cells = [r["run"], str(r["n"]), f"{r['sampler']}, {r['steps']}", fmt(r["s_per_mol"], ".2f", none=DASH),
                 _pct(v.get("stability_revised_atom")), _pct(v.get("stability_revised_mol")),
                 _pct(v.get("stable_single_fragment_ratio")),
                 f"{_pct(v.get('stability_edm_atom'))} / {_pct(v.get('stability_edm_mol'))}",
                 _pct(v.get("validity_largest_fragment")), _pct(v.get("uniqueness")), _pct(v.get("novelty")),
                 _pct(v.get("valid_x_unique")), _pct(v.get("closed_shell_ratio")), fmt(v.get("fcd"), ".2f", none=DASH)]
        if prop:
            cells += [fmt(v.get(k), ".0f", none=DASH)
                      for k in ("property_mae", "regressor_floor_mae", "atoms_only_mae", "naive_shuffled_mae")]
        body.append(cells)
    for name, n, sampler, a, mo, val, vu in PUBLISHED:
        body.append([name, n, sampler, DASH, DASH, DASH, DASH, f"{a} % / {mo} %", f"{val} %", DASH, DASH,
                     f"{vu} %", DASH, DASH] + ([DASH] * 4 if prop else []))
    note = ("Revised = PropMolFlow's rule (explicit valence minus formal charge equals the neutral valence, "
            "closed shell) on the generated bonds; one fragment = also a single connected molecule; EDM rule = bonds from distances (EDM's tables), the rule of the "
            "published rows. Validity = largest fragment sanitizes. Property MAE: the same GVP regressor (trained "
            "on QM9's Db half) for every run; floor = the regressor on real Da molecules.")
    return markdown_table(head, body) + "\n\n" + note + "\n"
