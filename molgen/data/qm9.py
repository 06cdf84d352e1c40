"""QM9 for molgen's molecule pipelines: read a source, perceive bonds, apply EDM's split and halves.

:func:`load_qm9` is what a featurize stage calls. It

1. reads QM9 from ``data.source`` (``embedded`` | ``qm9pack`` | ``xyz_archive``; :mod:`molgen.data.qm9_sources`),
   properties converted to user units (:data:`QM9_PROPERTIES`: alpha Bohr^3, gap/homo/lumo eV, mu D,
   Cv cal/(mol K));
2. perceives bonds and formal charges from each DFT geometry and checks them against the data set's SMILES
   (:mod:`molgen.data.perception`); with ``data.exclude_mismatch=true`` only ``ok`` molecules are kept;
3. assigns EDM's split (Hoogeboom et al. 2022, ``e3_diffusion_for_molecules: qm9/data/prepare/qm9.py``,
   ``qm9/data/utils.py``), see :func:`edm_split_indices` and :func:`edm_train_halves`.

EDM's protocol, as read from its code:

* the 3,054 uncharacterized molecules are removed; the remaining 130,831 GDB-9 indices are sorted;
* ``np.random.seed(0); perm = np.random.permutation(130831)``; positions ``perm[:100000]`` are train, the next
  17,748 valid, the last 13,083 (``int(0.1 * 130831)``) test;
* each split is stored in archive order (EDM filters the tar members by position, so a split keeps index
  order, assuming the figshare tar lists members by index, which molgen's archive reader checks);
* the halves: ``np.random.seed(42); p = np.random.permutation(100000)``; ``train[p[:50000]]`` is EDM's
  ``qm9_first_half`` (D_a: EDM trains its property classifier there) and ``train[p[50000:]]`` its
  ``qm9_second_half`` (D_b: EDM's conditional generator). PropMolFlow trains its generator on the first half
  and its regressor on the second; ``data.generator_half=a`` (default) does the same, ``b`` is EDM's choice.

Molecules removed by perception stay out of their split; the counts are in :attr:`QM9Data.summary`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from molgen.data.molecule import Molecule
from molgen.data.perception import Perception, count_statuses, perceive_many
from molgen.data.qm9_sources import (
    N_GDB9, N_QM9, PROPERTY_NAMES, QM9_PROPERTIES, PropertySpec, QM9Records, download_qm9_archive,
    embedded_uncharacterized, qm9pack_csv_paths, read_embedded, read_qm9_csv, read_xyz_archive,
)
from molgen.errors import ConfigError, DataError

SOURCES = ("embedded", "qm9pack", "xyz_archive")
SPLIT_KEYS = ("generator", "regressor", "valid", "test")
EDM_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}


# ------------------------------------------------------------------------------------------- splits
def included_indices(uncharacterized: set[int] | None = None) -> np.ndarray:
    """Sorted GDB-9 indices (1-based) of the 130,831 characterized molecules."""
    excluded = embedded_uncharacterized() if uncharacterized is None else uncharacterized
    keep = np.setdiff1d(np.arange(1, N_GDB9 + 1), np.fromiter(excluded, dtype=np.int64))
    if len(keep) != N_QM9:
        raise DataError(f"uncharacterized list leaves {len(keep)} molecules, EDM's split needs {N_QM9}")
    return keep


def edm_split_indices(included: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """EDM's train/valid/test split as GDB-9 indices, each in EDM's stored (ascending index) order.

    Args:
        included: the sorted GDB-9 indices of the characterized molecules (default :func:`included_indices`).

    Returns:
        ``{"train": [100000], "valid": [17748], "test": [13083]}`` int64 arrays.
    """
    included = included_indices() if included is None else np.sort(np.asarray(included, dtype=np.int64))
    n = len(included)
    n_train, n_test = 100_000, int(0.1 * n)
    n_valid = n - n_train - n_test
    perm = np.random.RandomState(0).permutation(n)  # == np.random.seed(0); np.random.permutation(n)
    train, valid, test = np.split(perm, [n_train, n_train + n_valid])
    return {k: np.sort(included[v]) for k, v in (("train", train), ("valid", valid), ("test", test))}


def edm_train_halves(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EDM's ``qm9_first_half`` (D_a) and ``qm9_second_half`` (D_b) of the train split, as GDB-9 indices.

    Args:
        train: the train split in EDM's stored order (ascending index), ``[100000]``.
    """
    perm = np.random.RandomState(42).permutation(len(train))
    half = len(train) // 2
    return train[perm[:half]], train[perm[half:]]


