"""The fused CPU kernel of the S2-grid Gaunt product (``_kernel.c``): build, load, call.

The torch path of ``_grid.py`` runs each stage (gather, Legendre GEMM, phi GEMM, product, projection) over a
chunk of pairs before the next, so every stage writes a grid-sized array: at these sizes the product is bound by
that memory traffic and by per-op dispatch, not by arithmetic. ``_kernel.c`` runs all stages on a tile of 16
pairs (8 in float64) while it sits in cache, one SIMD lane per pair.

It is plain C99 (no Python or torch headers), compiled at first use with the system C compiler (``$CC``, else
``cc``) for this CPU (``-O3 -march=native``) into ``$MOLGEN_CACHE/kernels`` (default ``~/.cache/molgen``), once
per source, flags and CPU; later processes load the cached library. It is called through ctypes. The pairs are
split over ``torch.get_num_threads()`` OpenMP threads inside the kernel, linked against the OpenMP runtime torch
loaded (so they are torch's own threads); a build without OpenMP uses a Python thread pool instead (ctypes
releases the GIL).

``MOLGEN_GAUNT_KERNEL``: ``auto`` (default: the C kernel on CPU for float32/float64 when it builds, else the torch
path, with one warning), ``torch`` (always the torch path), ``c`` (the C kernel or an error).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from molgen.errors import MolgenError

SOURCE = Path(__file__).with_name("_kernel.c")
#: pairs per tile in the kernel (one 512-bit register): threads get whole tiles
TILE = {torch.float32: 16, torch.float64: 8}
_FLAGS = ["-O3", "-std=c99", "-fPIC", "-fno-math-errno"]
_NATIVE = ["-march=native", "-mprefer-vector-width=512"]

_lock = threading.Lock()
_libs: dict[torch.dtype, object] = {}
_failed: str | None = None
_pool: tuple[ThreadPoolExecutor, int] | None = None  # (pool, pid of the process that made it)


class _Plan(ctypes.Structure):
    _fields_ = ([(k, ctypes.c_int64) for k in ("L1", "L2", "Lo", "T", "K", "n1", "n2", "no")]
                + [(k, ctypes.c_void_p) for k in ("leg1", "phi1", "leg2", "phi2", "phio", "lego",
                                                   "pos1", "pos2", "poso")])


def mode() -> str:
    value = os.environ.get("MOLGEN_GAUNT_KERNEL", "auto").strip().lower() or "auto"
    if value not in ("auto", "torch", "c"):
        raise MolgenError(f"MOLGEN_GAUNT_KERNEL must be auto, torch or c, got {value!r}")
    return value


def cache_dir() -> Path:
    root = os.environ.get("MOLGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "molgen")
    return Path(root) / "kernels"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def torch_openmp_runtime() -> Path | None:
    """The GNU OpenMP runtime (libgomp) torch loaded into this process, if any (Linux: from /proc/self/maps).

    The kernel is linked against exactly this file, so its OpenMP threads are torch's intra-op threads."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split(None, 5)[-1] for line in maps.splitlines() if "libgomp" in line and "/" in line}
    return Path(sorted(paths)[0]) if paths else None


