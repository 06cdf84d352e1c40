"""Calibrate molgen's validation suite on QM9 itself; the figures go into docs/validation.md.

Parts (``--part``):
  structure  structure metrics of QM9 test molecules (EDM reports 99.0% atom / 95.2% molecule stability for QM9)
  water      the water dipole: QM9 1.85 D vs PySCF; functional variant (b3lypg vs b3lyp5), grid, basis shells,
             the 2d exponents (Gaussian's vs PySCF's 6-31G(2df,p) file)
  smallest   QM9 molecules 1-12, both 2d-exponent conventions: dipole, HOMO, LUMO, finite-field alpha vs QM9
  dft        B3LYP/6-31G(2df,p) single points on N random QM9 test molecules vs QM9's HOMO/LUMO/gap (meV) and
             dipole (D), seconds per molecule. Long: run once in the background on one thread:
             OMP_NUM_THREADS=1 nohup python scripts/calibrate_validation.py --part dft > runs/calib_dft.log 2>&1 &
             Results live in a SQLite store (runs/calibration/quantum.sqlite): a re-run resumes.
  xtb        GFN2-xTB single point + relaxation on the same molecules: seconds per molecule, strain, RMSD.
  xtb-gap    GFN2-xTB HOMO-LUMO gap vs QM9's DFT gap on N random QM9 test molecules (default 300): at QM9's
             geometry and after xTB relaxation; linear fit DFT = a xTB + b, Pearson r, MAE after calibration,
             and the xTB gaps of QM9 molecules in DFT-gap windows (what a conditioning check compares with).
Prints Markdown tables and writes runs/calibration/<part>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "runs" / "calibration"
HARTREE_TO_EV = 27.211386


def part_structure(n: int) -> dict:
    from molgen.validation.reference import qm9_molecules, qm9_smiles
    from molgen.validation.structure import structure_table, summarize_structure

    mols = qm9_molecules("test", n=n, seed=0)
    t0 = time.time()
    table = structure_table(mols, progress=True)
    sec = time.time() - t0
    m = summarize_structure(table, qm9_smiles("train"))
    m = {k: v for k, v in m.items() if not isinstance(v, dict)}
    m["seconds_per_molecule"] = sec / len(mols)
    m["bonds_source"] = table["bonds_source"].value_counts().to_dict()
    print(f"QM9 test molecules: {len(mols)} (random, seed 0); {1000 * sec / len(mols):.2f} ms per molecule")
    print("| metric | value |\n|---|---|")
    for k, v in m.items():
        print(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return m


def part_water() -> dict:
    import ast

    from molgen.validation.quantum.dft import dft_job
    from molgen.validation.reference import qm9_table

    df = qm9_table(["Elements", "XYZ_Ang", "Dipole_debye", "HOMO_au", "LUMO_au", "Polarizability_bohr3"])
    row = df[df["Index"] == 3].iloc[0]
    pos = np.array(ast.literal_eval(row["XYZ_Ang"]))
    z = np.array([8, 1, 1])
    print(f"QM9 water (index 3): mu {row['Dipole_debye']} D, HOMO {row['HOMO_au'] * HARTREE_TO_EV:.4f} eV, "
          f"LUMO {row['LUMO_au'] * HARTREE_TO_EV:.4f} eV, alpha {row['Polarizability_bohr3']} Bohr^3")
    variants = {
        "b3lypg (VWN3, Gaussian), grid 3, 5D7F, Gaussian's 2d exponents (molgen default)": {},
        "b3lypg, PySCF's 6-31G(2df,p) file (6-311G*-based 2d exponents)": {"pople_d": "bse"},
        "b3lyp5 (VWN5)": {"xc": "b3lyp5"},
        "b3lypg, grid 5": {"grid_level": 5},
        "b3lypg, Cartesian 6D10F": {"cart": True},
        "b3lypg, 6-31G** (no f, one d)": {"basis": "6-31G**"},
        "b3lypg, aug-cc-pVTZ (basis limit)": {"basis": "aug-cc-pvtz"},
        "HF/6-31G(2df,p)": {"xc": "hf"},
        "b3lypg + finite-field alpha": {"alpha": True},
        "b3lypg, PySCF's file + finite-field alpha": {"alpha": True, "pople_d": "bse"},
    }
    out = {"qm9": {"mu": row["Dipole_debye"], "homo_ev": row["HOMO_au"] * HARTREE_TO_EV,
                   "lumo_ev": row["LUMO_au"] * HARTREE_TO_EV, "alpha": row["Polarizability_bohr3"]}}
    print("| variant | dipole (D) | HOMO (eV) | LUMO (eV) | alpha (Bohr^3) | s |\n|---|---|---|---|---|---|")
    for name, opts in variants.items():
        t0 = time.time()
        r = dft_job(z, pos, 0, opts)
        out[name] = r
        print(f"| {name} | {r['dft_dipole_debye']:.4f} | {r['dft_homo_ev']:.4f} | {r['dft_lumo_ev']:.4f} | "
              f"{r.get('dft_alpha_bohr3', float('nan')):.3f} | {time.time() - t0:.1f} |", flush=True)
    return out


def part_smallest() -> dict:
    """QM9 molecules 1-12 with both d-exponent conventions: dipole, HOMO, LUMO and alpha against QM9."""
    import ast

    from pyscf.data.elements import charge

    from molgen.validation.quantum.dft import dft_job
    from molgen.validation.reference import qm9_table

    df = qm9_table(["Elements", "XYZ_Ang", "Dipole_debye", "HOMO_au", "LUMO_au", "Polarizability_bohr3"])
    out = {}
    print("| QM9 | atoms | mu QM9 | mu PySCF file | mu Gaussian 2d | HOMO err file / G (meV) | LUMO err file / G (meV) "
          "| alpha QM9 | alpha file / G |\n|---|---|---|---|---|---|---|---|---|")
    for idx in range(1, 13):
        row = df[df["Index"] == idx].iloc[0]
        els = ast.literal_eval(row["Elements"])
        z, pos = np.array([charge(e) for e in els]), np.array(ast.literal_eval(row["XYZ_Ang"]))
        r = {c: dft_job(z, pos, 0, {"pople_d": c, "alpha": True}) for c in ("bse", "gaussian")}
        h, lu = row["HOMO_au"] * HARTREE_TO_EV, row["LUMO_au"] * HARTREE_TO_EV
        out[idx] = {"qm9": {"mu": row["Dipole_debye"], "homo_ev": h, "lumo_ev": lu,
                            "alpha": row["Polarizability_bohr3"]}, **r}
        f, g = r["bse"], r["gaussian"]
        print(f"| {idx} | {''.join(els)} | {row['Dipole_debye']:.4f} | {f['dft_dipole_debye']:.4f} | "
              f"{g['dft_dipole_debye']:.4f} | {1000 * (f['dft_homo_ev'] - h):+.0f} / {1000 * (g['dft_homo_ev'] - h):+.0f} | "
              f"{1000 * (f['dft_lumo_ev'] - lu):+.0f} / {1000 * (g['dft_lumo_ev'] - lu):+.0f} | "
              f"{row['Polarizability_bohr3']:.2f} | {f['dft_alpha_bohr3']:.2f} / {g['dft_alpha_bohr3']:.2f} |", flush=True)
    for c in ("bse", "gaussian"):
        mu = np.mean([abs(v[c]["dft_dipole_debye"] - v["qm9"]["mu"]) for v in out.values()])
        al = np.mean([abs(v[c]["dft_alpha_bohr3"] - v["qm9"]["alpha"]) / v["qm9"]["alpha"] for v in out.values()])
        print(f"{c}: dipole MAE {mu:.4f} D, alpha mean relative error {100 * al:.1f} %")
    return out


def _sample(n: int, max_atoms: int | None = None):
    from molgen.validation.reference import qm9_molecules
    from molgen.validation.structure import with_bonds

    if max_atoms:  # a random sample of the test molecules with at most max_atoms atoms (DFT cost ~ N^3)
        small = [m for m in qm9_molecules("test") if m.num_atoms <= max_atoms]
        pick = np.random.RandomState(0).choice(len(small), min(n, len(small)), replace=False)
        mols = [small[i] for i in sorted(pick)]
    else:
        mols = qm9_molecules("test", n=n, seed=0)
    mols = sorted(mols, key=lambda m: m.num_atoms)  # smallest first: a partial run still covers many molecules
    return [with_bonds(m)[0] for m in mols], mols


def part_quantum(kind: str, n: int, workers: int, density_fit: bool = True, max_atoms: int | None = None) -> dict:
    import pandas as pd

    from molgen.validation.quantum.runner import run_quantum

    bonded, raw = _sample(n, max_atoms)
    table = pd.DataFrame(index=range(len(bonded)))
    OUT.mkdir(parents=True, exist_ok=True)
    res, metrics = run_quantum(bonded, table, OUT / "quantum.sqlite", xtb=kind == "xtb", dft=kind == "dft",
                               workers=workers, timeout=3600,
                               dft_options={"max_molecules": n, "density_fit": density_fit},
                               xtb_options={"max_molecules": n})
    out = {"metrics": metrics, "n_atoms": [m.num_atoms for m in raw]}
    if kind == "dft":
        ok = res["dft_status"] == "ok"
        q = {p: np.array([m.properties[p] for m in raw]) for p in ("homo", "lumo", "gap", "mu")}
        err = {
            "homo_meV": (res["dft_homo_ev"].astype(float) - q["homo"] * HARTREE_TO_EV)[ok] * 1000,
            "lumo_meV": (res["dft_lumo_ev"].astype(float) - q["lumo"] * HARTREE_TO_EV)[ok] * 1000,
            "gap_meV": (res["dft_gap_ev"].astype(float) - q["gap"] * HARTREE_TO_EV)[ok] * 1000,
            "mu_D": (res["dft_dipole_debye"].astype(float) - q["mu"])[ok],
        }
        ratio = (res["dft_dipole_debye"].astype(float) / q["mu"])[ok & (q["mu"] > 0.5)]
        print(f"DFT vs QM9 on {int(ok.sum())}/{len(raw)} QM9 test molecules (converged):")
        print("| quantity | MAE | mean signed error | max abs |\n|---|---|---|---|")
        for k, e in err.items():
            print(f"| {k} | {np.abs(e).mean():.2f} | {e.mean():.2f} | {np.abs(e).max():.2f} |")
            out[k] = {"mae": float(np.abs(e).mean()), "mse": float(e.mean()), "max": float(np.abs(e).max())}
        out["dipole_ratio_median"] = float(ratio.median()) if len(ratio) else None
        print(f"median dipole ratio PySCF/QM9 (mu > 0.5 D): {out['dipole_ratio_median']}")
    print(f"{kind}: median {metrics.get(kind + '_seconds_per_job_median'):.1f} s per molecule "
          f"({np.mean(out['n_atoms']):.1f} atoms on average), failures {metrics.get(kind + '_failures')}")
    return out


def part_xtb_gap(n: int, workers: int) -> dict:
    import pandas as pd

    from molgen.validation.quantum.runner import run_quantum
    from molgen.validation.structure import with_bonds
    from molgen.validation.reference import qm9_molecules

    raw = qm9_molecules("test", n=n, seed=7)
    bonded = [with_bonds(m)[0] for m in raw]
    OUT.mkdir(parents=True, exist_ok=True)
    res, metrics = run_quantum(bonded, pd.DataFrame(index=range(len(bonded))), OUT / "quantum.sqlite", xtb=True,
                               workers=workers, timeout=600, xtb_options={"max_molecules": n})
    dft = np.array([m.properties["gap"] for m in raw]) * HARTREE_TO_EV
    out: dict = {"n": n, "seed": 7, "split": "test", "windows": {}}
    print(f"GFN2-xTB (tblite) vs QM9 B3LYP/6-31G(2df,p) HOMO-LUMO gap, {n} random QM9 test molecules (seed 7)")
    print("| xTB geometry | n | slope a | offset b (eV) | Pearson r | MAE raw (eV) | MAE after DFT = a xTB + b (eV) |")
    print("|---|---|---|---|---|---|---|")
    for col, label in (("xtb_gap_ev", "QM9's DFT geometry"), ("xtb_relaxed_gap_ev", "after xTB relaxation")):
        x = pd.to_numeric(res[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        a, b = np.polyfit(x[ok], dft[ok], 1)
        r = float(np.corrcoef(x[ok], dft[ok])[0, 1])
        mae_raw = float(np.abs(x[ok] - dft[ok]).mean())
        mae_cal = float(np.abs(a * x[ok] + b - dft[ok]).mean())
        out[col] = {"n": int(ok.sum()), "slope": float(a), "offset_ev": float(b), "pearson_r": r,
                    "mae_raw_ev": mae_raw, "mae_calibrated_ev": mae_cal}
        print(f"| {label} | {int(ok.sum())} | {a:.3f} | {b:.3f} | {r:.3f} | {mae_raw:.3f} | {mae_cal:.3f} |")
    print("\nxTB gaps of QM9 molecules by DFT-gap window (relaxed xTB geometry):")
    print("| DFT gap window (eV) | n | mean DFT gap | mean xTB gap | mean xTB gap at QM9 geometry |\n|---|---|---|---|---|")
    for lo, hi in ((4.5, 5.5), (5.0, 6.0), (6.0, 7.0), (7.0, 8.0), (8.0, 9.0), (8.5, 9.5)):
        sel = (dft >= lo) & (dft < hi)
        xr = pd.to_numeric(res["xtb_relaxed_gap_ev"], errors="coerce").to_numpy(dtype=float)[sel]
        xs = pd.to_numeric(res["xtb_gap_ev"], errors="coerce").to_numpy(dtype=float)[sel]
        out["windows"][f"{lo}-{hi}"] = {"n": int(sel.sum()), "dft": float(dft[sel].mean()) if sel.any() else None,
                                       "xtb_relaxed": float(np.nanmean(xr)) if sel.any() else None,
                                       "xtb": float(np.nanmean(xs)) if sel.any() else None}
        if sel.any():
            print(f"| {lo}-{hi} | {int(sel.sum())} | {dft[sel].mean():.2f} | {np.nanmean(xr):.2f} | {np.nanmean(xs):.2f} |")
    out["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    return out


def part_dft_summary(n: int, max_atoms: int | None, density_fit: bool = True) -> dict:
    """DFT vs QM9 from whatever the (possibly still running) dft part has stored so far; computes nothing."""
    from molgen.validation.quantum.dft import method_name
    from molgen.validation.quantum.store import ResultStore, job_key

    bonded, raw = _sample(n, max_atoms)
    store = ResultStore(OUT / "quantum.sqlite")
    method = method_name({"density_fit": density_fit})
    rows = []
    for b, m in zip(bonded, raw):
        r = store.get(job_key(b, method))
        if r is not None:
            rows.append((m, r))
    ok = [(m, r) for m, r in rows if r["status"] == "ok"]
    print(f"{len(rows)}/{len(raw)} DFT jobs stored, {len(ok)} converged ({method})")
    if not ok:
        return {"n_done": len(rows)}
    err = {
        "homo_meV": np.array([r["dft_homo_ev"] - m.properties["homo"] * HARTREE_TO_EV for m, r in ok]) * 1000,
        "lumo_meV": np.array([r["dft_lumo_ev"] - m.properties["lumo"] * HARTREE_TO_EV for m, r in ok]) * 1000,
        "gap_meV": np.array([r["dft_gap_ev"] - m.properties["gap"] * HARTREE_TO_EV for m, r in ok]) * 1000,
        "mu_D": np.array([r["dft_dipole_debye"] - m.properties["mu"] for m, r in ok]),
    }
    out: dict = {"n_done": len(rows), "n_ok": len(ok), "method": method}
    print("| quantity | MAE | mean signed error | max abs |\n|---|---|---|---|")
    for k, e in err.items():
        print(f"| {k} | {np.abs(e).mean():.2f} | {e.mean():.2f} | {np.abs(e).max():.2f} |")
        out[k] = {"mae": float(np.abs(e).mean()), "mse": float(e.mean()), "max": float(np.abs(e).max())}
    mu = np.array([(r["dft_dipole_debye"], m.properties["mu"]) for m, r in ok])
    big = mu[:, 1] > 0.5
    out["dipole_ratio_median"] = float(np.median(mu[big, 0] / mu[big, 1])) if big.any() else None
    sec = np.array([r["seconds"] for _, r in ok])
    atoms = np.array([m.num_atoms for m, _ in ok])
    out["seconds"] = {"median": float(np.median(sec)), "min": float(sec.min()), "max": float(sec.max())}
    out["atoms"] = {"mean": float(atoms.mean()), "min": int(atoms.min()), "max": int(atoms.max())}
    print(f"median dipole ratio PySCF/QM9 (mu > 0.5 D): {out['dipole_ratio_median']}")
    print(f"seconds per molecule: median {np.median(sec):.0f} (min {sec.min():.0f}, max {sec.max():.0f}) for "
          f"{atoms.min()}-{atoms.max()} atoms (mean {atoms.mean():.1f})")
    for (m, r), a in zip(ok, atoms):
        print(f"  {m.name} {a} atoms: {r['seconds']:.0f} s, gap err {1000 * (r['dft_gap_ev'] - m.properties['gap'] * HARTREE_TO_EV):+.0f} meV, "
              f"mu {r['dft_dipole_debye']:.3f} vs {m.properties['mu']:.3f} D")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["structure", "water", "smallest", "dft", "dft-summary", "xtb",
                                                     "xtb-gap"], required=True)
    ap.add_argument("--n", type=int, default=None, help="molecules (structure: 13083 = all of test; dft/xtb: 24)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-atoms", type=int, default=None, help="dft/xtb: sample only molecules this small")
    ap.add_argument("--no-density-fit", action="store_true", help="exact J/K as Gaussian (about 10x slower)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.part == "structure":
        result = part_structure(args.n or 13083)
    elif args.part == "water":
        result = part_water()
    elif args.part == "smallest":
        result = part_smallest()
    elif args.part == "xtb-gap":
        result = part_xtb_gap(args.n or 300, args.workers)
    elif args.part == "dft-summary":
        result = part_dft_summary(args.n or 24, args.max_atoms, density_fit=not args.no_density_fit)
    else:
        result = part_quantum(args.part, args.n or 24, args.workers, density_fit=not args.no_density_fit,
                              max_atoms=args.max_atoms)
    tag = f"_max{args.max_atoms}" if args.part in ("dft", "xtb") and args.max_atoms else ""
    (OUT / f"{args.part}{tag}.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
