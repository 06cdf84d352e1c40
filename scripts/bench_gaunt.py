"""Benchmark molgen's Gaunt tensor product against e3nn's tensor product computing the same function.

For lmax = L1 = L2 in 1..8 and lmax_out = 2 lmax, on x1, x2 of shape [batch, channels, (L+1)^2] (one product
per (batch, channel) pair, e3nn mode "uuu"), it times forward and forward+backward of

* molgen ``gaunt_tensor_product`` with the S2-grid path ("grid", the one ``method="auto"`` picks) and the
  paper's 2D-Fourier path ("fourier"),
* e3nn ``TensorProduct`` with the parity-even paths of the full tensor product and Gaunt path weights
  (``molgen.nn.gaunt.e3nn_gaunt_tensor_product``),

each in a fresh subprocess (so peak memory is per implementation). On CPU the clock is the process's CPU time
(minimum over repeats), which stays meaningful on a shared, oversubscribed machine; on CUDA wall time (median)
with synchronisation. It prints a Markdown table with the
ratios e3nn / grid. Peak memory: CUDA ``max_memory_allocated``; CPU growth of the process's max RSS during the
timed calls. Where e3nn's inputs of the full batch would need more than ``--e3nn-max-gb`` for its outer
products, e3nn runs on the first rows only and its time is scaled to the full batch (marked ``*``).

Usage:
    OMP_NUM_THREADS=1 python scripts/bench_gaunt.py [--quick] [--device cuda] [--threads 1] [--lmax 1 2 6]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _time(fn, device: str, clock: str, min_seconds: float = 1.0, max_reps: int = 5) -> float:
    import torch

    now = time.process_time if clock == "process" else time.perf_counter

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()  # warm-up (also builds and caches the basis tables)
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (not times or time.perf_counter() - start < min_seconds):
        t0 = now()
        fn()
        sync()
        times.append(now() - t0)
    return min(times) if clock == "process" else statistics.median(times)


def worker(impl: str, lmax: int, batch: int, channels: int, device: str, threads: int, e3nn_max_gb: float,
           clock: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from molgen.nn.gaunt import e3nn_gaunt_tensor_product, gaunt_tensor_product

    n = (lmax + 1) ** 2
    rows = batch
    if impl == "e3nn":  # e3nn materialises the outer product of the two inputs per pair
        per_row = channels * n * n * 4 * 3
        rows = max(1, min(batch, int(e3nn_max_gb * 2**30 // per_row)))
        tp = e3nn_gaunt_tensor_product(lmax, lmax, 2 * lmax).to(device)
        fn = tp
    else:
        def fn(a, b):
            return gaunt_tensor_product(a, b, 2 * lmax, method=impl)
    x1 = torch.randn(rows, channels, n, device=device, requires_grad=True)
    x2 = torch.randn(rows, channels, n, device=device, requires_grad=True)

    def forward():
        with torch.no_grad():
            fn(x1, x2)

    def forward_backward():
        fn(x1, x2).square().sum().backward()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t_fwd = _time(forward, device, clock)
    t_fb = _time(forward_backward, device, clock)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    scale = batch / rows
    return {"impl": impl, "lmax": lmax, "rows": rows, "fwd_ms": 1e3 * t_fwd * scale, "fb_ms": 1e3 * t_fb * scale,
            "peak_mb": peak / 2**20, "scaled": rows < batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: batch 256 x 8 channels, lmax 1..6")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--lmax", type=int, nargs="*", default=None)
    parser.add_argument("--impls", nargs="*", default=["grid", "fourier", "e3nn"])
    parser.add_argument("--e3nn-max-gb", type=float, default=1.0)
    parser.add_argument("--clock", choices=["process", "wall"], default=None,
                        help="process CPU time (default on CPU: robust when the machine is shared; sums over "
                             "threads) or wall time (default on CUDA)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.channels = 256, 8
    args.clock = args.clock or ("wall" if args.device == "cuda" else "process")
    lmaxes = args.lmax or (list(range(1, 7)) if args.quick else list(range(1, 9)))

    if args.worker:
        impl, lmax = args.worker.split(":")
        print(json.dumps(worker(impl, int(lmax), args.batch, args.channels, args.device, args.threads,
                                args.e3nn_max_gb, args.clock)))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"# Gaunt tensor product vs e3nn: batch {args.batch} x channels {args.channels} pairs, "
          f"lmax_out = 2 lmax, device {args.device}, torch threads {args.threads}, "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, clock {args.clock} "
          f"({'min of process CPU time' if args.clock == 'process' else 'median wall time'})", flush=True)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    results: dict[tuple[str, int], dict] = {}
    jobs = [(impl, lmax) for lmax in lmaxes for impl in args.impls]
    for impl, lmax in tqdm(jobs, desc="benchmarks", file=sys.stderr):
        cmd = [sys.executable, __file__, "--worker", f"{impl}:{lmax}", "--device", args.device,
               "--threads", str(args.threads), "--batch", str(args.batch), "--channels", str(args.channels),
               "--e3nn-max-gb", str(args.e3nn_max_gb), "--clock", args.clock]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"error: {impl} lmax={lmax} failed: {proc.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            continue
        results[impl, lmax] = json.loads(proc.stdout.strip().splitlines()[-1])

    def cell(impl: str, lmax: int, key: str) -> str:
        r = results.get((impl, lmax))
        if r is None:
            return "-"
        return f"{r[key]:.1f}" + ("*" if r["scaled"] and key != "peak_mb" else "")

    def ratio(lmax: int, key: str) -> str:
        a, b = results.get(("e3nn", lmax)), results.get(("grid", lmax))
        return f"{a[key] / b[key]:.1f}x" if a and b else "-"

    pairs = args.batch * args.channels
    print(f"\n| lmax | grid fwd ms | fourier fwd ms | e3nn fwd ms | e3nn/grid fwd | grid fwd+bwd ms | fourier fwd+bwd ms "
          f"| e3nn fwd+bwd ms | e3nn/grid fwd+bwd | grid pairs/s fwd+bwd | peak MB grid / fourier / e3nn |")
    print("|" + "---|" * 11)
    for lmax in lmaxes:
        g = results.get(("grid", lmax))
        rate = f"{pairs / (g['fb_ms'] / 1e3):,.0f}" if g else "-"
        print(f"| {lmax} | {cell('grid', lmax, 'fwd_ms')} | {cell('fourier', lmax, 'fwd_ms')} | "
              f"{cell('e3nn', lmax, 'fwd_ms')} | {ratio(lmax, 'fwd_ms')} | {cell('grid', lmax, 'fb_ms')} | "
              f"{cell('fourier', lmax, 'fb_ms')} | {cell('e3nn', lmax, 'fb_ms')} | {ratio(lmax, 'fb_ms')} | {rate} | "
              f"{cell('grid', lmax, 'peak_mb')} / {cell('fourier', lmax, 'peak_mb')} / {cell('e3nn', lmax, 'peak_mb')} |")
    scaled = [r for r in results.values() if r["scaled"]]
    if scaled:
        rows = ", ".join(f"lmax {r['lmax']}: {r['rows']}" for r in scaled)
        print(f"\n* e3nn timed on fewer rows ({rows} of {args.batch}) to bound its memory; "
              "time scaled linearly to the full batch.")


if __name__ == "__main__":
    main()
