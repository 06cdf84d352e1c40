"""Wall time to forecast P = 8 future frames for a batch: ATOM (one parallel decode) vs EGNO vs an
autoregressive ATOM rollout (a P = 1 ATOM of the same width called 8 times, each call fed its own output).

Untrained weights (timing only), paper sizes (ATOM d=128, 5 blocks, 8 heads; EGNO hidden 64, 5 layers), real
aspirin states (13 heavy atoms) from the embedded subset, CPU, eval mode, no_grad; median of --repeats runs.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_atom.py [--batch 100] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from molgen.data import md17
from molgen.models.atom.network import ATOM
from molgen.models.atom.egno import EGNO
from molgen.pipelines.atom import repo_data_dir


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--molecule", default="aspirin")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    traj = md17.load_xtb_npz(repo_data_dir() / f"{args.molecule}.npz")
    p = md17.Protocol()
    w = md17.make_windows(traj, md17.candidate_starts(traj, p)[: args.batch], p)
    x0, v0 = torch.tensor(w["x0"]), torch.tensor(w["v0"])
    z = torch.tensor(w["z"])[None].expand(len(x0), -1)
    torch.manual_seed(0)
    atom, egno, atom1 = ATOM().eval(), EGNO().eval(), ATOM(n_targets=1).eval()
    frames_per_step = p.delta_frame // p.n_targets

    @torch.no_grad()
    def rollout():
        x, v = x0, v0
        for _ in range(p.n_targets):
            nxt = atom1(x, v, z)[:, 0]
            v, x = (nxt - x) / frames_per_step, nxt   # velocity per frame implied by the step
        return x

    with torch.no_grad():
        t_atom = timed(lambda: atom(x0, v0, z), args.repeats)
        t_egno = timed(lambda: egno(x0, v0, z), args.repeats)
    t_ar = timed(rollout, args.repeats)
    print(f"{args.molecule}: batch {len(x0)} x {x0.shape[1]} heavy atoms, P = {p.n_targets}, "
          f"{torch.get_num_threads()} CPU thread(s), median of {args.repeats}")
    print(f"  ATOM parallel decode   {t_atom * 1e3:9.1f} ms   (1.00x)")
    print(f"  EGNO                   {t_egno * 1e3:9.1f} ms   ({t_egno / t_atom:.2f}x ATOM)")
    print(f"  ATOM autoregressive    {t_ar * 1e3:9.1f} ms   ({t_ar / t_atom:.2f}x ATOM)")
    print(f"  per forecast window: ATOM {t_atom / len(x0) * 1e3:.2f} ms, EGNO {t_egno / len(x0) * 1e3:.2f} ms, "
          f"autoregressive {t_ar / len(x0) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
