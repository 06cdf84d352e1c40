"""Download the public CATH training sets used by CPDiffusion-SS and its relatives (for users with internet).

* ``cath43_s40``: the CATH 4.3 S40 non-redundant domain structures (``cath-dataset-nonredundant-S40-v4_3_0.pdb.tgz``,
  ~31k domain PDB files; CPDiffusion-SS trains on these) plus the domain list and the domain boundaries /
  classification file so that each domain gets its CATH label.
* ``cath42``: Ingraham et al.'s CATH 4.2 ``chain_set.jsonl`` (~500 MB) and ``chain_set_splits.json``.

Files go to ``dest`` and are reused when present (no re-download); a partial download is written to
``<file>.part`` and renamed only when complete. molgen's tests never call this module.
"""
from __future__ import annotations

import shutil
import tarfile
import urllib.request
from pathlib import Path

from molgen.errors import DataError

CATH_RELEASE = "http://download.cathdb.info/cath/releases/all-releases/v4_3_0/non-redundant-data-sets/"
CATH_CLASS = "http://download.cathdb.info/cath/releases/all-releases/v4_3_0/cath-classification-data/"
SOURCES = {
    "cath43_s40": [
        (CATH_RELEASE + "cath-dataset-nonredundant-S40-v4_3_0.pdb.tgz", "cath-dataset-nonredundant-S40-v4_3_0.pdb.tgz"),
        (CATH_RELEASE + "cath-dataset-nonredundant-S40-v4_3_0.list", "cath-dataset-nonredundant-S40-v4_3_0.list"),
        (CATH_CLASS + "cath-domain-list-v4_3_0.txt", "cath-domain-list-v4_3_0.txt"),
    ],
    "cath42": [
        ("http://people.csail.mit.edu/ingraham/graph-protein-design/data/cath/chain_set.jsonl", "chain_set.jsonl"),
        ("http://people.csail.mit.edu/ingraham/graph-protein-design/data/cath/chain_set_splits.json",
         "chain_set_splits.json"),
    ],
}


def _fetch(url: str, dest: Path) -> Path:
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        raise DataError(f"download of {url} failed ({e}); retry, or download it by hand to {dest}") from None
    part.replace(dest)
    return dest


def download_cath(which: str, dest: str | Path) -> Path:
    """Download (once) and unpack a CATH set into ``dest``; returns the path to read with ``read_proteins``.

    Args:
        which: ``cath43_s40`` (returns the folder of domain PDB files) or ``cath42`` (returns chain_set.jsonl).
        dest: download folder.
    """
    if which not in SOURCES:
        raise DataError(f"unknown CATH set '{which}' (choose from {', '.join(SOURCES)})")
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    files = [_fetch(url, dest / name) for url, name in SOURCES[which]]
    if which == "cath42":
        return files[0]
    out = dest / "dompdb"
    if not out.is_dir():
        tmp = dest / "dompdb.part"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(files[0]) as tar:
            tar.extractall(tmp, filter="data")
        inner = next((p for p in tmp.rglob("*") if p.is_dir() and p.name == "dompdb"), tmp)
        inner.rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        # CATH domain files have no suffix: give them .pdb so that read_proteins recognises them
        for p in out.iterdir():
            if p.is_file() and not p.suffix:
                p.rename(p.with_suffix(".pdb"))
    return out


def cath_labels(domain_list: str | Path) -> dict[str, str]:
    """Domain id -> C.A.T.H code from ``cath-domain-list-v4_3_0.txt`` (columns: id, C, A, T, H, ...)."""
    labels: dict[str, str] = {}
    for line in Path(domain_list).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f = line.split()
        labels[f[0]] = ".".join(f[1:5])
    return labels
