"""Gap conditioning judged without a learned regressor: generated molecules that *are* QM9 molecules.

    python scripts/propmolflow_gap_lookup.py --run runs/<run> SAMPLES.sdf [SAMPLES.sdf ...] [--property gap]

A generated molecule whose canonical SMILES (no stereo) is a QM9 molecule has a known DFT value: QM9's own
(averaged over the QM9 entries with that SMILES). For those molecules this prints the MAE between that value and
the molecule's target (SD tag ``gap``), its mean signed error, and, on the same molecules, the MAE of the run's GVP
regressor (``<run>/regressor/regressor.ckpt``) to the target and to the DFT value (how well the regressor reads
generated geometries), plus the regressor's MAE on the molecules QM9 does not contain. The QM9 molecules are the
four splits of the run's featurize stage (``<run>/featurize/{generator,regressor,valid,test}.pt``).

Caveat: the matched molecules are the generator's most QM9-like ones (typically 30-40 % of the samples), not a
random subset; the regressor's MAE over all molecules stays the protocol's figure.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def qm9_values(featurize: Path, prop: str) -> dict[str, float]:
    """Canonical SMILES -> mean DFT value over the QM9 molecules with that SMILES."""
    from molgen.data.graph import GraphDataset
    from molgen.validation.structure import canonical_smiles

    table: dict[str, list[float]] = defaultdict(list)
    for split in ("generator", "regressor", "valid", "test"):
        path = featurize / f"{split}.pt"
        if not path.exists():
            continue
        ds = GraphDataset.load(path)
        values = ds.properties()[:, ds.property_names.index(prop)].numpy()
        for i in range(len(ds)):
            smi = ds.molecule(i).smiles()
            key = canonical_smiles(smi) if smi else None
            if key:
                table[key].append(float(values[i]))
    return {k: float(np.mean(v)) for k, v in table.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="+", help="SDF files of generated molecules with the target as an SD tag")
    ap.add_argument("--run", required=True, help="run folder with featurize/ and regressor/ stages")
    ap.add_argument("--property", default="gap")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from molgen.checkpoint import load_model
    from molgen.conditioning import report_unit
    from molgen.data.io import read_molecules
    from molgen.settings import quiet_rdkit
    from molgen.validation.structure import canonical_smiles

    run = Path(a.run)
    with quiet_rdkit():
        known = qm9_values(run / "featurize", a.property)
    reg_path = run / "regressor" / "regressor.ckpt"
    regressor = load_model(reg_path, kind="regressor") if reg_path.exists() else None
    scale, unit = report_unit(a.property)
    print(f"{len(known)} QM9 SMILES; MAE in {unit}")
    print("| samples | molecules | QM9 molecules | target vs QM9 DFT: MAE | mean signed | regressor vs target "
          "(same molecules) | regressor vs QM9 DFT | regressor vs target, the others |")
    print("|---|---|---|---|---|---|---|---|")
    for path in a.samples:
        mols, _ = read_molecules(path)
        target = np.array([m.properties.get(a.property, np.nan) for m in mols], dtype=float)
        with quiet_rdkit():
            keys = [canonical_smiles(s) if (s := m.smiles()) else None for m in mols]
        dft = np.array([known.get(k, np.nan) if k else np.nan for k in keys])
        pred = regressor.predict(mols) if regressor is not None else np.full(len(mols), np.nan)
        hit = np.isfinite(dft) & np.isfinite(target)
        other = ~np.isfinite(dft) & np.isfinite(pred) & np.isfinite(target)

        def mae(x: np.ndarray, y: np.ndarray, sel: np.ndarray) -> str:
            ok = sel & np.isfinite(x) & np.isfinite(y)
            return f"{np.abs(x - y)[ok].mean() * scale:.0f}" if ok.any() else "–"

        bias = f"{(dft - target)[hit].mean() * scale:+.0f}" if hit.any() else "–"
        print(f"| {path} | {len(mols)} | {int(hit.sum())} | {mae(dft, target, hit)} | {bias} | "
              f"{mae(pred, target, hit)} | {mae(pred, dft, hit)} | {mae(pred, target, other)} |")


if __name__ == "__main__":
    main()
