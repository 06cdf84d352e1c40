"""Run xTB and DFT jobs for many molecules: persistent store, worker pool, per-job time limit, failures recorded.

* Every job is looked up in the SQLite store (:class:`ResultStore`) first; only missing jobs run, so an
  interrupted validation resumes and a repeated one recomputes nothing.
* ``engine="process"``: ``workers == 1`` runs jobs in this process; ``workers > 1`` uses a
  ``concurrent.futures.ProcessPoolExecutor``. ``engine="dask"`` submits the same jobs to a local
  ``dask.distributed`` cluster. Results are written to the store by this (parent) process as they arrive.
* Time limit: each job arms ``SIGALRM`` in the process that runs it (PySCF and tblite return to Python between
  SCF iterations, so the alarm interrupts within one iteration); a timed-out job is recorded as ``timeout``.
* Failures (``scf_not_converged``, ``relax_not_converged``, ``xtb_failed``, ``timeout``, ``error``) are
  recorded per molecule with the reason (and whatever the job computed before failing, e.g. the single point
  of a relaxation that did not converge) and counted; they never stop the run.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.data.molecule import Molecule
from molgen.errors import ConfigError
from molgen.settings import env, environ_restored
from molgen.validation.quantum.store import ResultStore, job_key
from molgen.validation.quantum.xtb import QuantumFailure

#: Workers are spawned, not forked: a child forked after torch (or xTB) ran OpenMP threads in the parent inherits a
#: locked thread pool and hangs in its first parallel region (seen: both workers asleep in a futex, 0 jobs done).
_SPAWN = multiprocessing.get_context("spawn")


class JobTimeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise JobTimeout()


def run_job(kind: str, numbers, positions, charge: int, options: dict, timeout: float) -> tuple[str, dict, float]:
    """Run one job with a time limit; returns ``(status, payload, seconds)`` and never raises.

    The job runs with ``OMP_NUM_THREADS=1`` unless the caller set it; the environment of the process that runs it
    is restored afterwards (as is its SIGALRM handler), so a job run in the caller's process leaves it unchanged.
    """
    with env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")):
        return _run_job(kind, numbers, positions, charge, options, timeout)


def _job_function(kind: str):
    if kind == "xtb":
        from molgen.validation.quantum.xtb import xtb_job

        return xtb_job
    from molgen.validation.quantum.dft import dft_job

    return dft_job


def _run_job(kind: str, numbers, positions, charge: int, options: dict, timeout: float) -> tuple[str, dict, float]:
    t0 = time.time()
    # imported before the alarm is armed: the time limit is the computation's, and an alarm never lands inside an
    # import (which would leave a half-imported PySCF or tblite module behind for the next job in this process)
    try:
        job, import_error = _job_function(kind), None
    except Exception as e:  # noqa: BLE001 -- recorded below like any failing job
        job, import_error = None, e
    use_alarm = timeout and timeout > 0 and hasattr(signal, "SIGALRM")
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, float(timeout))
    try:
        if import_error is not None:
            raise import_error
        payload = job(numbers, positions, charge, options)
        status = "ok"
    except JobTimeout:
        status, payload = "timeout", {"reason": f"exceeded the time limit of {timeout:g} s", "timeout": timeout}
    except QuantumFailure as e:
        status, payload = e.kind, {**e.partial, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 -- a failing job is recorded, never fatal
        where = traceback.extract_tb(e.__traceback__)[-1]
        status, payload = "error", {"reason": f"{type(e).__name__}: {str(e)[:200]} ({Path(where.filename).name}:"
                                              f"{where.lineno})"}
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return status, payload, time.time() - t0


def _jobs(mols: list[Molecule], table: pd.DataFrame, xtb: bool, dft: bool, xtb_options: dict,
          dft_options: dict) -> list[dict]:
    from molgen.validation.quantum.dft import method_name

    jobs = []
    specs = []
    if xtb:
        xo = {k: v for k, v in xtb_options.items() if k != "max_molecules"}
        # "/orbitals": results since HOMO/LUMO/gap were added (older stored results lack them: recomputed)
        method = f"xtb:gfn2{'/relax' if xo.get('relax', True) else ''}/fmax{xo.get('fmax', 0.05)}/orbitals"
        specs.append(("xtb", xo, method, int(xtb_options.get("max_molecules", 200))))
    if dft:
        do = {k: v for k, v in dft_options.items() if k != "max_molecules"}
        specs.append(("dft", do, method_name(do), int(dft_options.get("max_molecules", 20))))
    for kind, opts, method, limit in specs:
        for i, m in enumerate(mols[:limit]):
            jobs.append({"index": i, "kind": kind, "options": opts, "key": job_key(m, method),
                         "numbers": m.atomic_numbers, "positions": m.positions, "charge": m.net_charge})
    return jobs


def run_quantum(mols: list[Molecule], table: pd.DataFrame | None, store_path: str | Path, xtb: bool = False,
                dft: bool = False, workers: int = 1, timeout: float = 600.0, engine: str = "process",
                xtb_options: dict | None = None, dft_options: dict | None = None,
                progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Run (or fetch from the store) xTB/DFT jobs for ``mols``.

    Returns:
        a DataFrame aligned with ``mols`` (``xtb_*``/``dft_*`` columns, ``*_status``, ``*_reason``) and metrics
        (counts of computed / reused / failed jobs by reason, medians, seconds per job).
    """
    xtb_options, dft_options = dict(xtb_options or {}), dict(dft_options or {})
    store = ResultStore(store_path)
    jobs = _jobs(mols, table, xtb, dft, xtb_options, dft_options)
    todo = [j for j in jobs if _needs_run(store.get(j["key"]), timeout)]
    reused = len(jobs) - len(todo)
    if todo:
        _execute(todo, store, workers, timeout, engine, progress)
    results = pd.DataFrame(index=range(len(mols)))
    metrics: dict = {}
    for kind in ("xtb", "dft"):
        kind_jobs = [j for j in jobs if j["kind"] == kind]
        if not kind_jobs:
            continue
        status = pd.Series([None] * len(mols), dtype=object)
        reason = pd.Series([None] * len(mols), dtype=object)
        seconds = []
        for j in kind_jobs:
            r = store.get(j["key"])
            status[j["index"]] = r["status"]
            reason[j["index"]] = r.get("reason")
            seconds.append(r["seconds"])
            for k, v in r.items():
                if k.startswith(kind + "_") and not isinstance(v, list):
                    if k not in results:
                        results[k] = np.nan if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                    results.loc[j["index"], k] = v
        results[f"{kind}_status"] = status.values
        results[f"{kind}_reason"] = reason.values
        counts = status.dropna().value_counts().to_dict()
        metrics[f"{kind}_n_jobs"] = len(kind_jobs)
        metrics[f"{kind}_n_ok"] = int(counts.get("ok", 0))
        metrics[f"{kind}_failures"] = {k: int(v) for k, v in counts.items() if k != "ok"}
        metrics[f"{kind}_seconds_per_job_median"] = float(np.median(seconds)) if seconds else None
        for col in (f"{kind}_strain_kcal", f"{kind}_rmsd_heavy_A", f"{kind}_gap_ev", f"{kind}_dipole_debye",
                    "xtb_relaxed_gap_ev",
                    "dft_relax_energy_drop_kcal", "dft_relax_rmsd_heavy_A", "dft_cv_cal_molK", "dft_zpve_ev"):
            if col.startswith(kind) and col in results:
                vals = pd.to_numeric(results[col], errors="coerce").dropna()
                if len(vals):
                    metrics[f"{col}_median"] = float(vals.median())
        for col, name in (("dft_relax_converged", "dft_relax_converged_ratio"),
                          ("dft_is_minimum", "dft_minimum_ratio")):
            if kind == "dft" and col in results:
                vals = results[col].dropna()
                metrics[name] = float(vals.astype(bool).mean()) if len(vals) else None
        if kind == "dft" and "dft_n_imaginary" in results:
            n_imag = pd.to_numeric(results["dft_n_imaginary"], errors="coerce").dropna()
            metrics["dft_molecules_with_imaginary_freq"] = int((n_imag > 0).sum())
    metrics["quantum_jobs_reused_from_store"] = reused
    metrics["quantum_jobs_computed"] = len(todo)
    metrics["quantum_store"] = str(store_path)
    store.close()
    return results, metrics


