"""How much of a forecast's error is the molecule turning, and how much of that the recent past can predict.

On the test windows of a featurized run (``runs/<run>/featurize``), per molecule, as ratios to the static
baseline's S2T (heavy atoms, the pipeline's metric):

* ``pose only``: a forecaster that knows every future frame's *internal* geometry exactly and keeps x_t's pose
  (the true frame rigidly aligned onto x_t); with ``shrunk``, also contracted about the centroid by the factor
  that is best on these windows (what an unknown rotation of known spread is worth). Any forecast that does not
  predict the reorientation scores about this or worse.
* the checkpoint without its rotation term, with it (rates fitted on training windows, kept where validation
  says so), and with the rates refitted *on these test windows* (grid -0.5 .. 1.5): an upper bound on what
  extrapolating the rotation seen over the last ``history`` frames can give.

    python scripts/atom_pose_floor.py runs/<run>/featurize --ckpt atom-md17
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import molgen
from molgen.models.atom.forecaster import masked_mse
from molgen.nn.geometry import kabsch_align
from molgen.pipelines.atom import read_windows


def pose_only(test: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Each true future frame rigidly aligned onto x_t ``[S, P, N, 3]``, and the centroids of x_t ``[S, 3]``."""
    x0, y, mask = test["x0"].double(), test["targets"].double(), test["mask"].bool()
    S, P, N, _ = y.shape
    xr = x0[:, None].expand(S, P, N, 3).reshape(S * P, N, 3)
    m = mask[:, None].expand(S, P, N).reshape(S * P, N)
    aligned = kabsch_align(y.reshape(S * P, N, 3), xr, m).reshape(S, P, N, 3)
    c = (x0 * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return aligned, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("featurize", type=Path, help="a featurized run's folder (windows.pt)")
    ap.add_argument("--ckpt", default="atom-md17")
    args = ap.parse_args()
    windows = read_windows(args.featurize)
    test, names = windows["test"], windows["meta"]["molecules"]
    y, mask = test["targets"], test["mask"]
    static = masked_mse(test["x0"][:, None].expand_as(y), y, mask)
    oracle, c = pose_only(test)
    model = molgen.load(args.ckpt)
    prior = model.prior
    base = model.forecast(test["x0"], test["v0"], test["z"], mask)              # no earlier frame: no rotation
    if prior is not None and prior.spin is not None:
        _, slot = prior.aligned(test["x0"], test["z"], mask)
        turn = lambda: prior.tumble(base, test["x0"], test["x_hist"], slot, mask, test["has_hist"])  # noqa: E731
        shipped, spin = turn(), prior.spin.clone()
        prior.fit_spin(base, test["x0"], test["z"], mask, y, test["x_hist"], test["has_hist"],
                       grid=torch.linspace(-0.5, 1.5, 41))
        refit, fitted = turn(), prior.spin.clone()
        prior.spin.copy_(spin)
    else:
        shipped = refit = None
    print(f"{args.featurize}: {len(y)} test windows; S2T / static S2T, heavy atoms")
    print(f"{'molecule':14s} {'windows':>7s} {'pose only':>9s} {'shrunk':>7s} {'no turn':>8s} {'its turn':>8s} "
          f"{'turn fitted on test':>19s}")
    for k, name in enumerate(names):
        sel = test["molecule"] == k
        if not sel.any():
            continue
        st = static[sel].mean()
        ratio = lambda pred: float(masked_mse(pred[sel].to(y), y[sel], mask[sel]).mean() / st)  # noqa: E731
        m = mask[sel][:, None, :, None].double()
        o, r = (oracle - c[:, None, None])[sel], (y.double() - c[:, None, None])[sel]
        s = float((o * r * m).sum() / (o * o * m).sum())
        shrunk = c[:, None, None] + s * (oracle - c[:, None, None])
        row = f"{name:14s} {int(sel.sum()):7d} {ratio(oracle):9.3f} {ratio(shrunk):7.3f} {ratio(base):8.3f}"
        if shipped is not None:
            rates = fitted[int(slot[sel][0])] if int(slot[sel][0]) >= 0 else torch.zeros(1)
            row += f" {ratio(shipped):8.3f} {ratio(refit):8.3f} (rates {float(rates[0]):.2f} .. {float(rates[-1]):.2f})"
        print(row)


if __name__ == "__main__":
    main()
