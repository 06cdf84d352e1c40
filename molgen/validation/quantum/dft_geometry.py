"""DFT geometry relaxation (geomeTRIC through ``pyscf.geomopt``) and harmonic frequencies with ideal-gas
thermochemistry (analytic Hessian, ``pyscf.hessian.thermo``): what QM9 reports as ZPVE, frequencies and Cv.

Optimizer: geomeTRIC (Wang & Song 2016, https://doi.org/10.1063/1.4952956) rather than pyberny, because its
translation-rotation internal coordinates converge reliably for the odd geometries generators produce, and its
default convergence set ``GAU`` is Gaussian's (energy 1e-6 Eh, RMS/max gradient 3e-4/4.5e-4 Eh/Bohr, RMS/max
step 1.2e-3/1.8e-3 Angstrom), the optimizer that made QM9's geometries.

Frequencies (Ramakrishnan et al. 2014 computed QM9's in Gaussian 09 at the same level): the analytic Hessian,
mass-weighted with the most abundant isotopes (Gaussian's choice), translations and rotations projected out.
Thermochemistry is the rigid-rotor / harmonic-oscillator ideal gas at ``temperature`` (QM9: 298.15 K):
Cv = Cv_trans (3/2 R) + Cv_rot (3/2 R, R if linear) + Cv_vib (real frequencies only), in cal/(mol K) as QM9
gives it. Imaginary frequencies (|nu| above ``imag_threshold`` cm^-1) are counted: a geometry is a minimum
when it is stationary (max gradient component <= 2.5e-3 Eh/Bohr, Gaussian's ``opt=loose`` criterion) and has
none. The loose criterion is deliberate: QM9's own water geometry has a max gradient of 8.6e-4 Eh/Bohr in PySCF
(5D shells, another grid), above Gaussian's default 4.5e-4, yet it is a minimum at this level (its relaxation
moves atoms by 5e-4 Angstrom). Frequencies at a non-stationary geometry are not a vibrational analysis;
``dft.relax=true`` computes them at the relaxed geometry.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from molgen.validation.quantum.xtb import HARTREE_TO_EV, HARTREE_TO_KCAL, BOHR, QuantumFailure, kabsch_rmsd

#: Hartree per Kelvin -> cal/(mol K)
HARTREE_PER_K_TO_CAL_MOL_K = HARTREE_TO_KCAL * 1000.0
#: Stationary-point test for ``dft_is_minimum``: Gaussian's opt=loose max-gradient criterion, Hartree/Bohr.
STATIONARY_MAX_GRADIENT = 2.5e-3

# geomeTRIC configures the *root* logger from an .ini file on every run; this one keeps it quiet (its log goes
# nowhere) and :func:`relax` restores the host's root logger afterwards.
_QUIET_LOG_INI = """[loggers]
keys=root
[handlers]
keys=null
[formatters]
keys=plain
[logger_root]
level=WARNING
handlers=null
[handler_null]
class=NullHandler
level=WARNING
formatter=plain
args=()
[formatter_plain]
format=%(message)s
"""


def relax(mf, max_steps: int = 100, convergence: str = "GAU") -> dict:
    """Relax the geometry of the converged SCF object ``mf`` with geomeTRIC.

    Returns:
        ``converged`` (bool), ``steps`` (gradient evaluations), ``mf`` (SCF object converged at the final
        geometry), ``energy`` (Hartree), ``max_gradient`` (Hartree/Bohr at the final geometry), ``positions``
        (``[N, 3]`` Angstrom).
    Raises:
        QuantumFailure("scf_not_converged") when an SCF along the path does not converge.
    """
    from pyscf.geomopt import geometric_solver

    last: dict = {}

    def callback(env):
        last["gradient"] = np.asarray(env["gradients"])
        last["energy"] = float(env["energy"])
        last["steps"] = last.get("steps", 0) + 1
        last["dm"] = env["g_scanner"].base.make_rdm1()
        last["coords"] = np.asarray(env["coords"]).reshape(-1, 3)

    root = logging.getLogger()
    saved = (root.level, root.handlers[:], root.disabled)
    with tempfile.TemporaryDirectory(prefix="molgen_geomopt_") as tmp:
        ini = Path(tmp) / "log.ini"
        ini.write_text(_QUIET_LOG_INI)
        try:
            converged, mol = geometric_solver.kernel(mf, assert_convergence=True, callback=callback,
                                                     maxsteps=int(max_steps), convergence_set=convergence,
                                                     logIni=str(ini))
        except RuntimeError as e:
            if "not converged" in str(e):
                raise QuantumFailure("scf_not_converged", "SCF not converged during the relaxation") from None
            raise
        finally:
            root.setLevel(saved[0])
            root.handlers[:] = saved[1]
            root.disabled = saved[2]
    final = mf.copy()
    final.reset(mol)
    final.kernel(dm0=last.get("dm"))                       # the last step's density: a few cycles
    if not final.converged:
        raise QuantumFailure("scf_not_converged", "SCF not converged at the relaxed geometry")
    grad = last.get("gradient")
    if grad is None or not np.allclose(last["coords"], mol.atom_coords(), atol=1e-8):
        grad = final.nuc_grad_method().kernel()
    return {"converged": bool(converged), "steps": int(last.get("steps", 0)), "mf": final,
            "energy": float(final.e_tot), "max_gradient": float(np.abs(grad).max()),
            "positions": mol.atom_coords() * BOHR}


def relaxation_columns(numbers, given_positions, e_given: float, r: dict) -> dict:
    """Per-molecule columns of a relaxation: energy drop (kcal/mol), heavy-atom RMSD (all atoms when there are
    fewer than 3 heavy atoms, as for xTB), convergence, steps, relaxed positions (stored, not a column)."""
    numbers = np.asarray(numbers)
    heavy = numbers > 1
    sel = heavy if heavy.sum() >= 3 else np.ones_like(heavy)
    x0, x1 = np.asarray(given_positions, dtype=float), r["positions"]
    return {"dft_relax_converged": r["converged"], "dft_relax_steps": r["steps"],
            "dft_relaxed_energy_hartree": r["energy"],
            "dft_relax_energy_drop_kcal": (e_given - r["energy"]) * HARTREE_TO_KCAL,
            "dft_relax_rmsd_heavy_A": kabsch_rmsd(x0[sel], x1[sel]),
            "dft_relax_max_gradient": r["max_gradient"],
            "dft_relaxed_positions": np.round(x1, 6).tolist()}


def frequencies(mf, temperature: float = 298.15, imag_threshold: float = 20.0,
                max_gradient: float | None = None) -> dict:
    """Harmonic frequencies and thermochemistry of the converged SCF ``mf`` at its geometry.

    Args:
        mf: converged RKS/UKS object (density fitting allowed).
        temperature: Kelvin (QM9: 298.15).
        imag_threshold: |nu| (cm^-1) above which an imaginary frequency counts (smaller ones are grid noise).
        max_gradient: max |dE/dx| (Hartree/Bohr) at this geometry when known; computed otherwise.

    Returns:
        ``dft_cv_cal_molK``, ``dft_zpve_ev``, ``dft_n_imaginary``, ``dft_lowest_freq_cm`` (imaginary as
        negative), ``dft_freq_max_gradient`` (Hartree/Bohr), ``dft_is_minimum``, ``dft_frequencies_cm`` (list).
    """
    from pyscf.hessian import thermo

    mol = mf.mol
    if max_gradient is None:
        max_gradient = float(np.abs(mf.nuc_grad_method().kernel()).max())
    hess = mf.Hessian().kernel()
    mass = mol.atom_mass_list(isotope_avg=False)          # Gaussian: most abundant isotopes
    modes = thermo.harmonic_analysis(mol, hess, imaginary_freq=True, mass=mass)
    freq_au = np.atleast_1d(modes["freq_au"])
    wn = np.atleast_1d(modes["freq_wavenumber"])
    signed = wn.real - np.abs(wn.imag)                     # imaginary frequencies as negative numbers
    # pyscf's thermo uses only the real ones (freq.real > 0) for the vibrational part
    th = thermo.thermo(mf, freq_au, temperature=float(temperature), pressure=101325)
    n_imag = int((signed < -abs(imag_threshold)).sum())
    return {"dft_cv_cal_molK": float(th["Cv_tot"][0]) * HARTREE_PER_K_TO_CAL_MOL_K,
            "dft_zpve_ev": float(th["ZPE"][0]) * HARTREE_TO_EV,
            "dft_n_imaginary": n_imag,
            "dft_lowest_freq_cm": float(signed.min()) if len(signed) else float("nan"),
            "dft_freq_max_gradient": float(max_gradient),
            "dft_is_minimum": bool(n_imag == 0 and max_gradient <= STATIONARY_MAX_GRADIENT),
            "dft_frequencies_cm": np.round(np.sort(signed), 3).tolist()}