def _needs_run(stored: dict | None, timeout: float) -> bool:
    """A job runs if it has no stored result, or timed out under a shorter time limit than ``timeout``."""
    if stored is None:
        return True
    return stored["status"] == "timeout" and float(stored.get("timeout", 0)) < float(timeout)


def _record(store: ResultStore, job: dict, result: tuple[str, dict, float]) -> None:
    status, payload, seconds = result
    store.put(job["key"], status, payload, seconds)


def _execute(todo: list[dict], store: ResultStore, workers: int, timeout: float, engine: str,
             progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="quantum jobs", unit="job", disable=not progress)
    args = [(j["kind"], j["numbers"], j["positions"], j["charge"], j["options"], timeout) for j in todo]
    try:
        if engine == "dask":
            _execute_dask(todo, args, store, workers, bar)
        elif engine != "process":
            raise ConfigError(f"engine={engine}: unknown engine (process, dask)")
        elif workers <= 1:
            for job, a in zip(todo, args):
                _record(store, job, run_job(*a))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
                pending = {pool.submit(run_job, *a): job for job, a in zip(todo, args)}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = pending.pop(fut)
                        try:
                            result = fut.result()
                        except Exception as e:  # noqa: BLE001 -- a crashed worker (e.g. killed by the OS)
                            result = ("error", {"reason": f"worker crashed: {type(e).__name__}"}, 0.0)
                        _record(store, job, result)
                        bar.update(1)
    finally:
        bar.close()


def _execute_dask(todo, args, store, workers, bar) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("engine=dask needs dask.distributed (pip install 'dask[distributed]')") from None
    import dask

    # non-daemonic workers may start the child process that carries the SIGALRM time limit; dask's nanny writes
    # the workers' variables (OMP_NUM_THREADS, MKL_NUM_THREADS, ...) into this process's environment: restored after
    with environ_restored(), dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                         dashboard_address=None) as cluster, Client(cluster) as client:
        futures = {client.submit(_run_job_in_dask_worker, *a, pure=False): job for job, a in zip(todo, args)}
        for fut in as_completed(futures):
            _record(store, futures[fut], fut.result())
            bar.update(1)


def _run_job_in_dask_worker(*args):
    """Dask runs tasks in worker threads, where SIGALRM cannot be armed: run the job in a child process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=_SPAWN) as pool:
        return pool.submit(run_job, *args).result()
