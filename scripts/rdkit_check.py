"""An RDKit-only count of generated molecules, independent of molgen's validation code (anyone can rerun it).

    python scripts/rdkit_check.py runs/propmolflow-qm9/sample/samples.sdf [more.sdf ...] [--total 500]

``--total N``: the number of molecules generated, when the SDF lacks some (molgen leaves out molecules RDKit cannot
write, e.g. an H with charge +3; they count as failures here).

Per file, over every record (records RDKit cannot read at all count as failures):
* valid: the whole molecule sanitizes (``Chem.SanitizeMol``);
* valence-stable, closed-shell, single-fragment: valid, no atom needs an implicit hydrogen (generated files
  list every H, so an atom RDKit would have to complete is under-valent), no radical electrons
  (``Descriptors.NumRadicalElectrons``), one connected fragment;
* the same without the single-fragment condition, and the fragment count.
"""
from __future__ import annotations

import sys

from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors


def check(path: str) -> dict:
    RDLogger.DisableLog("rdApp.*")
    n = valid = stable = whole = 0
    fragmented = 0
    for mol in Chem.SDMolSupplier(path, sanitize=False, removeHs=False):
        n += 1
        if mol is None:
            continue
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # noqa: BLE001 -- any sanitization failure: invalid
            continue
        valid += 1
        complete = all(a.GetNumImplicitHs() == 0 for a in mol.GetAtoms())
        closed = Descriptors.NumRadicalElectrons(mol) == 0
        frags = len(Chem.GetMolFrags(mol))
        fragmented += frags > 1
        if complete and closed:
            stable += 1
            whole += frags == 1
    return {"records": n, "valid": valid, "stable": stable, "stable_single_fragment": whole,
            "valid_fragmented": fragmented}


def main() -> None:
    args = sys.argv[1:]
    total = None
    if "--total" in args:
        k = args.index("--total")
        total = int(args[k + 1])
        del args[k:k + 2]
    if not args:
        raise SystemExit(__doc__)
    print("| file | records | valid (whole molecule) | valence-stable, closed-shell | + single fragment | "
          "valid but fragmented |")
    print("|---|---|---|---|---|---|")
    for path in args:
        r = check(path)
        n = max(total or r["records"], r["records"], 1)
        print(f"| {path} | {r['records']}{f' of {n}' if n != r['records'] else ''} | {100 * r['valid'] / n:.1f} % | {100 * r['stable'] / n:.1f} % | "
              f"{100 * r['stable_single_fragment'] / n:.1f} % | {100 * r['valid_fragmented'] / n:.1f} % |")


if __name__ == "__main__":
    main()
