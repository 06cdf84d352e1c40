"""DFT single points with PySCF at QM9's level of theory, B3LYP/6-31G(2df,p) (Ramakrishnan et al. 2014,
https://doi.org/10.1038/sdata.2014.22, computed with Gaussian 09).

B3LYP variant: Gaussian's B3LYP uses the VWN(III)/RPA correlation in its LDA part. In PySCF, ``b3lypg`` is
that functional in every version (libxc 402); ``b3lyp`` meant the VWN5 variant before PySCF 2.3 and means
libxc 402 since; ``b3lyp5`` is the VWN5 variant. molgen uses ``b3lypg`` by default.
Basis functions: PySCF cannot mix Cartesian d (Gaussian's 6D default for 6-31G-type sets) with spherical f
(7F); ``cart=False`` (5D 7F) is the default, ``cart=True`` uses 6D 10F.
Open shells: UKS at multiplicity 2 (odd electron count) or as given; closed shells: RKS.
"""
from __future__ import annotations

import numpy as np

from molgen.validation.quantum.xtb import HARTREE_TO_EV, QuantumFailure

DEFAULTS = {"xc": "b3lypg", "basis": "6-31G(2df,p)", "grid_level": 3, "conv_tol": 1e-9, "max_cycle": 100,
            "density_fit": False, "cart": False, "alpha": False, "field": 1e-3}


def method_name(options: dict) -> str:
    o = {**DEFAULTS, **options}
    return (f"dft:{o['xc']}/{o['basis']}/grid{o['grid_level']}{'/cart' if o['cart'] else ''}"
            f"{'/df' if o['density_fit'] else ''}{'/alpha' if o['alpha'] else ''}/tol{float(o['conv_tol']):g}"
            f"/cycles{int(o['max_cycle'])}")


def _build(numbers, positions, charge, spin, o):
    from pyscf import dft, gto

    mol = gto.M(atom=[(int(z), tuple(map(float, p))) for z, p in zip(numbers, positions)], unit="Angstrom",
                basis=o["basis"], charge=int(charge), spin=int(spin), cart=bool(o["cart"]), verbose=0)
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
