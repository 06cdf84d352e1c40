"""Benchmark molgen's Gaunt tensor product against e3nn's tensor product computing the same function.

For lmax = L1 = L2 in 1..8 and lmax_out = 2 lmax, on x1, x2 of shape [batch, channels, (L+1)^2] (one product
per (batch, channel) pair, e3nn mode "uuu"), it times forward and forward+backward
(``out.square().sum().backward()`` into both inputs) in two regimes, each with one and two torch threads:
"large" (4096 x 32 pairs, a layer of a batched equivariant network) and "small" (2048 x 1 pairs, where fixed
per-call costs weigh more). Implementations:

* molgen ``gaunt_tensor_product`` with the S2-grid path ("grid", the one ``method="auto"`` picks: on CPU the
  fused C kernel), with ``--impls ... grid_torch`` the same path in torch ops only (``MOLGEN_GAUNT_KERNEL=torch``,
  what runs where no C compiler is found) and with ``--impls ... fourier`` the paper's 2D-Fourier path,
* e3nn ``TensorProduct`` with the parity-even paths of the full tensor product and Gaunt path weights
  (``molgen.nn.gaunt.e3nn_gaunt_tensor_product``): the same function ("e3nn");
* with ``--impls ... e3nn_compiled e3nn_v2``, what an e3nn user would try for speed: the same e3nn module under
  ``torch.compile`` ("e3nn_compiled"; compilation is part of the warm-up, not timed), and e3nn's
  ``o3.experimental.FullTensorProductv2`` restricted to the parity-even outputs ``0e + 1o + ... + (2L)``
  ("e3nn_v2": every path separately, without the Gaunt weighting: slightly more output, the same products).

Each implementation lives in its own worker process (so its peak memory is its own), and the parent
interleaves the calls: every repeat runs forward, then forward+backward, in each worker in turn (the order
alternating between repeats), so machine load affects all of them alike. Reported: the median over repeats, and
the ratios e3nn / molgen of those medians. On CPU with one thread the clock is the worker's process CPU time
(robust on a shared machine); with several threads it is wall time (CPU time would also count OpenMP
spin-waiting, which is not work: run those tables on an idle machine); on CUDA wall time with synchronisation. Peak memory: what one forward+backward needs beyond its
inputs, measured as the growth of CUDA ``max_memory_allocated`` or of the worker's max RSS (CPU) from before its
first call (inputs allocated) to the end (so it includes the tables, the C kernel's library and, for
"e3nn_compiled", compilation). Where e3nn's full batch would need more than ``--e3nn-max-gb`` for
its per-pair outer products, all implementations run on the same first rows only and their times are scaled
linearly to the full batch (``*``; same rows for all, so the same memory regime: see :func:`timed_rows`).

Usage:
    python scripts/bench_gaunt.py [--regimes large small] [--threads 1 2] [--lmax 1 2 6] [--repeats 5]
        [--impls grid e3nn] [--quick] [--device cuda] [--out results.json]
    (--batch / --channels replace the regimes by one custom size)
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


def timed_rows(lmax: int, batch: int, channels: int, e3nn_max_gb: float) -> int:
    """Rows every implementation is timed on: the full batch, or fewer where e3nn's per-pair outer products
    would need more than ``e3nn_max_gb``. All implementations use the same rows, so they run in the same memory
    regime (a [rows, 32, (2L+1)^2] output above glibc's 32 MB mmap threshold is page-faulted in afresh on every
    call, which at 4096 rows costs about a quarter of the grid path's forward+backward)."""
    n = (lmax + 1) ** 2
    per_row = channels * n * n * 4 * 3
    return max(1, min(batch, int(e3nn_max_gb * 2**30 // per_row)))


def worker(impl: str, lmax: int, batch: int, channels: int, device: str, threads: int, e3nn_max_gb: float,
           clock: str, molgen_full_batch: bool) -> None:
    """Serve timing requests on stdin ("fwd", "fb", "mem", "quit"), one JSON line per answer on stdout."""
    if impl == "grid_torch":
        os.environ["MOLGEN_GAUNT_KERNEL"] = "torch"
    import torch

    torch.set_num_threads(threads)
    from molgen.nn.gaunt import e3nn_gaunt_tensor_product, gaunt_tensor_product

    n = (lmax + 1) ** 2
    rows = batch if molgen_full_batch and impl != "e3nn" else timed_rows(lmax, batch, channels, e3nn_max_gb)
    if impl == "e3nn":
        fn = e3nn_gaunt_tensor_product(lmax, lmax, 2 * lmax).to(device)
    elif impl == "e3nn_compiled":
        fn = torch.compile(e3nn_gaunt_tensor_product(lmax, lmax, 2 * lmax).to(device))
    elif impl == "e3nn_v2":
        from e3nn import o3
        from e3nn.o3.experimental import FullTensorProductv2

        irreps = o3.Irreps.spherical_harmonics(lmax)
        even = o3.Irreps([(1, (l, (-1) ** l)) for l in range(2 * lmax + 1)])
        tp = FullTensorProductv2(irreps, irreps, filter_ir_out=even).to(device)

        def fn(a, b):
            return tp(a.reshape(-1, n), b.reshape(-1, n))
    else:
        method = "grid" if impl == "grid_torch" else impl

        def fn(a, b):
            return gaunt_tensor_product(a, b, 2 * lmax, method=method)
    x1 = torch.randn(rows, channels, n, device=device, requires_grad=True)
    x2 = torch.randn(rows, channels, n, device=device, requires_grad=True)

    def forward():
        with torch.no_grad():
            fn(x1, x2)

    def forward_backward():
        fn(x1, x2).square().sum().backward()

    now = time.process_time if clock == "process" else time.perf_counter

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    # peak memory: growth from here (inputs allocated, nothing run yet) to the highest point of any later call
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for call in (forward, forward_backward):  # warm-up (also builds and caches the basis tables)
        call()
    sync()
    scale = batch / rows
    print(json.dumps({"rows": rows}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            return
        if command == "mem":
            if device == "cuda":
                peak = torch.cuda.max_memory_allocated() - base
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
            print(json.dumps({"peak_mb": peak / 2**20}), flush=True)
            continue
        call = forward if command == "fwd" else forward_backward
        sync()
        t0 = now()
        call()
        sync()
        print(json.dumps({"ms": 1e3 * (now() - t0) * scale}), flush=True)


class Worker:
    """A worker subprocess for one (implementation, lmax)."""

    def __init__(self, impl: str, lmax: int, args: argparse.Namespace, env: dict) -> None:
        cmd = [sys.executable, __file__, "--worker", f"{impl}:{lmax}", "--device", args.device,
               "--threads", str(args.threads), "--batch", str(args.batch), "--channels", str(args.channels),
               "--e3nn-max-gb", str(args.e3nn_max_gb), "--clock", args.clock]
        if args.molgen_full_batch:
            cmd.append("--molgen-full-batch")
        self.impl = impl
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.rows = self._read()["rows"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.impl} worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        self.proc.wait()


def measure(lmax: int, args: argparse.Namespace, env: dict) -> dict[str, dict]:
    """Median times and peak memory of each implementation at one lmax, with interleaved calls."""
    workers = [Worker(impl, lmax, args, env) for impl in args.impls]
    try:
        times = {(w.impl, mode): [] for w in workers for mode in ("fwd", "fb")}
        for rep in range(args.repeats):
            order = workers if rep % 2 == 0 else workers[::-1]
            for mode in ("fwd", "fb"):
                for w in order:
                    times[w.impl, mode].append(w.ask(mode)["ms"])
        return {w.impl: {"fwd_ms": statistics.median(times[w.impl, "fwd"]),
                         "fb_ms": statistics.median(times[w.impl, "fb"]),
                         "peak_mb": w.ask("mem")["peak_mb"], "rows": w.rows, "scaled": w.rows < args.batch}
                for w in workers}
    finally:
        for w in workers:
            w.close()


REGIMES = {"large": (4096, 32), "small": (2048, 1)}


def run_regime(args: argparse.Namespace, lmaxes: list[int], label: str) -> dict:
    """Time every implementation at every lmax for ``args.batch`` x ``args.channels`` pairs on ``args.threads``
    threads; print the table; return the results (for --out)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"\n## {label}: batch {args.batch} x channels {args.channels} pairs, lmax_out = 2 lmax, device "
          f"{args.device}, torch threads {args.threads}, clock {args.clock} (median of {args.repeats} interleaved "
          f"repeats of {'process CPU time, all threads' if args.clock == 'process' else 'wall time'})", flush=True)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    results: dict[int, dict[str, dict]] = {}
    for lmax in tqdm(lmaxes, desc=label, file=sys.stderr):
        try:
            results[lmax] = measure(lmax, args, env)
        except RuntimeError as err:
            print(f"error: lmax={lmax}: {err}", file=sys.stderr)

    molgen = [impl for impl in args.impls if not impl.startswith("e3nn")]
    baselines = [impl for impl in args.impls if impl.startswith("e3nn")]

    def cell(lmax: int, impl: str, key: str) -> str:
        r = results.get(lmax, {}).get(impl)
        if r is None:
            return "-"
        return f"{r[key]:.1f}" + ("*" if r["scaled"] and key != "peak_mb" else "")

    def ratio(lmax: int, base: str, impl: str, key: str) -> str:
        a, b = results.get(lmax, {}).get(base), results.get(lmax, {}).get(impl)
        return f"{a[key] / b[key]:.1f}x" if a and b else "-"

    head = ["lmax"]
    for key, name in (("fwd_ms", "fwd"), ("fb_ms", "fwd+bwd")):
        head += [f"{impl} {name} ms" for impl in args.impls] + [f"{base}/{impl} {name}" for impl in molgen
                                                                 for base in baselines]
    head.append("peak MB " + " / ".join(args.impls))
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for lmax in lmaxes:
        row = [str(lmax)]
        for key in ("fwd_ms", "fb_ms"):
            row += [cell(lmax, impl, key) for impl in args.impls]
            row += [ratio(lmax, base, impl, key) for impl in molgen for base in baselines]
        row.append(" / ".join(cell(lmax, impl, "peak_mb") for impl in args.impls))
        print("| " + " | ".join(row) + " |")
    scaled = sorted({(lmax, r["rows"]) for lmax, res in results.items() for r in res.values() if r["scaled"]})
    if scaled:
        rows = ", ".join(f"lmax {lmax}: {n}" for lmax, n in scaled)
        same = "" if args.molgen_full_batch else ", the same for every implementation,"
        print(f"\n* timed on fewer rows ({rows} of {args.batch}){same} to bound e3nn's memory; times scaled "
              "linearly to the full batch.")
    return {"batch": args.batch, "channels": args.channels, "threads": args.threads, "clock": args.clock,
            "results": {str(k): v for k, v in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: batch 256 x 8 channels, lmax 1..6")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--regimes", nargs="*", default=["large", "small"], choices=list(REGIMES),
                        help="large: 4096 x 32 pairs; small: 2048 x 1 pairs (default: both)")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                        help="torch CPU thread counts, each a separate table (default: 1 2)")
    parser.add_argument("--batch", type=int, default=None, help="custom size (with --channels) instead of regimes")
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--lmax", type=int, nargs="*", default=None)
    parser.add_argument("--impls", nargs="*", default=["grid", "e3nn"],
                        choices=["grid", "grid_torch", "fourier", "e3nn", "e3nn_compiled", "e3nn_v2"])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per lmax (median reported)")
    parser.add_argument("--e3nn-max-gb", type=float, default=1.0)
    parser.add_argument("--clock", choices=["process", "wall"], default=None,
                        help="process CPU time (default on CPU with one thread: robust when the machine is "
                             "shared) or wall time (default on CUDA and with several threads, where CPU time would "
                             "count OpenMP spin-waiting; run those on an idle machine)")
    parser.add_argument("--molgen-full-batch", action="store_true",
                        help="time molgen on the full batch even where e3nn runs on fewer rows (the script's "
                             "behaviour before 2026-11-23; larger outputs, a slower memory regime for molgen)")
    parser.add_argument("--out", default=None, help="also write all results as JSON to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, lmax = args.worker.split(":")
        worker(impl, int(lmax), args.batch, args.channels, args.device, args.threads[0], args.e3nn_max_gb,
               args.clock, args.molgen_full_batch)
        return

    lmaxes = args.lmax or (list(range(1, 7)) if args.quick else list(range(1, 9)))
    if args.quick:
        sizes = [("quick", 256, 8)]
    elif args.batch is not None or args.channels is not None:
        sizes = [("custom", args.batch or 4096, args.channels or 32)]
    else:
        sizes = [(name, *REGIMES[name]) for name in args.regimes]
    import torch

    print(f"# Gaunt tensor product vs e3nn (torch {torch.__version__}; {_cpu_name()})")
    report = []
    for name, batch, channels in sizes:
        for threads in args.threads:
            # process CPU time is robust on a shared machine, but with several threads it also counts OpenMP
            # spin-waiting (libgomp busy-waits after each parallel region), which is not work: wall time there
            clock = args.clock or ("wall" if args.device == "cuda" or threads > 1 else "process")
            run = argparse.Namespace(**{**vars(args), "batch": batch, "channels": channels, "threads": threads,
                                        "clock": clock})
            report.append({"regime": name, **run_regime(run, lmaxes, f"{name}, {threads} thread(s)")})
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            names = {line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")}
        return ", ".join(sorted(names)) + f", {os.cpu_count()} logical CPUs"
    except OSError:
        return f"{os.cpu_count()} logical CPUs"


if __name__ == "__main__":
    main()
