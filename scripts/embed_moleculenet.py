"""Copy the embedded MoleculeNet sets (BBBP, ClinTox) into data/moleculenet and check their sha256.

Usage: python scripts/embed_moleculenet.py [SOURCE_FOLDER]   (default: ../shared/data/moleculenet)
"""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

FILES = {"BBBP.csv.gz": "d211b6aff488acfb47138edfcf23667af599858b3fe036045541f7137930e548",
         "clintox.csv.gz": "748f3c92a8744c41351cfee991b2dd96249266dd28311c53b896de5f14626f42"}


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else repo.parent / "shared" / "data" / "moleculenet"
    dest = repo / "data" / "moleculenet"
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in FILES.items():
        got = hashlib.sha256((source / name).read_bytes()).hexdigest()
        if got != digest:
            print(f"error: {source / name}: sha256 {got} != {digest}", file=sys.stderr)
            return 1
        shutil.copyfile(source / name, dest / name)
        print(f"{name}: ok -> {dest / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
