"""DFT single points with PySCF at QM9's level of theory, B3LYP/6-31G(2df,p) (Ramakrishnan et al. 2014,
https://doi.org/10.1038/sdata.2014.22, computed with Gaussian 09).

B3LYP variant: Gaussian's B3LYP uses the VWN(III)/RPA correlation in its LDA part. In PySCF, ``b3lypg`` is
that functional in every version (libxc 402); ``b3lyp`` meant the VWN5 variant before PySCF 2.3 and means
libxc 402 since; ``b3lyp5`` is the VWN5 variant. molgen uses ``b3lypg`` by default.
Basis functions: PySCF cannot mix Cartesian d (Gaussian's 6D default for 6-31G-type sets) with spherical f
(7F); ``cart=False`` (5D 7F) is the default, ``cart=True`` uses 6D 10F.
Multiple polarization shells: Gaussian builds the (2d)/(3d) shells of 6-31G-type sets by scaling the single d
exponent of 6-31G* (0.8 for C, N, O, F) by 2 and 1/2 (4, 1, 1/4 for 3d); the Basis Set Exchange files that PySCF
ships for ``6-31G(2df,p)`` scale 6-311G*'s exponents instead (O: 2.584/0.646 against Gaussian's 1.6/0.4). That
difference, not the functional, is why a plain PySCF run gives water 1.98 D against QM9's 1.85 D. molgen
rebuilds Gaussian's shells by default (``pople_d="gaussian"``; ``"bse"`` keeps PySCF's file as it is).
Open shells: UKS at multiplicity 2 (odd electron count) or as given; closed shells: RKS.
Optional, after the single point (:mod:`molgen.validation.quantum.dft_geometry`): ``relax`` (geomeTRIC
relaxation: energy drop, RMSD, properties at the minimum) and ``frequencies`` (analytic Hessian: harmonic
frequencies, Cv at 298.15 K, ZPVE, imaginary frequencies), at the relaxed geometry when ``relax`` is on.
"""
from __future__ import annotations

import numpy as np

from molgen.validation.quantum.xtb import HARTREE_TO_EV, QuantumFailure

DEFAULTS = {"xc": "b3lypg", "basis": "6-31G(2df,p)", "grid_level": 3, "conv_tol": 1e-9, "max_cycle": 100,
            "density_fit": False, "cart": False, "alpha": False, "field": 1e-3, "pople_d": "gaussian",
            "relax": False, "relax_max_steps": 100, "relax_convergence": "GAU",
            "frequencies": False, "temperature": 298.15, "imag_threshold": 20.0}


def method_name(options: dict) -> str:
    o = {**DEFAULTS, **options}
    basis = o["basis"] + ("/g09d" if _rescaled(o) else "")
    return (f"dft:{o['xc']}/{basis}/grid{o['grid_level']}{'/cart' if o['cart'] else ''}"
            f"{'/df' if o['density_fit'] else ''}{'/alpha' if o['alpha'] else ''}/tol{float(o['conv_tol']):g}"
            f"/cycles{int(o['max_cycle'])}{_geometry_tag(o)}")


def _geometry_tag(o: dict) -> str:
    """The relaxation/frequency part of the method string (empty when both are off, so older stores match)."""
    tag = ""
    if _flag(o["relax"]):
        tag += f"/relax-{str(o['relax_convergence']).upper()}-steps{int(o['relax_max_steps'])}"
    if _flag(o["frequencies"]):
        tag += f"/freq-T{float(o['temperature']):g}-imag{float(o['imag_threshold']):g}"
    return tag


