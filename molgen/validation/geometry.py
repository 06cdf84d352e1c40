"""Geometry checks: PoseBusters intramolecular tests and distribution distances against a reference set.

* PoseBusters (Buttenschoen et al. 2024, https://arxiv.org/abs/2308.05777), configuration ``"mol"`` (see
  :func:`posebusters_config`; ``posebusters=fast`` leaves out the internal-energy ratio): bond
  lengths and angles within distance-geometry bounds, aromatic ring and double bond planarity, internal steric
  clashes, and the internal-energy ratio against an ETKDG ensemble. ``posebusters_pass`` = every test passes.
* Distribution distances: for each bond type (``C-O:2``: elements sorted, bond order), angle type (``C-C-O``,
  central atom in the middle) and torsion type (four elements along a bonded path), the 1-Wasserstein
  distance between the generated and the reference values (Angstrom, degrees). Torsions are compared as
  absolute dihedrals in [0, 180] degrees (a mirror image has the same geometry quality). Per-type distances
  are averaged with weights = generated counts. Atom-type and bond-type total variation distances compare
  the element and bond-type frequencies.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pandas as pd
from rdkit import Chem
from scipy.stats import wasserstein_distance

from molgen.data.molecule import ELEMENTS, Molecule
from molgen.settings import logger_level, quiet_rdkit

BOND_LABEL = {1: "1", 2: "2", 3: "3", 4: "ar"}


# ---------------------------------------------------------------------------------------------- PoseBusters
def posebusters_config(mode: str = "full") -> dict:
    """PoseBusters' own "mol" configuration, with two changes that leave every verdict as it is.

    * posebusters 0.6's ``mol.yml`` lists the internal-energy module twice, the first time without an output it
      reports, so each molecule's 50-conformer ETKDG ensemble is embedded and minimised twice; molgen keeps the
      reporting copy (measured: 3.5 s -> 1.7 s CPU per generated QM9 molecule, same table).
    * ``mode="fast"`` drops the energy-ratio test (PoseBusters' ``mol_fast``: ~25 ms per molecule), for
      validations of thousands of molecules; the report then says the test was not run.
    """
    from pathlib import Path

    import yaml

    with quiet_rdkit():  # importing PoseBusters switches RDKit's log levels: the caller's come back after
        import posebusters

    if mode not in ("full", "fast"):
        raise ValueError(f"posebusters mode must be 'full' or 'fast', got {mode!r}")
    config = yaml.safe_load((Path(posebusters.__file__).parent / "config" / "mol.yml").read_text())
    modules = []
    for m in config["modules"]:
        if m.get("function") == "energy_ratio" and (mode == "fast" or "chosen_binary_test_output" not in m):
            continue
        modules.append(m)
    config["modules"] = modules
    return config


def posebusters_table(rdkit_mols: list[Chem.Mol | None], chunk: int = 64, mode: str = "full") -> pd.DataFrame:
    """PoseBusters "mol" tests per molecule (``mode="fast"``: without the internal-energy ratio). Rows align with
    ``rdkit_mols`` (None: not tested, NaN row).

    Returns a DataFrame with one bool column per test plus ``posebusters_pass`` and ``posebusters_failed``
    (names of the failed tests, comma separated).
    """
    import logging

    # a failed energy-ratio test is recorded in the table; PoseBusters' per-molecule log lines would flood the
    # console: its logger is set to ERROR while it runs. PoseBusters also switches RDKit's log levels itself (when
    # imported and around its checks): RDKit is quiet here and its levels are the caller's again afterwards.
    with quiet_rdkit(), logger_level("posebusters", logging.ERROR):
        from posebusters import PoseBusters

        buster = PoseBusters(config=posebusters_config(mode))
        frames: list[pd.DataFrame | None] = [None] * len(rdkit_mols)
        idx = [i for i, m in enumerate(rdkit_mols) if m is not None]
        for start in range(0, len(idx), chunk):
            part = idx[start:start + chunk]
            try:
                df = buster.bust(mol_pred=[rdkit_mols[i] for i in part], full_report=False)
                rows = [df.iloc[[k]] for k in range(len(part))]
            except Exception:  # noqa: BLE001 -- one bad molecule must not fail the chunk: retry one by one
                rows = []
                for i in part:
                    try:
                        rows.append(buster.bust(mol_pred=[rdkit_mols[i]], full_report=False))
                    except Exception:  # noqa: BLE001
                        rows.append(None)
            for i, r in zip(part, rows):
                frames[i] = r
    cols = next((list(f.columns) for f in frames if f is not None), [])
    records = []
    for f in frames:
        if f is None:
            records.append({c: np.nan for c in cols} | {"posebusters_pass": np.nan, "posebusters_failed": None})
            continue
        # a test PoseBusters could not evaluate (NaN, e.g. no force field energy) stays NaN and is not a pass
        rec = {c: (np.nan if pd.isna(f.iloc[0][c]) else bool(f.iloc[0][c])) for c in cols}
        failed = [c if v is False else f"{c} (not evaluated)" for c, v in rec.items() if v is not True]
        records.append(rec | {"posebusters_pass": not failed, "posebusters_failed": ",".join(failed)})
    return pd.DataFrame(records)


# ---------------------------------------------------------------------------------------------- geometry values
def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _dihedral(p0, p1, p2, p3) -> np.ndarray:
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / (np.linalg.norm(b1, axis=-1, keepdims=True) + 1e-12)
    v = b0 - (b0 * b1n).sum(-1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdims=True) * b1n
    x = (v * w).sum(-1)
    y = (np.cross(b1n, v) * w).sum(-1)
    return np.degrees(np.arctan2(y, x))


def geometry_values(mol: Molecule) -> dict[str, dict[str, list[float]]]:
    """Bond lengths, angles and |torsions| of one molecule grouped by type.

    Returns ``{"bond": {"C-H:1": [...]}, "angle": {"C-C-O": [...]}, "torsion": {"C-C-C-O": [...]}}``.
    """
    out: dict[str, dict[str, list[float]]] = {"bond": defaultdict(list), "angle": defaultdict(list),
                                              "torsion": defaultdict(list)}
    if mol.num_bonds == 0:
        return out
    sym, pos = mol.symbols, mol.positions
    order = {}
    nbrs: dict[int, list[int]] = defaultdict(list)
    for (i, j), o in zip(mol.bonds.tolist(), mol.bond_orders.tolist()):
        a, b = sorted((sym[i], sym[j]))
        out["bond"][f"{a}-{b}:{BOND_LABEL.get(o, o)}"].append(float(np.linalg.norm(pos[i] - pos[j])))
        nbrs[i].append(j)
        nbrs[j].append(i)
        order[(i, j)] = order[(j, i)] = o
    for b, ns in nbrs.items():
        for x in range(len(ns)):
            for y in range(x + 1, len(ns)):
                a, c = ns[x], ns[y]
                ea, ec = sorted((sym[a], sym[c]))
                out["angle"][f"{ea}-{sym[b]}-{ec}"].append(float(_angle(pos[a], pos[b], pos[c])))
    for (j, k) in mol.bonds.tolist():
        for i in nbrs[j]:
            if i == k:
                continue
            for m in nbrs[k]:
                if m in (j, i):
                    continue
                key = (sym[i], sym[j], sym[k], sym[m])
                key = min(key, key[::-1])
                out["torsion"]["-".join(key)].append(float(abs(_dihedral(pos[i], pos[j], pos[k], pos[m]))))
    return out


def pooled_values(mols: list[Molecule]) -> dict[str, dict[str, np.ndarray]]:
    """:func:`geometry_values` pooled over molecules."""
    pool: dict[str, dict[str, list[float]]] = {"bond": defaultdict(list), "angle": defaultdict(list),
                                               "torsion": defaultdict(list)}
    for m in mols:
        for kind, groups in geometry_values(m).items():
            for key, vals in groups.items():
                pool[kind][key].extend(vals)
    return {k: {t: np.asarray(v) for t, v in g.items()} for k, g in pool.items()}


def distribution_distances(generated: list[Molecule], reference: list[Molecule], min_count: int = 5) -> dict:
    """Wasserstein-1 distances per bond/angle/torsion type plus atom/bond type total variation.

    Args:
        generated, reference: molecules with bonds (see :func:`molgen.validation.structure.with_bonds`).
        min_count: types with fewer values on either side are skipped.

    Returns:
        ``{"w1_bond_length_A": weighted mean, "w1_bond_angle_deg": ..., "w1_torsion_deg": ...,
        "tv_atom_types": ..., "tv_bond_types": ..., "per_type": {"bond": {type: {"w1":, "n_gen":, "n_ref":}}}}``
    """
    gen, ref = pooled_values(generated), pooled_values(reference)
    out: dict = {"per_type": {}}
    names = {"bond": "w1_bond_length_A", "angle": "w1_bond_angle_deg", "torsion": "w1_torsion_deg"}
    for kind, metric in names.items():
        per = {}
        for key, g in gen[kind].items():
            r = ref[kind].get(key)
            if r is None or len(g) < min_count or len(r) < min_count:
                continue
            per[key] = {"w1": float(wasserstein_distance(g, r)), "n_gen": int(len(g)), "n_ref": int(len(r)),
                        "mean_gen": float(g.mean()), "mean_ref": float(r.mean())}
        out["per_type"][kind] = per
        w = np.array([v["n_gen"] for v in per.values()], dtype=float)
        out[metric] = float((np.array([v["w1"] for v in per.values()]) * w).sum() / w.sum()) if len(w) else None
    out["tv_atom_types"] = _tv(Counter(ELEMENTS[z] for m in generated for z in m.atomic_numbers),
                               Counter(ELEMENTS[z] for m in reference for z in m.atomic_numbers))
    out["tv_bond_types"] = _tv(Counter({k: len(v) for k, v in gen["bond"].items()}),
                               Counter({k: len(v) for k, v in ref["bond"].items()}))
    return out


def _tv(p: Counter, q: Counter) -> float | None:
    """Total variation distance 1/2 sum |p - q| of two count dicts (normalized)."""
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return None
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in set(p) | set(q))
