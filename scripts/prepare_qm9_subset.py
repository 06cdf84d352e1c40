"""Regenerate data/qm9_subset/ (the embedded QM9 subset) from the PyPI package qm9pack, bit for bit.

    OMP_NUM_THREADS=1 python scripts/prepare_qm9_subset.py [--out data/qm9_subset] [--check]

Writes
* ``qm9_subset.csv.gz``: qm9pack's CSV rows (all columns, values copied as text) of the selected molecules in
  ascending GDB-9 index order, plus ``edm_split`` (train/valid/test) and ``edm_half`` (a/b for train, else
  empty); gzip with mtime 0, so the bytes depend only on the data;
* ``uncharacterized_indices.txt``: the 3,054 GDB-9 indices absent from qm9pack (figshare's uncharacterized list).

Selection (seed 20260): 2,000 molecules drawn uniformly without replacement from EDM's train split, 500 from
valid, 500 from test, plus the hand-checked molecules of :data:`HAND_CHECKED` (used by the tests), each in
its own EDM split. ``--check`` regenerates into a temporary folder and compares the bytes with ``--out``.
"""
from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.data.qm9 import edm_assignment
from molgen.data.qm9_sources import EMBEDDED_CSV, N_GDB9, N_QM9, UNCHARACTERIZED_TXT, qm9pack_csv_paths

SEED = 20260
N_DRAW = {"train": 2000, "valid": 500, "test": 500}
#: GDB-9 index -> why the tests need it.
HAND_CHECKED = {
    1: "methane (property units)", 2: "ammonia", 3: "water (property units)", 5: "hydrogen cyanide (nitrile)",
    10: "acetonitrile (nitrile)", 271: "beta-alanine zwitterion [NH3+]CCC([O-])=O (formal charges +1/-1)",
    349: "methyl propiolate (ester C(=O)O; QM9 has no carboxylic acid)", 4322: "zwitterion SMILES, neutral geometry",
    9986: "carbanion/iminium SMILES (tautomer disagreement)", 131882: "nitro group N(=O)=O (charges +1/-1)",
}


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in qm9pack_csv_paths()],
                   ignore_index=True)
    index = df["Index"].astype(int).to_numpy()
    if len(df) != N_QM9 or not (np.diff(index) > 0).all():
        sys.exit(f"qm9pack has {len(df)} rows (expected {N_QM9}, ascending Index): not the expected version")
    uncharacterized = np.setdiff1d(np.arange(1, N_GDB9 + 1), index)
    header = ("# GDB-9 indices of the 3,054 QM9 molecules absent from qm9pack: the 'uncharacterized' molecules of\n"
              "# figshare's uncharacterized.txt (Ramakrishnan et al. 2014), excluded by EDM. One index per line.\n")
    (out / UNCHARACTERIZED_TXT).write_text(header + "\n".join(map(str, uncharacterized)) + "\n")

    split_of, half_of = edm_assignment(index)
    rng = np.random.RandomState(SEED)
    chosen = set(HAND_CHECKED)
    for split, n in N_DRAW.items():
        pool = index[split_of[index] == split]
        chosen.update(rng.choice(pool, size=n, replace=False).tolist())
    rows = df[df["Index"].astype(int).isin(chosen)].copy()
    rows["edm_split"] = split_of[rows["Index"].astype(int)]
    rows["edm_half"] = half_of[rows["Index"].astype(int)]
    rows.to_csv(out / EMBEDDED_CSV, index=False, lineterminator="\n",
                compression={"method": "gzip", "mtime": 0, "compresslevel": 9})
    print(f"wrote {len(rows)} molecules to {out / EMBEDDED_CSV} ({(out / EMBEDDED_CSV).stat().st_size / 1e6:.2f} MB); "
          f"splits: {rows['edm_split'].value_counts().to_dict()}, halves: {rows['edm_half'].value_counts().to_dict()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "qm9_subset")
    ap.add_argument("--check", action="store_true", help="regenerate in a temporary folder and compare bytes")
    args = ap.parse_args()
    if not args.check:
        build(args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        same = all(filecmp.cmp(Path(tmp) / f, args.out / f, shallow=False) for f in (EMBEDDED_CSV, UNCHARACTERIZED_TXT))
    print("identical" if same else "DIFFERENT")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
