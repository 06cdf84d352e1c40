"""Train ATOM, EGNO and the static baseline on the xTB trajectories under the EGNO protocol; collect S2S/S2T.

Every (molecule, model) pair is one `molgen run pipeline=atom data=md17_xtb ...` in OUT; the table of test
metrics (x1e-2 A^2) goes to OUT/results.json and is printed as Markdown. Budgets are wall-clock per model
(trainer.max_time), so the epochs reached depend on the machine's load: they are recorded per run.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/atom_results.py --minutes 4 --out runs/results
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from molgen.cli import main as molgen_main


def run(out: Path, molecule: str, model: str, minutes: float, extra: list[str]) -> dict:
    name = f"{model}-{molecule}"
    args = ["run", "pipeline=atom", "data=md17_xtb", f"data.molecule={molecule}", f"model={model}", f"out={out}",
            f"run={name}", f"trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
            "trainer.max_epochs=1000", "trainer.val_every_n_epochs=10", "trainer.limit_val_batches=2", *extra]
    t0 = time.time()
    rc = molgen_main(args)
    metrics = json.loads((out / name / "metrics.json").read_text()) if rc == 0 else {}
    val = metrics.get("validate", {}).get(molecule, {})
    tr = metrics.get("train", {})
    return {"molecule": molecule, "model": model, "rc": rc, "seconds": round(time.time() - t0, 1),
            "epochs": tr.get("epochs"), "steps": tr.get("steps"), "train_seconds": tr.get("seconds"),
            "parameters": tr.get("parameters"), **val,
            "equivariance_error": metrics.get("validate", {}).get("equivariance_error")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--molecules", default="ethanol,malonaldehyde,toluene,aspirin")
    ap.add_argument("--models", default="static,atom,egno")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--out", default="runs/results")
    ap.add_argument("--atom-dim", type=int, default=128)
    ap.add_argument("--atom-blocks", type=int, default=5)
    ap.add_argument("--atom-heads", type=int, default=8)
    args, extra = ap.parse_known_args()
    atom_args = [f"model.network_args.dim={args.atom_dim}", f"model.network_args.n_blocks={args.atom_blocks}",
                 f"model.network_args.n_heads={args.atom_heads}"]
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    done = {(r["molecule"], r["model"]) for r in results if r.get("rc") == 0}
    for mol in args.molecules.split(","):
        for model in args.models.split(","):
            if (mol, model) in done:
                continue
            results.append(run(out, mol, model, args.minutes, extra + (atom_args if model == "atom" else [])))
            results_file.write_text(json.dumps(results, indent=2))
    print("| molecule | model | S2S | S2T | epochs | train s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['molecule']} | {r['model']} | {r.get('s2s', float('nan')):.2f} | {r.get('s2t', float('nan')):.2f} | "
              f"{r.get('epochs')} | {r.get('train_seconds')} |")


if __name__ == "__main__":
    main()
