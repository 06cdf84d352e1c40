"""Build data/cath_subset/ (the embedded CPDiffusion-SS data) from ../shared/data/{cath,proteins_extra}.

Selection rule (deterministic): every chain of cath42_test_subsets.jsonl (157, CATH labelled), ts50.json (50),
casp15.json (45) and proteins_extra/gtalign_eval_chains.jsonl.gz (199) with 40 <= length <= 500, exact
duplicate sequences dropped (first kept, in that file order); DSSP by mdtraj stored as `dssp8`; homology
clusters (shared CATH topology or >= 30 % local identity) split 10/10/80 test/val/train with seed 0, clusters
with CATH-labelled chains considered first for test. Coordinates are rounded to 0.01 Å.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_cath_subset.py [--shared ../shared/data] [--out data/cath_subset]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from molgen.data.protein_split import homology_clusters, split_clusters
from molgen.data.proteins import assign_ss, read_proteins

SOURCES = ("cath/cath42_test_subsets.jsonl", "cath/ts50.json", "cath/casp15.json",
           "proteins_extra/gtalign_eval_chains.jsonl.gz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "cath_subset"))
    args = ap.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    if not (shared / SOURCES[0]).exists():
        shared = Path("/work/shared/data")
    out.mkdir(parents=True, exist_ok=True)
    proteins, seen = [], set()
    for rel in SOURCES:
        ps, skipped = read_proteins(shared / rel, assign=False)
        kept = 0
        for p in ps:
            if not 40 <= len(p) <= 500 or p.sequence in seen:
                continue
            seen.add(p.sequence)
            p.coords = np.round(p.coords, 2)
            p.source = rel
            proteins.append(p)
            kept += 1
        print(f"{rel}: {len(ps)} read, {len(skipped)} skipped, {kept} kept")
    for p in tqdm(proteins, desc="DSSP"):
        assign_ss(p)
    clusters = homology_clusters(proteins, identity=0.3)
    split = split_clusters(clusters, (0.1, 0.1), seed=0, prefer_test=np.array([bool(p.cath) for p in proteins]))
    with gzip.GzipFile(out / "chains.jsonl.gz", "wb", compresslevel=9, mtime=0) as f:
        for p in proteins:
            d = p.to_dict()
            d["coords"] = {a: [None if xyz is None else [round(v, 2) for v in xyz] for xyz in d["coords"][a]]
                           for a in d["coords"]}
            f.write((json.dumps(d, separators=(",", ":")) + "\n").encode())
    with open(out / "split.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["name", "split", "cluster", "length", "source", "cath"])
        for p, s, c in zip(proteins, split, clusters):
            w.writerow([p.name, s, int(c), len(p), p.source, ";".join(p.cath)])
    n = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    print(f"{len(proteins)} chains, {clusters.max() + 1} clusters, split {n}")


if __name__ == "__main__":
    main()
