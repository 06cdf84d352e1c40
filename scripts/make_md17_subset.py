"""Build the embedded MD17-xTB subset in data/md17/ from shared/data/md17_xtb (deterministic).

Selection rule: for each molecule, keep source frames t and t + 1 for every t divisible by STRIDE (25), i.e.
the pairs a start frame needs for its position and forward-difference velocity. Because 25 divides
dT * i // P = 375 * i, every protocol target of a kept start frame is itself kept, so the EGNO protocol runs
on the subset with exact source frame indices (start frames restricted to multiples of 25).

The same rule thins two independent trajectories of ethanol (seeds 101, 102 of
shared/data/md17_xtb/independent) into data/md17/independent/, for the trajectory-level protocol
(``data.split_by=trajectory``: train on the main trajectory, test on ones the model never saw).

    .venv/bin/python scripts/make_md17_subset.py [--source ../shared/data/md17_xtb] [--out data/md17]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from molgen.data.md17 import load_xtb_npz

MOLECULES = ("ethanol", "malonaldehyde", "aspirin")
INDEPENDENT = ("ethanol_s101", "ethanol_s102")
STRIDE = 25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="../shared/data/md17_xtb")
    ap.add_argument("--out", default="data/md17")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "independent").mkdir(exist_ok=True)
    jobs = [(Path(args.source) / f"{m}.npz", out / f"{m}.npz", m) for m in MOLECULES]
    jobs += [(Path(args.source) / "independent" / f"{t}.npz", out / "independent" / f"{t}.npz", t.split("_")[0])
             for t in INDEPENDENT]
    for src, dst, mol in jobs:
        traj = load_xtb_npz(src, name=mol)
        t = np.arange(0, traj.n_frames - 1, STRIDE)
        keep = np.unique(np.concatenate([t, t + 1]))
        np.savez_compressed(dst, R=traj.positions[keep].astype(np.float32), z=traj.atomic_numbers,
                            dt_fs=traj.time_step_fs, frame_index=keep, n_source_frames=traj.n_frames, name=mol,
                            temperature_K=traj.extra.get("temperature_K", 500.0))
        print(f"{src.name}: kept {len(keep)} of {traj.n_frames} frames -> {dst} ({dst.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