def edm_assignment(included: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables over GDB-9 indices: ``split_of[i]`` in {"train", "valid", "test", ""} and ``half_of[i]``
    in {"a", "b", ""} (``""``: not in EDM's data, i.e. uncharacterized). Both ``[N_GDB9 + 1]``."""
    splits = edm_split_indices(included)
    split_of = np.full(N_GDB9 + 1, "", dtype="<U5")
    half_of = np.full(N_GDB9 + 1, "", dtype="<U1")
    for name, idx in splits.items():
        split_of[idx] = name
    a, b = edm_train_halves(splits["train"])
    half_of[a], half_of[b] = "a", "b"
    return split_of, half_of


# --------------------------------------------------------------------------------------------- data
@dataclass
class QM9Data:
    """QM9 ready for a molecule pipeline.

    Attributes:
        splits: ``{"generator", "regressor", "valid", "test"}`` -> molecules with perceived bonds and the six
            properties in user units (``Molecule.name`` is the QM9 id, e.g. ``dsgdb9nsd_000003``).
            ``generator`` is the train half chosen by ``data.generator_half``, ``regressor`` the other one.
        train_smiles: canonical SMILES (no stereo, implicit H) of every molecule read from EDM's train split
            (both halves, perception failures included via the data set SMILES), for novelty.
        summary: counts for the report (see :meth:`summary_markdown`).
        perceptions: the :class:`Perception` of every molecule read, keyed by GDB-9 index.
    """

    splits: dict[str, list[Molecule]]
    train_smiles: set[str]
    summary: dict[str, Any]
    perceptions: dict[int, Perception] = field(default_factory=dict, repr=False)

    def summary_markdown(self) -> str:
        """A short Markdown section for the featurize report."""
        s = self.summary
        p = s["perception"]
        lines = [
            "### QM9 data",
            "",
            f"Source `{s['source']}`: read {s['read']} molecules"
            + (f", skipped {s['skipped_records']} unreadable records" if s["skipped_records"] else "")
            + (f" ({s['note']})" if s.get("note") else "") + ".",
            f"Bond perception from the DFT geometry (RDKit xyz2mol, total charge 0) vs the data set SMILES: "
            f"{p['ok']} ok ({p['ok_via_hueckel']} via the Hückel-connectivity fallback), {p['failed']} failed, "
            f"{p['disagree']} disagree ({p['disagree_same_skeleton']} differ only in bond orders/charges), "
            f"{p['other']} other; {s['perception_ms_per_molecule']:.2f} ms/molecule.",
            f"Kept: {'only ok molecules' if s['exclude_mismatch'] else 'ok and disagreeing molecules (perceived graph)'}"
            f"; {s['excluded']} excluded, {s['not_in_split']} not in EDM's split.",
            "",
            "| split | molecules | removed by perception |",
            "|---|---|---|",
        ]
        for k in SPLIT_KEYS:
            lines.append(f"| {k} | {s['sizes'][k]} | {s['removed'][k]} |")
        lines += ["", f"Generator trains on EDM train half `{s['generator_half']}`; properties: "
                  + ", ".join(f"{n} ({QM9_PROPERTIES[n].unit})" for n in PROPERTY_NAMES) + "."]
        return "\n".join(lines) + "\n"


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def _read_source(source: str, path: str | None, max_molecules: int | None) -> QM9Records:
    if source == "embedded":
        return read_embedded(path, max_molecules)
    if source == "qm9pack":
        return read_qm9_csv(qm9pack_csv_paths(path), max_molecules)
    if path is None:
        raise ConfigError("data.source=xyz_archive needs data.path=<dsgdb9nsd.xyz.tar.bz2 or its folder>")
    return read_xyz_archive(path, max_molecules)


def load_qm9(data_cfg: Any, progress: bool = True) -> QM9Data:
    """Read, perceive and split QM9 as ``data_cfg`` (``configs/data/qm9*.yaml``) says.

    Args:
        data_cfg: the ``data`` config group: ``source``, ``path``, ``max_molecules``, ``split`` (``edm``),
            ``generator_half`` (``a``|``b``), ``exclude_mismatch``, ``perception_processes``.
        progress: show a tqdm bar during perception.

    Raises:
        ConfigError: an unknown source/split/half.
        DataError: a missing path, or no usable molecule.
    """
    source = str(_get(data_cfg, "source", "embedded"))
    if source not in SOURCES:
        raise ConfigError(f"data.source={source}: unknown QM9 source (choose from {', '.join(SOURCES)})")
    if str(_get(data_cfg, "split", "edm")) != "edm":
        raise ConfigError(f"data.split={_get(data_cfg, 'split')}: only 'edm' is implemented")
    half = str(_get(data_cfg, "generator_half", "a"))
    if half not in ("a", "b"):
        raise ConfigError(f"data.generator_half={half}: choose a (PropMolFlow) or b (EDM)")
    max_molecules = _get(data_cfg, "max_molecules")
    if max_molecules is not None and int(max_molecules) < 1:
        raise ConfigError(f"data.max_molecules={max_molecules}: must be a positive integer or null")
    exclude_mismatch = bool(_get(data_cfg, "exclude_mismatch", True))
    path = _get(data_cfg, "path")

    rec = _read_source(source, path, None if max_molecules is None else int(max_molecules))
    if len(rec) == 0:
        reasons = "; ".join(sorted({r for _, r in rec.skipped}))[:200]
        raise DataError(f"no readable QM9 molecule in source {source}{' ' + str(path) if path else ''}"
                        + (f" ({len(rec.skipped)} skipped: {reasons})" if rec.skipped else ""))

    split_of, half_of = edm_assignment()
    t0, c0 = time.perf_counter(), time.process_time()
    perceptions = perceive_many(list(zip(rec.atomic_numbers, rec.positions, rec.smiles)),
                                processes=int(_get(data_cfg, "perception_processes", 1)), progress=progress)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    other = "b" if half == "a" else "a"
    where = {("train", half): "generator", ("train", other): "regressor", ("valid", ""): "valid",
             ("test", ""): "test"}
    splits: dict[str, list[Molecule]] = {k: [] for k in SPLIT_KEYS}
    removed = {k: 0 for k in SPLIT_KEYS}
    train_smiles: set[str] = set()
    usable = {"ok"} if exclude_mismatch else {"ok", "disagree", "other"}
    not_in_split = excluded = 0
    for k, (index, p) in enumerate(zip(rec.index, perceptions)):
        split = split_of[index] if 0 < index <= N_GDB9 else ""
        if split == "train":
            smi = p.smiles if p.status == "ok" else (p.reference_smiles or p.smiles)
            if smi:
                train_smiles.add(smi)
        if not split:
            not_in_split += 1
            continue
        key = where[(split, half_of[index] if split == "train" else "")]
        if p.status not in usable:
            removed[key] += 1
            excluded += 1
            continue
        props = {n: float(v) for n, v in zip(PROPERTY_NAMES, rec.properties[k])}
        splits[key].append(Molecule(rec.positions[k], rec.atomic_numbers[k], p.formal_charges, p.bonds,
                                    p.bond_orders, props, QM9Records.name_of(index)))
    if not any(splits.values()):
        raise DataError(f"no usable QM9 molecule in source {source}: {len(rec)} read, {excluded} removed by bond "
                        f"perception, {not_in_split} outside EDM's split")

    counts = count_statuses(perceptions)
    summary = {
        "source": source, "path": str(path) if path else None, "note": rec.note.strip("; "),
        "read": len(rec), "skipped_records": len(rec.skipped), "perception": counts,
        "perception_seconds": round(seconds, 2), "perception_cpu_seconds": round(cpu_seconds, 2),
        "perception_ms_per_molecule": 1000 * seconds / max(len(rec), 1),
        "exclude_mismatch": exclude_mismatch, "excluded": excluded, "not_in_split": not_in_split,
        "generator_half": half, "sizes": {k: len(v) for k, v in splits.items()}, "removed": removed,
        "train_smiles": len(train_smiles),
    }
    return QM9Data(splits, train_smiles, summary, dict(zip(rec.index, perceptions)))


__all__ = ["load_qm9", "QM9Data", "QM9_PROPERTIES", "PROPERTY_NAMES", "PropertySpec", "edm_split_indices",
           "edm_train_halves", "edm_assignment", "included_indices", "download_qm9_archive", "EDM_SIZES"]
