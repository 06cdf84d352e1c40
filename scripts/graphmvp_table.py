"""Merge the ``finetune/results.json`` of several GraphMVP runs into one benchmark table (Markdown).

Usage: python scripts/graphmvp_table.py RUN_DIR [RUN_DIR ...]
Use it when the sets were fine-tuned in separate (parallel) runs with the same encoder and settings; the table
is the validate stage's (:func:`molgen.pipelines.graphmvp.benchmark_table`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from molgen.pipelines.graphmvp import benchmark_table


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    merged: dict = {"sets": {}}
    for run in argv:
        res = json.loads((Path(run) / "finetune" / "results.json").read_text())
        rows = {k for e in res["sets"].values() for k in e["runs"]}
        for key in ("variant", "pretrain_data"):
            if res.get("variant") not in rows:
                continue   # no pretrained encoder in this run (no pretraining, the ECFP4 baseline): fits any table
            if merged.get(key) is None:
                merged[key] = res.get(key)
            elif merged[key] != res.get(key):
                print(f"error: {run}: {key}={res.get(key)} differs from {merged[key]}", file=sys.stderr)
                return 2
        for name, entry in res["sets"].items():  # the same set from several runs (e.g. one seed each): pool runs
            into = merged["sets"].setdefault(name, {**entry, "runs": {}})
            for key, runs in entry["runs"].items():
                into["runs"].setdefault(key, []).extend(runs)
    table, averages = benchmark_table(merged)
    print(table)
    for s, e in merged["sets"].items():
        print(f"- {s}: {e['molecules']} molecules ({e['unparsable_skipped']} unparsable skipped), {e['tasks']} "
              f"task(s), scaffold split {'/'.join(map(str, e['split']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
