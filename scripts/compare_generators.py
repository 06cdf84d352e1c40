"""Side-by-side table of molecule generators judged by the same validation suite (SiLD vs PropMolFlow, ...).

Usage: python scripts/compare_generators.py RUN_DIR [RUN_DIR ...] [--markdown OUT.md]

Each RUN_DIR is a finished `molgen run` folder of a molecule pipeline (propmolflow, sild) with its
``metrics.json``; the table (molgen.validation.compare) refuses runs that are not comparable (reference set,
property, number of samples). A pipeline's validate stage writes the same table into its report with
``validate.compare=[RUN_DIR, ...]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from molgen.errors import MolgenError
from molgen.validation.compare import run_row, side_by_side


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    try:
        text = side_by_side([run_row(r) for r in args.runs])
    except MolgenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
