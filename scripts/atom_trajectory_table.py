"""The trajectory-level results table: several forecasters' validate metrics on the same held-out trajectories.

Each argument is ``label=RUN_FOLDER`` (a `molgen run pipeline=atom data=md17_trajectories ...` run folder, or its
validate/ folder); the static baseline comes from the first run (every validate report measures it on the same
windows). Prints S2S / S2T (x1e-2 A^2) and S2T / static S2T per molecule, and the geometric mean of the ratios.

    python scripts/atom_trajectory_table.py ATOM=runs/atom-trajectories/atom EGNO=runs/atom-trajectories/egno
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def read(folder: str) -> dict:
    path = Path(folder)
    for candidate in (path / "validate" / "metrics.json", path / "metrics.json"):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            return data.get("validate", data)
    raise SystemExit(f"{folder}: no validate metrics.json (run the validate stage)")


def main(args: list[str]) -> None:
    if not args or any("=" not in a for a in args):
        raise SystemExit(__doc__)
    runs = {label: read(folder) for label, folder in (a.split("=", 1) for a in args)}
    first = next(iter(runs.values()))
    molecules = [m for m, v in first.items() if isinstance(v, dict)]
    header = ["molecule", "test windows", "static S2S / S2T"] + [f"{k} S2S / S2T (ratio)" for k in runs]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ratios = {k: [] for k in runs}
    for mol in molecules:
        s = first[mol]
        cells = [mol, str(s["n_test"]), f"{s['static_s2s']:.2f} / {s['static_s2t']:.2f}"]
        for label, m in runs.items():
            r = m.get(mol)
            if r is None:
                cells.append("—")
                continue
            ratio = r["s2t"] / r["static_s2t"]
            ratios[label].append(ratio)
            cells.append(f"{r['s2s']:.2f} / {r['s2t']:.2f} ({ratio:.2f})")
        print("| " + " | ".join(cells) + " |")
    print("| geometric mean of S2T ratios | | | " + " | ".join(
        f"{np.exp(np.mean(np.log(v))):.2f}" if v else "—" for v in ratios.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
