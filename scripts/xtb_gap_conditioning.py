"""Does the gap conditioning move the gap? A check with no learned regressor: GFN2-xTB.

    python scripts/xtb_gap_conditioning.py [--ckpt propmolflow-qm9|sild-qm9|PATH] [--n 48] [--low 5.5]
                                           [--high 8.5] [--steps 100] [--guidance 1] [--workers 2]
                                           [--rerank K --predictor PATH|NAME]
                                           [--out runs/xtb_conditioning]

Any gap-conditioned QM9 generator (PropMolFlow, SiLD: both expose ``sampler``, ``property_name`` and
``sample_molecules``).

1. Samples ``n`` molecules at a low and at a high gap target (atom counts from the training molecules near each
   target, as ``model.sample(condition=...)`` does).
2. Runs the validation suite's GFN2-xTB job on them (single point, relaxation: gap at the relaxed geometry,
   strain energy) and on ``n`` real QM9 test molecules whose DFT gap lies within 0.25 eV of each target.
3. Prints the mean xTB gap of each set, the shift high - low for generated and for real molecules and their
   ratio (1 = the conditioning moves the gap as much as real chemistry does), and the strain energies and
   geometry realism (xTB relaxation energy, heavy-atom RMSD) of generated vs real molecules; with
   ``--posebusters N``, PoseBusters' full "mol" checks (incl. the internal-energy ratio) on the first N valid
   molecules of the low-target set and of its QM9 set.
xTB results are stored in ``<out>/quantum.sqlite``: a re-run reuses them. Writes ``<out>/summary.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HARTREE_TO_EV = 27.211386


def xtb_table(mols, store: Path, workers: int) -> pd.DataFrame:
    from molgen.validation.quantum.runner import run_quantum
    from molgen.validation.structure import structure_table, with_bonds

    bonded = [with_bonds(m)[0] for m in mols]
    res, _ = run_quantum(bonded, None, store, xtb=True, workers=workers, timeout=600,
                         xtb_options={"max_molecules": len(bonded)})
    from molgen.settings import quiet_rdkit

    with quiet_rdkit():
        table = structure_table(bonded)
    for col in ("xtb_relaxed_gap_ev", "xtb_gap_ev", "xtb_strain_kcal", "xtb_rmsd_heavy_A"):
        table[col] = pd.to_numeric(res.get(col), errors="coerce").to_numpy(dtype=float) if col in res else np.nan
    table["n_atoms"] = [m.num_atoms for m in mols]
    return table


def posebusters_rates(mols, n: int) -> dict:
    """PoseBusters "mol" checks (full: with the internal-energy ratio) on the first ``n`` RDKit-valid molecules."""
    from molgen.validation.geometry import posebusters_table
    from molgen.validation.structure import with_bonds

    rd = []
    for m in mols:
        try:
            rd.append(with_bonds(m)[0].to_rdkit(sanitize=True))
        except Exception:  # noqa: BLE001 -- invalid molecules are not tested
            continue
        if len(rd) == n:
            break
    table = posebusters_table(rd, mode="full")
    out = {"n": len(rd), "pass_rate": float(table["posebusters_pass"].astype(bool).mean())}
    for col in table.columns:
        if col not in ("posebusters_pass", "posebusters_failed"):
            out[col] = float(table[col].dropna().astype(bool).mean())
    return out


def summary(table: pd.DataFrame, only_stable: bool) -> dict:
    t = table[table["mol_stable"].astype(bool)] if only_stable else table
    ok = t["xtb_relaxed_gap_ev"].notna()
    t = t[ok]
    return {"n": int(len(t)), "xtb_gap_relaxed_mean": float(t["xtb_relaxed_gap_ev"].mean()) if len(t) else None,
            "xtb_gap_given_mean": float(t["xtb_gap_ev"].mean()) if len(t) else None,
            "strain_kcal_median": float(t["xtb_strain_kcal"].median()) if len(t) else None,
            "rmsd_heavy_A_median": float(t["xtb_rmsd_heavy_A"].median()) if len(t) else None,
            "mean_atoms": float(t["n_atoms"].mean()) if len(t) else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="propmolflow-qm9")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--low", type=float, default=5.5)
    ap.add_argument("--high", type=float, default=8.5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight w")
    ap.add_argument("--rerank", type=int, default=1, help="best of K candidates per molecule by --predictor")
    ap.add_argument("--predictor", default=None, help="gap predictor trained on the generator's half (path or name)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/xtb_conditioning")
    ap.add_argument("--posebusters", type=int, default=0, help="PoseBusters on this many molecules per set")
    a = ap.parse_args()
    import molgen
    from molgen.validation.reference import qm9_molecules

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "quantum.sqlite"
    model = molgen.load(a.ckpt)
    if model.property_name != "gap":
        raise SystemExit(f"{a.ckpt}: conditioned on {model.property_name}, not on the gap")
    qm9 = qm9_molecules("test")
    qm9_gap = np.array([m.properties["gap"] for m in qm9]) * HARTREE_TO_EV
    rows, result = [], {"ckpt": a.ckpt, "n": a.n, "steps": a.steps, "seed": a.seed, "guidance": a.guidance,
                        "rerank": a.rerank, "predictor": a.predictor}
    for name, target in (("low", a.low), ("high", a.high)):
        gen = torch.Generator().manual_seed(a.seed + (0 if name == "low" else 1))
        sizes = model.sampler.sample_n_atoms_given(target, a.n, gen)
        mols = model.sample_molecules(sizes, [target] * a.n, steps=a.steps, seed=a.seed, progress=False,
                                     guidance=a.guidance, rerank=a.rerank,
                                     predictor=molgen.load(a.predictor) if a.predictor else None)
        near = np.flatnonzero(np.abs(qm9_gap - target) <= 0.25)
        pick = np.random.RandomState(a.seed).choice(near, min(a.n, len(near)), replace=False)
        real = [qm9[i] for i in sorted(pick)]
        gen_t, real_t = xtb_table(mols, store, a.workers), xtb_table(real, store, a.workers)
        if name == "low" and a.posebusters:
            result["posebusters"] = {"generated": posebusters_rates(mols, a.posebusters),
                                     "qm9": posebusters_rates(real, a.posebusters)}
        result[name] = {"target_ev": target, "generated": summary(gen_t, False),
                        "generated_stable": summary(gen_t, True), "qm9": summary(real_t, False),
                        "qm9_dft_gap_mean": float(qm9_gap[pick].mean())}
        rows.append(name)
    shift = {k: result["high"][k]["xtb_gap_relaxed_mean"] - result["low"][k]["xtb_gap_relaxed_mean"]
             for k in ("generated", "generated_stable", "qm9")}
    result["shift_ev"] = shift
    result["shift_ratio"] = shift["generated"] / shift["qm9"]
    result["shift_ratio_stable"] = shift["generated_stable"] / shift["qm9"]
    best_of = f", best of {a.rerank}" if a.rerank > 1 else ""
    print(f"{a.ckpt}: {a.n} molecules per target, {a.steps} steps, guidance w = {a.guidance:g}{best_of}; GFN2-xTB gap at the xTB-relaxed geometry (eV)")
    print("| set | target (eV) | n | mean xTB gap | mean xTB gap, as generated | median strain (kcal/mol) | "
          "median heavy-atom RMSD on relaxation (A) | mean atoms |")
    print("|---|---|---|---|---|---|---|---|")
    for name in rows:
        for key, label in (("generated", "generated"), ("generated_stable", "generated, stable only"),
                           ("qm9", "QM9 test, DFT gap within 0.25 eV")):
            s = result[name][key]
            print(f"| {label} | {result[name]['target_ev']} | {s['n']} | {s['xtb_gap_relaxed_mean']:.2f} | "
                  f"{s['xtb_gap_given_mean']:.2f} | {s['strain_kcal_median']:.1f} | {s['rmsd_heavy_A_median']:.3f} | "
                  f"{s['mean_atoms']:.1f} |")
    print(f"shift high - low: generated {shift['generated']:.2f} eV (stable only {shift['generated_stable']:.2f}), "
          f"QM9 {shift['qm9']:.2f} eV; ratio {result['shift_ratio']:.2f} ({result['shift_ratio_stable']:.2f})")
    if "posebusters" in result:
        pb = result["posebusters"]
        keys = [k for k in pb["generated"] if k not in ("n",)]
        print("\nPoseBusters (full 'mol' checks), low-target set: | check | generated | QM9 |")
        print("|---|---|---|")
        for k in keys:
            print(f"| {k} | {100 * pb['generated'][k]:.1f} % (n={pb['generated']['n']}) | "
                  f"{100 * pb['qm9'].get(k, float('nan')):.1f} % (n={pb['qm9']['n']}) |")
    (out / "summary.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
