"""Bond perception over a whole QM9 source: counts, time, and the naive-SMILES comparison (for docs/qm9_data.md).

    OMP_NUM_THREADS=1 python scripts/qm9_perception_stats.py [data.source=qm9pack] [--json out.json]

Runs :func:`molgen.data.qm9.load_qm9` once (one process, so CPU time per molecule is clean) and prints the
summary, the split table and up to 40 examples of each non-ok category.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from molgen.data.qm9 import load_qm9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("overrides", nargs="*", help="data keys as key=value (source=qm9pack, max_molecules=1000)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = {"source": "qm9pack", "perception_processes": 1}
    for o in args.overrides:
        k, v = o.split("=", 1)
        cfg[k.removeprefix("data.")] = None if v == "null" else (int(v) if v.isdigit() else v)
    t = time.perf_counter()
    data = load_qm9(cfg, progress=True)
    total = time.perf_counter() - t
    s = dict(data.summary, total_seconds=round(total, 1))
    examples: dict[str, list] = {}
    for index, p in data.perceptions.items():
        if p.status != "ok" and len(examples.setdefault(p.status, [])) < 40:
            examples[p.status].append((index, p.reference_smiles, p.smiles, p.reason))
    s["examples"] = examples
    print(json.dumps({k: v for k, v in s.items() if k != "examples"}, indent=1))
    print(data.summary_markdown())
    for status, rows in examples.items():
        print(f"--- {status}")
        for r in rows:
            print(*r, sep="\t")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)


if __name__ == "__main__":
    main()