def _build(dtype: torch.dtype) -> Path:
    """Compile (or find in the cache) the kernel library for ``dtype``; raises ``RuntimeError`` on failure.

    Tried in order: OpenMP linked against torch's own runtime with ``-march=native``; without OpenMP (threads
    from a Python pool) with ``-march=native``; without either (not every compiler knows -march=native)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    real, width = ("float", 16) if dtype == torch.float32 else ("double", 8)
    defines = [f"-DREAL={real}", f"-DW={width}"] + (["-DREAL_IS_FLOAT"] if real == "float" else [])
    source = SOURCE.read_bytes()
    gomp = torch_openmp_runtime()
    tries = []
    if gomp is not None:  # compile with -fopenmp, link without it (no second libgomp), against torch's file
        link = [f"-L{gomp.parent}", f"-l:{gomp.name}", f"-Wl,-rpath,{gomp.parent}"]
        tries.append((_FLAGS + _NATIVE + defines + ["-fopenmp"], link))
    tries += [(_FLAGS + _NATIVE + defines, []), (_FLAGS + defines, [])]
    errors = []
    for flags, link in tries:
        key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags + link).encode(),
                                         platform.machine().encode(), _cpu_id().encode()])).hexdigest()[:16]
        target = cache_dir() / f"gaunt_{real}_{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            obj, tmp_out = Path(tmp) / "kernel.o", Path(tmp) / target.name
            steps = [[cc, *flags, "-c", str(SOURCE), "-o", str(obj)],
                     [cc, "-shared", str(obj), *link, "-o", str(tmp_out)]]
            for cmd in steps:
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
                    break
            else:
                os.replace(tmp_out, target)  # atomic: concurrent builders leave one complete file
                return target
    raise RuntimeError(f"{cc} failed: {errors[-1][0]}")


def _cpu_id() -> str:
    """The CPU model and its flags (the library is built with -march=native for this CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def library(dtype: torch.dtype):
    """The loaded kernel library for ``dtype``, or None (torch path) if it cannot be built and the mode allows."""
    global _failed
    if dtype not in TILE:
        return None
    lib = _libs.get(dtype)
    if lib is not None:
        return lib
    with _lock:
        if dtype in _libs:
            return _libs[dtype]
        if _failed is not None:
            if mode() == "c":
                raise MolgenError(f"MOLGEN_GAUNT_KERNEL=c but the C kernel could not be built: {_failed}")
            return None
        try:
            lib = ctypes.CDLL(str(_build(dtype)))
        except (RuntimeError, OSError) as err:
            _failed = str(err)
            if mode() == "c":
                raise MolgenError(f"MOLGEN_GAUNT_KERNEL=c but the C kernel could not be built: {err}") from None
            warnings.warn(f"molgen Gaunt product: C kernel unavailable ({err}); using the slower torch path",
                          RuntimeWarning, stacklevel=3)
            return None
        plan_p, i64, ptr = ctypes.POINTER(_Plan), ctypes.c_int64, ctypes.c_void_p
        signatures = {"gaunt_forward": [plan_p, i64, i64] + [ptr] * 3,
                      "gaunt_backward": [plan_p, i64, i64] + [ptr] * 5,
                      "gaunt_forward_threads": [plan_p, i64, ctypes.c_int] + [ptr] * 3,
                      "gaunt_backward_threads": [plan_p, i64, ctypes.c_int] + [ptr] * 5,
                      "gaunt_openmp": []}
        for name, args in signatures.items():  # explicit types: pair counts are 64-bit
            getattr(lib, name).argtypes = args
            getattr(lib, name).restype = ctypes.c_int
        lib.openmp = bool(lib.gaunt_openmp())
        _libs[dtype] = lib
        return lib


def available(x: Tensor) -> bool:
    """Whether the C kernel handles tensors like ``x`` (CPU, float32/float64, mode allows, library builds)."""
    if x.device.type != "cpu" or x.dtype not in TILE or mode() == "torch":
        return False
    return library(x.dtype) is not None


def plan(t: dict) -> tuple[_Plan, list[Tensor]]:
    """The kernel's plan struct for the tables ``t`` of ``_grid._tables`` (cached in ``t``)."""
    cached = t.get("c_plan")
    if cached is not None:
        return cached
    keep = {k: t[k].contiguous() for k in ("legendre1", "phi1", "legendre2", "phi2", "phi_out", "legendre_out",
                                           "position1", "position2", "out_index")}
    lmax1, lmax2, lmax_out = (t[k].shape[0] // 2 - 1 for k in ("gather1", "gather2", "gather_out"))
    p = _Plan(L1=lmax1, L2=lmax2, Lo=lmax_out, T=t["legendre1"].shape[1], K=t["phi1"].shape[1],
              n1=t["position1"].numel(), n2=t["position2"].numel(), no=t["out_index"].numel(),
              leg1=keep["legendre1"].data_ptr(), phi1=keep["phi1"].data_ptr(), leg2=keep["legendre2"].data_ptr(),
              phi2=keep["phi2"].data_ptr(), phio=keep["phi_out"].data_ptr(), lego=keep["legendre_out"].data_ptr(),
              pos1=keep["position1"].data_ptr(),
              pos2=keep["position2"].data_ptr(), poso=keep["out_index"].data_ptr())
    t["c_plan"] = (p, list(keep.values()))  # the tensors stay alive as long as the plan
    return t["c_plan"]


def _ptr(x: Tensor | None):
    return ctypes.c_void_p(x.data_ptr() if x is not None else 0)


def _run(lib, name: str, p: _Plan, pairs: int, tile: int, *tensors: Tensor | None) -> None:
    """Run kernel ``name`` over all pairs, split in whole tiles over torch's threads: inside the kernel with
    OpenMP (torch's runtime, so torch's own threads) when the library has it, else over a Python thread pool
    (ctypes releases the GIL) with the calling thread taking the first share."""
    global _pool
    threads = max(1, min(torch.get_num_threads(), -(-pairs // (4 * tile))))  # >= 4 tiles per thread
    ptrs = [_ptr(x) for x in tensors]
    if threads > 1 and lib.openmp:
        codes = [getattr(lib, name + "_threads")(ctypes.byref(p), pairs, threads, *ptrs)]
    elif threads == 1:
        fn = getattr(lib, name)
        codes = [fn(ctypes.byref(p), 0, pairs, *ptrs)]
    else:
        fn = getattr(lib, name)
        step = -(-pairs // (threads * tile)) * tile
        bounds = [(s, min(s + step, pairs)) for s in range(0, pairs, step)]
        with _lock:  # a new pool after a fork (the parent's threads do not exist in the child)
            if _pool is None or _pool[1] != os.getpid() or _pool[0]._max_workers < len(bounds) - 1:
                _pool = (ThreadPoolExecutor(max_workers=len(bounds) - 1, thread_name_prefix="molgen-gaunt"),
                         os.getpid())
            pool = _pool[0]
        others = [pool.submit(fn, ctypes.byref(p), start, end, *ptrs) for start, end in bounds[1:]]
        codes = [fn(ctypes.byref(p), bounds[0][0], bounds[0][1], *ptrs)]  # the calling thread takes a share too
        codes += [f.result() for f in others]
    if any(codes):
        raise MemoryError("Gaunt C kernel: could not allocate its workspace")


def forward(x1: Tensor, x2: Tensor, t: dict) -> Tensor:
    """``x1 [P, n1], x2 [P, n2]`` (contiguous, same dtype) -> ``[P, n_out]``."""
    p, _ = plan(t)
    out = x1.new_empty(x1.shape[0], p.no)
    _run(library(x1.dtype), "gaunt_forward", p, x1.shape[0], TILE[x1.dtype], x1, x2, out)
    return out


def backward(grad: Tensor, x1: Tensor, x2: Tensor, t: dict, need1: bool, need2: bool):
    """Gradients ``[P, n1], [P, n2]`` (None where not needed) of ``sum(grad * forward(x1, x2))``."""
    p, _ = plan(t)
    g1 = torch.empty_like(x1) if need1 else None
    g2 = torch.empty_like(x2) if need2 else None
    _run(library(x1.dtype), "gaunt_backward", p, x1.shape[0], TILE[x1.dtype], x1, x2, grad, g1, g2)
    return g1, g2
