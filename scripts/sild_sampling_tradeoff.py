"""Quality / steps trade-off of SiLD's samplers: the same atom counts sampled with ancestral and DDIM chains of
several lengths, timed and judged by molgen.validation; times are printed as ratios to the full 1000-step
ancestral chain measured in the same run.

    python scripts/sild_sampling_tradeoff.py runs/sild-qm9_subset/train --n 200 \
        --chains ancestral:1000 ancestral:100 ddim:100 ddim:50 --out tradeoff.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

KEYS = ("stability_edm_atom", "stability_edm_mol", "validity_edm", "stability_revised_atom", "stability_revised_mol",
        "validity_largest_fragment", "uniqueness", "valid_x_unique")


def judge(mols) -> dict:
    """Headline metrics (molgen.validation when installed; RDKit validity/uniqueness otherwise)."""
    try:
        from molgen.validation import validate
    except ImportError:
        smiles = [m.smiles(largest_fragment=True) for m in mols]
        valid = [s for s in smiles if s]
        return {"validity_largest_fragment": len(valid) / len(mols), "uniqueness": len(set(valid)) / max(len(valid), 1)}
    metrics = validate(mols, posebusters=False, distributions=False, progress=False).metrics
    return {k: metrics.get(k) for k in KEYS}


def main() -> None:
    import molgen

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a SiLD checkpoint or train folder")
    p.add_argument("--n", type=int, default=200, help="molecules per chain")
    p.add_argument("--chains", nargs="+", default=["ancestral:1000", "ancestral:100", "ddim:100", "ddim:50"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--save-dir", default=None, help="write each chain's molecules to <dir>/<sampler>_<steps>.sdf")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = molgen.load(a.checkpoint, pipeline="sild")
    sizes = model.sampler.sample_n_atoms(a.n, torch.Generator().manual_seed(a.seed + 7919))
    values = model.sampler.sample(a.n, torch.Generator().manual_seed(a.seed))[1] if model.conditional else None
    chains = [(c.split(":")[0], int(c.split(":")[1])) for c in a.chains]
    if ("ancestral", model.diffusion.timesteps) not in chains:
        chains.insert(0, ("ancestral", model.diffusion.timesteps))   # the reference of the time ratios
    rows = []
    for sampler, steps in chains:
        t0 = time.perf_counter()
        mols = model.sample_molecules(sizes, values, steps=steps, sampler=sampler, seed=a.seed, progress=False)
        seconds = time.perf_counter() - t0
        if a.save_dir:
            from pathlib import Path

            from molgen.data.io import write_sdf

            Path(a.save_dir).mkdir(parents=True, exist_ok=True)
            write_sdf(mols, Path(a.save_dir) / f"{sampler}_{steps}.sdf")
        rows.append({"sampler": sampler, "steps": steps, "seconds_per_molecule": seconds / a.n, **judge(mols)})
        print(json.dumps(rows[-1]), flush=True)
    ref = next(r for r in rows if r["sampler"] == "ancestral" and r["steps"] == model.diffusion.timesteps)
    print(f"\n{'sampler':<10} {'steps':>5} {'s/mol':>8} {'time ratio':>10}  " + " ".join(f"{k[:18]:>18}" for k in KEYS))
    for r in rows:
        vals = " ".join(f"{r.get(k):>18.3f}" if isinstance(r.get(k), float) else f"{'-':>18}" for k in KEYS)
        print(f"{r['sampler']:<10} {r['steps']:>5} {r['seconds_per_molecule']:>8.4f} "
              f"{r['seconds_per_molecule'] / ref['seconds_per_molecule']:>10.3f}  {vals}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
