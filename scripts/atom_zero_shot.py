"""Zero-shot forecasts through ``predict`` on held-out trajectories of a molecule the model is made to forget.

For each molecule named, the model's prior loses that molecule's mean structures, so ``predict`` meets it as an
unseen molecule and relaxes toward the mean of the user's own last 375 frames with gates averaged over the
*other* molecules: nothing of that molecule is used but the frames a user hands in. Each window hands
``predict`` the 377 frames t-375 .. t+1 of an independent trajectory (seeds 102, 103) and scores the 8 frames
t + 375 i on heavy atoms; ratio = S2T / S2T of predicting x_t.

    python scripts/atom_zero_shot.py naphthalene benzene --windows 300
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

import molgen
from molgen.data import md17
from molgen.pipelines.atom import shared_data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("molecules", nargs="+")
    ap.add_argument("--ckpt", default="atom-md17")
    ap.add_argument("--windows", type=int, default=300, help="windows per test trajectory")
    ap.add_argument("--trajectories", default="s102,s103")
    args = ap.parse_args()
    folder = shared_data_dir("md17_xtb")
    for mol in args.molecules:
        model = molgen.load(args.ckpt)
        z = None
        rows = []
        for tid in args.trajectories.split(","):
            traj = md17.load_xtb_npz(folder / "independent" / f"{mol}_{tid}.npz")
            z = traj.atomic_numbers
            heavy = traj.heavy_mask
            slots = model.prior.candidates(torch.tensor(z[heavy])[None])[0]
            model.prior.atomic_numbers[slots] = -1                                   # forget this molecule
            for t in np.linspace(375, traj.n_frames - 3002, args.windows).astype(int):
                window = md17.Trajectory(traj.positions[t - 375:t + 2], z, traj.time_step_fs).to_mdtraj()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pred = model.predict(window).xyz * 10
                future = traj.positions[t + 375 * np.arange(1, 9)][:, heavy]
                x = traj.positions[t][heavy]
                rows.append((((future - x) ** 2).mean(), ((future - pred) ** 2).mean()))
        r = np.array(rows).mean(0)
        print(f"{mol}: {len(rows)} windows, static S2T {100 * r[0]:.2f}, zero-shot prior S2T {100 * r[1]:.2f} "
              f"(x1e-2 A^2), ratio {r[1] / r[0]:.2f}")


if __name__ == "__main__":
    main()
