"""Print the Markdown results table of scripts/atom_results.py next to the published MD17 (DFT) figures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

# ATOM README table (ATOM:Z_paper_content/readme_content/md17_results.png); EGNO rows from the EGNO paper
PUBLISHED = {  # molecule: (ATOM S2S, ATOM S2T, EGNO S2S, EGNO S2T), x1e-2 A^2, MD17 DFT
    "aspirin": (6.52, 5.45, 9.18, 7.37), "ethanol": (3.47, 2.69, 4.62, 3.28),
    "malonaldehyde": (13.51, 11.62, 12.80, 10.67), "toluene": (4.68, 2.26, 10.21, 4.58)}


def main(path: str = "runs/results/results.json") -> None:
    results = json.loads(Path(path).read_text())
    by = {(r["molecule"], r["model"]): r for r in results if r.get("rc") == 0}
    print("| molecule | static S2S / S2T | EGNO S2S / S2T (epochs) | ATOM S2S / S2T (epochs) | "
          "published MD17 EGNO S2S / S2T | published MD17 ATOM S2S / S2T |")
    print("|---|---|---|---|---|---|")
    for mol, pub in PUBLISHED.items():
        s, e, a = by.get((mol, "static"), {}), by.get((mol, "egno"), {}), by.get((mol, "atom"), {})

        def cell(r):
            return f"{r['s2s']:.2f} ± {r['s2s_sem']:.2f} / {r['s2t']:.2f} ({r['epochs']})" if r else "—"
        print(f"| {mol} | {s.get('s2s', float('nan')):.2f} / {s.get('s2t', float('nan')):.2f} | {cell(e)} | {cell(a)} | "
              f"{pub[2]:.2f} / {pub[3]:.2f} | {pub[0]:.2f} / {pub[1]:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