def _flag(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")


def _n_d_shells(name: str) -> int:
    """How many d shells a Pople name asks for on heavy atoms: 6-31G(2df,p) -> 2, 6-31G* -> 1, cc-pVDZ -> 0."""
    import re

    m = re.fullmatch(r"6-31\+{0,2}G\((\d?)d[^,)]*(,[^)]*)?\)", name.replace(" ", ""), flags=re.I)
    return int(m.group(1) or 1) if m else 0


def _rescaled(o: dict) -> bool:
    if o["pople_d"] not in ("gaussian", "bse"):
        raise ValueError(f"dft.pople_d must be 'gaussian' or 'bse', got {o['pople_d']!r}")
    return o["pople_d"] == "gaussian" and isinstance(o["basis"], str) and _n_d_shells(o["basis"]) > 1


def pople_basis(name: str, elements, convention: str = "gaussian"):
    """The basis for ``elements`` as PySCF's ``gto.M(basis=...)`` takes it. For a 6-31G-type set with several d
    shells and ``convention="gaussian"``, the d exponents are Gaussian's: the 6-31G* exponent of the element times
    (2, 1/2) for 2d or (4, 1, 1/4) for 3d; everything else is PySCF's file unchanged."""
    from pyscf import gto

    n_d = _n_d_shells(name)
    if convention != "gaussian" or n_d < 2:
        return name
    scale = {2: (2.0, 0.5), 3: (4.0, 1.0, 0.25)}[n_d]
    out = {}
    for el in sorted(set(elements)):
        shells = gto.basis.load(name, el)
        try:
            single = [s for s in gto.basis.load("6-31G*", el) if s[0] == 2]
        except Exception:                                     # element without a 6-31G* d shell: keep the file
            single = []
        d_idx = [i for i, s in enumerate(shells) if s[0] == 2]
        if len(single) != 1 or len(single[0]) != 2 or len(d_idx) != n_d:
            out[el] = shells
            continue
        alpha = single[0][1][0]
        shells = [list(s) for s in shells]
        for i, f in zip(d_idx, scale):
            shells[i] = [2, [alpha * f, 1.0]]
        out[el] = shells
    return out


def _build(numbers, positions, charge, spin, o):
    from pyscf import dft, gto
    from pyscf.data.elements import ELEMENTS

    basis = pople_basis(o["basis"], [ELEMENTS[int(z)] for z in numbers], o["pople_d"]) if _rescaled(o) \
        else o["basis"]
    mol = gto.M(atom=[(int(z), tuple(map(float, p))) for z, p in zip(numbers, positions)], unit="Angstrom",
                basis=basis, charge=int(charge), spin=int(spin), cart=bool(o["cart"]), verbose=0)
    mf = (dft.RKS(mol) if spin == 0 else dft.UKS(mol))
    mf.xc = o["xc"]
    mf.grids.level = int(o["grid_level"])
    mf.conv_tol = float(o["conv_tol"])
    mf.max_cycle = int(o["max_cycle"])
    if o["density_fit"]:
        mf = mf.density_fit()
    return mol, mf


def _frontier(mf, spin: int) -> tuple[float, float]:
    e, occ = mf.mo_energy, mf.mo_occ
    if spin == 0:
        return float(e[occ > 0].max()), float(e[occ == 0].min())
    homo = max(float(e[s][occ[s] > 0].max()) for s in (0, 1) if (occ[s] > 0).any())
    lumo = min(float(e[s][occ[s] == 0].min()) for s in (0, 1))
    return homo, lumo


def dft_job(numbers: np.ndarray, positions: np.ndarray, charge: int, options: dict) -> dict:
    """One DFT single point; returns energies in eV, dipole in Debye (and alpha in Bohr^3 if asked)."""
    o = {**DEFAULTS, **options}
    n_el = int(np.asarray(numbers).sum()) - int(charge)
    spin = int(o.get("spin", n_el % 2))
    mol, mf = _build(numbers, positions, charge, spin, o)
    energy = mf.kernel()
    if not mf.converged:
        raise QuantumFailure("scf_not_converged", f"SCF not converged in {o['max_cycle']} cycles")
    homo, lumo = _frontier(mf, spin)
    dip = np.asarray(mf.dip_moment(unit="Debye", verbose=0))
    out = {"dft_energy_hartree": float(energy), "dft_homo_ev": homo * HARTREE_TO_EV,
           "dft_lumo_ev": lumo * HARTREE_TO_EV, "dft_gap_ev": (lumo - homo) * HARTREE_TO_EV,
           "dft_dipole_debye": float(np.linalg.norm(dip)), "dft_spin": spin, "dft_uks": spin != 0,
           "dft_n_basis": int(mol.nao)}
    if o["alpha"]:
        out["dft_alpha_bohr3"] = finite_field_alpha(mol, mf, float(o["field"]))
    if _flag(o["relax"]) or _flag(o["frequencies"]):
        try:
            out.update(_geometry_jobs(numbers, positions, mf, spin, o))
        except QuantumFailure as e:                        # keep the single point with the failure
            e.partial = {**out, **e.partial}
            raise
    return out


def _geometry_jobs(numbers, positions, mf, spin: int, o: dict) -> dict:
    """Relaxation (``relax``) and/or frequencies (``frequencies``): at the relaxed geometry when ``relax`` is on,
    at the given geometry otherwise (``dft_freq_geometry`` says which). A relaxation that does not converge in
    ``relax_max_steps`` raises ``relax_not_converged`` carrying the results computed so far (no frequencies:
    they would be at a non-stationary geometry)."""
    from molgen.validation.quantum.dft_geometry import frequencies, relax, relaxation_columns

    out: dict = {}
    if len(numbers) < 2:                                   # an atom has no geometry to relax or vibrate
        return out
    target, max_grad = mf, None
    if _flag(o["relax"]):
        r = relax(mf, int(o["relax_max_steps"]), str(o["relax_convergence"]))
        out.update(relaxation_columns(numbers, positions, float(mf.e_tot), r))
        target, max_grad = r["mf"], r["max_gradient"]
        homo, lumo = _frontier(target, spin)
        out.update({"dft_relaxed_homo_ev": homo * HARTREE_TO_EV, "dft_relaxed_lumo_ev": lumo * HARTREE_TO_EV,
                    "dft_relaxed_gap_ev": (lumo - homo) * HARTREE_TO_EV,
                    "dft_relaxed_dipole_debye": float(np.linalg.norm(target.dip_moment(unit="Debye", verbose=0)))})
        if not r["converged"]:
            raise QuantumFailure("relax_not_converged", f"geometry relaxation not converged in "
                                 f"{int(o['relax_max_steps'])} steps ({o['relax_convergence']} criteria)", out)
    if _flag(o["frequencies"]):
        out["dft_freq_geometry"] = "relaxed" if _flag(o["relax"]) else "given"
        out.update(frequencies(target, float(o["temperature"]), float(o["imag_threshold"]), max_grad))
    return out


def finite_field_alpha(mol, mf, field: float) -> float:
    """Isotropic polarizability (Bohr^3) by central finite differences of the dipole in a uniform field:
    alpha_ii = d mu_i / d F_i, with H(F) = H0 + F . r (electronic dipole integrals, origin at the centre of
    charge). Six extra SCFs started from the field-free density."""
    charges = mol.atom_charges()
    origin = (charges[:, None] * mol.atom_coords()).sum(0) / charges.sum()
    with mol.with_common_orig(origin):
        ints = mol.intor_symmetric("int1e_r", comp=3)
    h0 = mf.get_hcore()
    dm0 = mf.make_rdm1()
    diag = []
    for i in range(3):
        mus = []
        for sign in (1.0, -1.0):
            mf_f = mf.copy() if hasattr(mf, "copy") else mf
            mf_f.get_hcore = (lambda *a, _h=h0 + sign * field * ints[i]: _h)
            mf_f.kernel(dm0=dm0)
            if not mf_f.converged:
                raise QuantumFailure("scf_not_converged", "finite-field SCF not converged")
            mus.append(np.asarray(mf_f.dip_moment(unit="AU", verbose=0))[i])
        # H(F) = H0 - mu.F with mu = -r for electrons, so +F.r is a field +F and mu(F) = mu0 + alpha F
        diag.append((mus[0] - mus[1]) / (2 * field))
    return float(np.mean(diag))
