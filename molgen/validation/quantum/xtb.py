"""GFN2-xTB through tblite (Bannwarth, Ehlert, Grimme 2019, https://doi.org/10.1021/acs.jctc.8b01176).

One job = a single point at the given geometry, then (optionally) a relaxation with SciPy's L-BFGS-B on the
tblite energy and gradient. HOMO, LUMO and gap (eV) come from the single point's orbital energies and
occupations, at the given geometry and at the relaxed one (``xtb_relaxed_gap_ev``: what QM9's DFT gaps, computed at
relaxed geometries, should be compared with; docs/validation.md has the xTB-vs-DFT calibration on QM9). Strain energy = E(given geometry) - E(relaxed), kcal/mol; heavy-atom RMSD between
the given and the relaxed geometry after Kabsch superposition (same atom order, no symmetry search).
SciPy's optimizer is used instead of ASE's to avoid a dependency; convergence is on the largest atomic force.
"""
from __future__ import annotations

import numpy as np

HARTREE_TO_KCAL = 627.509474
HARTREE_TO_EV = 27.211386
BOHR = 0.52917721092  # Angstrom


class QuantumFailure(RuntimeError):
    """A calculation that ran but failed (e.g. SCF not converged); ``kind`` is recorded in the store, with
    ``partial`` (results computed before the failure, e.g. the single point when a relaxation fails)."""

    def __init__(self, kind: str, message: str, partial: dict | None = None):
        super().__init__(message)
        self.kind = kind
        self.partial = dict(partial or {})


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of ``a`` and ``b`` (``[N, 3]``) after optimal rotation and translation."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ rot - b) ** 2).sum(1).mean()))


def _calculator(numbers, positions_bohr, charge: int, uhf: int):
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", np.asarray(numbers), np.asarray(positions_bohr), charge=float(charge), uhf=uhf)
    calc.set("verbosity", 0)
    return calc


def frontier_orbitals(result) -> tuple[float, float] | None:
    """(HOMO, LUMO) in eV from a tblite result: the highest orbital holding at least one electron and the
    lowest holding less (occupations are summed over spin, possibly fractional at tblite's electronic
    temperature). None when either is missing."""
    e = np.asarray(result.get("orbital-energies"), dtype=float).ravel() * HARTREE_TO_EV
    occ = np.asarray(result.get("orbital-occupations"), dtype=float).ravel()
    if e.shape != occ.shape or not (occ >= 1.0).any() or not (occ < 1.0).any():
        return None
    return float(e[occ >= 1.0].max()), float(e[occ < 1.0].min())


def _orbital_columns(result, prefix: str) -> dict:
    fo = frontier_orbitals(result)
    if fo is None:
        return {}
    return {f"{prefix}homo_ev": fo[0], f"{prefix}lumo_ev": fo[1], f"{prefix}gap_ev": fo[1] - fo[0]}


def xtb_job(numbers: np.ndarray, positions: np.ndarray, charge: int, options: dict) -> dict:
    """GFN2-xTB single point (+ relaxation). Positions in Angstrom. Returns a flat dict of results."""
    numbers = np.asarray(numbers)
    n_el = int(numbers.sum()) - int(charge)
    uhf = n_el % 2
    x0 = np.asarray(positions, dtype=float) / BOHR
    calc = _calculator(numbers, x0, charge, uhf)
    try:
        res = calc.singlepoint()
    except Exception as e:  # noqa: BLE001 -- tblite raises its own runtime errors
        raise QuantumFailure("xtb_failed", f"single point: {str(e).splitlines()[0][:200]}") from None
    e0 = float(res.get("energy"))
    g0 = np.asarray(res.get("gradient"))
    out = {"xtb_energy_hartree": e0, "xtb_max_force_eV_A": float(np.abs(g0).max() * HARTREE_TO_EV / BOHR),
           "xtb_uhf": uhf, **_orbital_columns(res, "xtb_")}
    if not options.get("relax", True) or len(numbers) < 2:
        return out
    from scipy.optimize import minimize

    fmax = float(options.get("fmax", 0.05)) / (HARTREE_TO_EV / BOHR)  # eV/A -> Hartree/Bohr
    state = {"n": 0}

    def fun(x):
        calc.update(x.reshape(-1, 3))
        r = calc.singlepoint(res)
        state["n"] += 1
        state["result"] = r
        return float(r.get("energy")), np.asarray(r.get("gradient")).ravel()

    opt = minimize(fun, x0.ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(options.get("steps", 300)), "gtol": fmax, "ftol": 0.0, "maxcor": 30})
    x1 = opt.x.reshape(-1, 3)
    e1, g1 = fun(opt.x)
    heavy = numbers > 1
    sel = heavy if heavy.sum() >= 3 else np.ones_like(heavy)
    out.update({
        "xtb_relaxed_energy_hartree": e1,
        "xtb_strain_kcal": (e0 - e1) * HARTREE_TO_KCAL,
        "xtb_rmsd_heavy_A": kabsch_rmsd(x0[sel] * BOHR, x1[sel] * BOHR),
        "xtb_relax_steps": state["n"],
        "xtb_relax_converged": bool(np.abs(g1).max() <= fmax * 1.0001),
        "xtb_relaxed_positions": (x1 * BOHR).round(5).tolist(),
        **_orbital_columns(state["result"], "xtb_relaxed_"),
    })
    return out
