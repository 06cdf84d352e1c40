"""The ONE protein representation of molgen, its readers, DSSP, secondary-structure elements and the SS graph.

A :class:`Protein` is one chain (or CATH domain): its 20-letter sequence, backbone coordinates N/CA/C/O
(``(L, 4, 3)`` Å, NaN where an atom is missing), the DSSP 8-state and 3-state strings, the chain id and the
CATH labels when known. Readers:

* ``*.jsonl`` / ``*.jsonl.gz``: Ingraham et al.'s CATH 4.2 ``chain_set.jsonl`` layout (``name``, ``seq``,
  ``coords={N,CA,C,O}``, optional ``CATH``), used by ``shared/data/cath/cath42_test_subsets.jsonl``, the
  embedded subset and ``proteins_extra/gtalign_eval_chains.jsonl.gz``;
* ``*.json``: a list of ``{name, seq, coords}`` with coords ``L x 4 x 3`` (TS50) or ``{N,CA,C,O}`` (CASP15);
* ``*.pdb`` / ``*.ent`` / ``*.cif`` / ``*.mmcif`` (optionally ``.gz``): one chain read with Biopython.

Secondary structure is DSSP computed by mdtraj (no external ``mkdssp``); the 8 -> 3 mapping is the paper's
(H, G -> H; E, B -> E; everything else, including pi-helix I -> C). SS *elements* are maximal runs of one
3-state letter; the SS graph (Hu et al. 2024, CPDiffusion-SS, ``get_ss_graph_each_sample``) has one node per
element at its mean C-alpha, sequential edges (i-1, i) and, per node, the nearest non-sequential element
searched forward and the one searched backward, both within 20 Å; edge attribute 1/distance.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from molgen.errors import DataError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
BACKBONE = ("N", "CA", "C", "O")
SS3 = "HEC"
SS8_TO_SS3 = {"H": "H", "G": "H", "E": "E", "B": "E"}  # everything else -> C (I, T, S, P, L, ' ', '-')
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
CA_BREAK = 4.2  # Å: consecutive C-alpha further apart than this is a chain break


def blosum62_aligner(mode: str, open_gap: float, extend_gap: float, end_gap: float | None = None):
    """A Biopython :class:`~Bio.Align.PairwiseAligner` with BLOSUM62 scores: ``mode`` ``local`` (homology
    clustering: -11/-1, BLAST's defaults) or ``global`` (design-to-reference identity: -10/-0.5, free end gaps)."""
    from Bio.Align import PairwiseAligner, substitution_matrices

    aligner = PairwiseAligner()
    aligner.mode = mode
    aligner.substitution_matrix = substitution_matrices.load("BLOSUM62")
    aligner.open_gap_score = open_gap
    aligner.extend_gap_score = extend_gap
    if end_gap is not None:
        aligner.end_gap_score = end_gap
    return aligner


def ss8_to_ss3(ss8: str) -> str:
    """Map a DSSP 8-state string to 3 states (H,G->H; E,B->E; rest->C), as CPDiffusion-SS ``ss_alphabet_dic``."""
    return "".join(SS8_TO_SS3.get(c, "C") for c in ss8)


@dataclass
class Protein:
    """One protein chain or domain.

    Attributes:
        name: identifier (``1aaz.A``, ``1r7aA02``, a file stem).
        sequence: one letter per residue, 20 standard amino acids.
        coords: backbone coordinates in Å, NaN for a missing atom. Shape ``(L, 4, 3)``, atoms N, CA, C, O.
        chain_id: the chain it came from ('' when unknown).
        cath: CATH codes (C.A.T or C.A.T.H) when labelled, else empty.
        ss8: DSSP 8-state string (``-`` for coil), or None until :func:`assign_ss` ran.
        source: file it was read from.
        notes: what the reader changed (skipped residues, chain breaks).
    """

    name: str
    sequence: str
    coords: np.ndarray
    chain_id: str = ""
    cath: list[str] = field(default_factory=list)
    ss8: str | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float32).reshape(-1, 4, 3)
        if len(self.sequence) != len(self.coords):
            raise DataError(f"{self.name}: sequence length {len(self.sequence)} != {len(self.coords)} residues")
        bad = set(self.sequence) - set(AMINO_ACIDS)
        if bad:
            raise DataError(f"{self.name}: non-standard residue letters {''.join(sorted(bad))}")

    def __len__(self) -> int:
        return len(self.sequence)

    def __repr__(self) -> str:
        return f"Protein({self.name!r}, L={len(self)}, ss3={'yes' if self.ss8 else 'not assigned'})"

    @property
    def ca(self) -> np.ndarray:
        """C-alpha coordinates, shape ``(L, 3)``."""
        return self.coords[:, 1]

    @property
    def ss3(self) -> str | None:
        return None if self.ss8 is None else ss8_to_ss3(self.ss8)

    @property
    def topologies(self) -> list[str]:
        """CATH topology codes (C.A.T) of the labels."""
        return sorted({".".join(c.split(".")[:3]) for c in self.cath if c.count(".") >= 2})

    def chain_breaks(self) -> np.ndarray:
        """Indices i such that residues i and i+1 are not bonded (C-alpha distance > 4.2 Å or missing CA)."""
        d = np.linalg.norm(np.diff(self.ca, axis=0), axis=-1)
        return np.nonzero(~(d <= CA_BREAK))[0]

    def to_dict(self) -> dict:
        """Plain dict in the chain_set.jsonl layout (coords rounded to 0.001 Å, NaN -> None)."""
        coords = {a: [[None if not np.isfinite(v) else round(float(v), 3) for v in xyz] for xyz in self.coords[:, k]]
                  for k, a in enumerate(BACKBONE)}
        for a in BACKBONE:  # a missing atom is null, not [null, null, null] (chain_set.jsonl convention)
            coords[a] = [None if xyz[0] is None else xyz for xyz in coords[a]]
        out = {"name": self.name, "seq": self.sequence, "CATH": list(self.cath), "coords": coords}
        if self.ss8 is not None:
            out["dssp8"] = self.ss8
        return out


# ------------------------------------------------------------------------------------------------ DSSP
def assign_ss(protein: Protein) -> Protein:
    """Compute DSSP (mdtraj) and store the 8-state string in ``protein.ss8``; returns the protein.

    Residues with an incomplete backbone get '-' (coil); each run of bonded residues (no chain break) is a
    separate mdtraj chain so that no H-bond pattern is assumed across a gap.
    """
    import mdtraj as md

    ok = np.isfinite(protein.coords).all(axis=(1, 2))
    if ok.sum() == 0:
        raise DataError(f"{protein.name}: no residue has a complete N/CA/C/O backbone; DSSP impossible")
    idx = np.nonzero(ok)[0]
    top = md.Topology()
    chain = None
    prev = None
    for i in idx:
        if prev is None or i != prev + 1 or not (np.linalg.norm(protein.ca[i] - protein.ca[prev]) <= CA_BREAK):
            chain = top.add_chain()
        res = top.add_residue(_THREE[protein.sequence[i]], chain)
        for a in BACKBONE:
            top.add_atom(a, md.element.get_by_symbol(a[0]), res)
        prev = i
    xyz = protein.coords[idx].reshape(1, -1, 3) / 10.0  # Å -> nm
    traj = md.Trajectory(xyz, top)
    dssp = md.compute_dssp(traj, simplified=False)[0]
    ss8 = np.array(["-"] * len(protein), dtype="<U1")
    ss8[idx] = [("-" if c in (" ", "NA") else c) for c in dssp]
    protein.ss8 = "".join(ss8)
    return protein


_THREE = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE",
          "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER",
          "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR"}


# ------------------------------------------------------------------------------------------------ elements
@dataclass(frozen=True)
class SSElement:
    """A maximal run of one 3-state letter: residues ``start:end`` (end exclusive)."""

    ss: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def ss_elements(ss3: str) -> list[SSElement]:
    """Split a per-residue 3-state string into contiguous elements (``"HHHCCE"`` -> H[0:3], C[3:5], E[5:6])."""
    out: list[SSElement] = []
    start = 0
    for i in range(1, len(ss3) + 1):
        if i == len(ss3) or ss3[i] != ss3[start]:
            out.append(SSElement(ss3[start], start, i))
            start = i
    return out


def element_string(ss: str) -> str:
    """Element-level SS string: one letter per contiguous run (``"CCHHHHCEEE"`` -> ``"CHCE"``)."""
    return "".join(e.ss for e in ss_elements(ss))


@dataclass
class SSGraph:
    """The coarse SS graph of a protein.

    Attributes:
        ss: element types, one letter per node (H/E/C). Length ``N``.
        pos: mean C-alpha of each element in Å. Shape ``(N, 3)``.
        edge_index: directed edges (both directions stored). Shape ``(2, E)``.
        edge_attr: 1 / distance (1/Å) of each edge. Shape ``(E,)``.
        lengths: residues per element. Shape ``(N,)``.
    """

    ss: str
    pos: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    lengths: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.ss)


def ss_graph(protein: Protein, cutoff: float = 20.0, n_nearest: int = 1) -> SSGraph:
    """Build the SS graph (one node per element at its mean C-alpha; sequential + nearest non-sequential edges).

    Args:
        protein: a protein with ``ss8`` assigned (:func:`assign_ss`).
        cutoff: Å; non-sequential neighbours further than this are not connected.
        n_nearest: non-sequential neighbours taken per node in each direction (forward j > i+1 and
            backward j < i-1), nearest first, as ``no_nn`` in the paper's code (1).
    """
    if protein.ss8 is None:
        raise DataError(f"{protein.name}: secondary structure not assigned (call assign_ss first)")
    elements = ss_elements(protein.ss3)
    pos = np.zeros((len(elements), 3), dtype=np.float32)
    for k, e in enumerate(elements):
        ca = protein.ca[e.start:e.end]
        ca = ca[np.isfinite(ca).all(axis=1)]
        pos[k] = ca.mean(axis=0) if len(ca) else np.nan
    if not np.isfinite(pos).all():  # an element whose residues all lack CA: place it between its neighbours
        for k in np.nonzero(~np.isfinite(pos).all(axis=1))[0]:
            near = [j for j in (k - 1, k + 1) if 0 <= j < len(pos) and np.isfinite(pos[j]).all()]
            if not near:
                raise DataError(f"{protein.name}: SS element {k} and its neighbours have no C-alpha coordinates")
            pos[k] = np.mean([pos[j] for j in near], axis=0)
    n = len(elements)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    edges: set[tuple[int, int]] = set()
    for i in range(1, n):
        edges.add((i - 1, i))
    for i in range(n):
        for candidates in (np.arange(i + 2, n), np.arange(0, max(i - 1, 0))):
            close = [j for j in candidates[np.argsort(dist[i, candidates], kind="stable")] if dist[i, j] <= cutoff]
            for j in close[:n_nearest]:
                edges.add((min(i, j), max(i, j)))
    und = sorted(edges)
    src = [a for a, b in und] + [b for a, b in und]
    dst = [b for a, b in und] + [a for a, b in und]
    edge_index = np.array([src, dst], dtype=np.int64).reshape(2, -1)
    edge_attr = (1.0 / np.maximum(dist[edge_index[0], edge_index[1]], 1e-3)).astype(np.float32)
    lengths = np.array([len(e) for e in elements], dtype=np.int64)
    return SSGraph("".join(e.ss for e in elements), pos, edge_index, edge_attr, lengths)


# ------------------------------------------------------------------------------------------------ readers
def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _coords_from_json(coords, name: str, n: int) -> np.ndarray:
    if isinstance(coords, dict):
        try:
            arr = np.stack([np.array([[np.nan] * 3 if xyz is None else xyz for xyz in coords[a]], dtype=np.float64)
                            for a in BACKBONE], axis=1)
        except (KeyError, ValueError) as e:
            raise DataError(f"{name}: bad coords ({e})") from None
    else:
        arr = np.array([[[np.nan] * 3 if xyz is None else xyz for xyz in res] for res in coords], dtype=np.float64)
    if arr.shape != (n, 4, 3):
        raise DataError(f"{name}: coords shape {arr.shape} does not match sequence length {n} x 4 x 3")
    return arr.astype(np.float32)


def protein_from_record(rec: dict, where: str) -> Protein:
    """A :class:`Protein` from one chain_set.jsonl / TS50 / CASP15 style record."""
    name = str(rec.get("name", where))
    seq = rec.get("seq")
    if not seq:
        raise DataError(f"{where}: record without 'seq'")
    cath = rec.get("CATH") or rec.get("cath") or []
    cath = [cath] if isinstance(cath, str) else list(cath)
    p = Protein(name, seq, _coords_from_json(rec.get("coords"), name, len(seq)), chain_id=name.split(".")[-1]
                if "." in name else "", cath=cath, ss8=rec.get("dssp8"), source=where)
    return p


def read_json_records(path: Path) -> Iterable[tuple[dict, str]]:
    """Yield (record, where) from a .json list or a .jsonl(.gz) file."""
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        with _open_text(path) as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line), f"{path}:{i}"
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{i}: not JSON ({e.msg})") from None
    else:
        with _open_text(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
        for i, rec in enumerate(data if isinstance(data, list) else list(data.values())):
            yield rec, f"{path}[{i}]"


def read_structure(path: str | Path, chain: str | None = None) -> Protein:
    """Read one protein chain from a PDB or mmCIF file (Biopython; first model).

    Standard amino acids and selenomethionine (MSE -> M) are kept; other residues (waters, ligands,
    non-standard amino acids) are skipped and counted in ``protein.notes``; residues without a C-alpha are
    skipped. Chain breaks are kept (noted; DSSP treats the pieces separately).

    Args:
        path: ``.pdb``, ``.ent``, ``.cif``, ``.mmcif`` (optionally gzipped).
        chain: chain id; default: the first chain that has amino acids.

    Raises:
        DataError: missing or empty file, unparsable file, no chain with C-alpha atoms, unknown chain.
    """
    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.PDB.Polypeptide import three_to_index, index_to_one

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    is_cif = stem.endswith((".cif", ".mmcif"))
    parser = MMCIFParser(QUIET=True) if is_cif else PDBParser(QUIET=True)
    try:
        with _open_text(path) as handle:
            structure = parser.get_structure(Path(stem).stem, handle)
    except Exception as e:  # noqa: BLE001 -- Biopython raises many types for corrupted files
        raise DataError(f"{path}: cannot parse as {'mmCIF' if is_cif else 'PDB'} ({str(e).splitlines()[0][:120]})") from None
    models = list(structure)
    if not models:
        raise DataError(f"{path}: no atoms (empty or not a structure file)")
    model = models[0]
    chains = [c for c in model if chain is None or c.id == chain]
    if not chains:
        raise DataError(f"{path}: no chain '{chain}' (chains: {', '.join(c.id for c in model)})")
    skipped: dict[str, int] = {}
    for ch in chains:
        seq, coords = [], []
        for res in ch:
            resname = "MET" if res.get_resname() == "MSE" else res.get_resname()
            try:
                letter = index_to_one(three_to_index(resname))
            except (KeyError, ValueError):
                if res.id[0] != "W":
                    skipped[resname] = skipped.get(resname, 0) + 1
                continue
            if "CA" not in res:
                skipped[f"{resname} without CA"] = skipped.get(f"{resname} without CA", 0) + 1
                continue
            xyz = [res[a].get_coord() if a in res else [np.nan] * 3 for a in BACKBONE]
            seq.append(letter)
            coords.append(xyz)
        if seq:
            notes = [f"skipped {n}x {r}" for r, n in sorted(skipped.items())]
            p = Protein(f"{Path(stem).stem}", "".join(seq), np.array(coords, dtype=np.float32), chain_id=ch.id,
                        source=str(path), notes=notes)
            breaks = p.chain_breaks()
            if len(breaks):
                p.notes.append(f"{len(breaks)} chain break(s) after residue index {', '.join(map(str, breaks[:5]))}")
            return p
    what = f"chain {chain}" if chain else "any chain"
    raise DataError(f"{path}: no amino-acid residue with a C-alpha atom in {what}")


def read_proteins(path: str | Path, assign: bool = True) -> tuple[list[Protein], list[tuple[str, str]]]:
    """Read proteins from a file or folder (json/jsonl(.gz), PDB/mmCIF); returns (proteins, skipped).

    A record that cannot be used (bad coordinates, non-standard letters, no backbone for DSSP) is skipped
    and reported as ``(where, reason)``; a missing path or one with no readable protein raises DataError.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    proteins: list[Protein] = []
    skipped: list[tuple[str, str]] = []
    for f in files:
        low = f.name.lower().removesuffix(".gz")
        if low.endswith((".json", ".jsonl")):
            for rec, where in read_json_records(f):
                try:
                    p = protein_from_record(rec, where)
                    proteins.append(assign_ss(p) if assign and p.ss8 is None else p)
                except DataError as e:
                    skipped.append((where, str(e)))
        elif low.endswith(STRUCTURE_SUFFIXES):
            try:
                p = read_structure(f)
                proteins.append(assign_ss(p) if assign else p)
            except DataError as e:
                if not path.is_dir():
                    raise
                skipped.append((str(f), str(e)))
        elif not path.is_dir():
            raise DataError(f"{f}: unknown protein file type (expected .pdb, .cif, .json, .jsonl[.gz])")
    if not proteins:
        why = f" ({skipped[0][1]})" if skipped else ""
        raise DataError(f"{path}: no readable protein{why}")
    return proteins, skipped


def load_template(template: "str | Path | Protein", chain: str | None = None) -> Protein:
    """A template for sampling: a :class:`Protein` (DSSP assigned if needed) or a PDB/mmCIF/json path."""
    if isinstance(template, Protein):
        return template if template.ss8 is not None else assign_ss(template)
    path = Path(template)
    low = path.name.lower().removesuffix(".gz")
    if low.endswith(STRUCTURE_SUFFIXES):
        return assign_ss(read_structure(path, chain))
    proteins, _ = read_proteins(path)
    return proteins[0]


def write_proteins_jsonl(proteins: list[Protein], path: str | Path) -> Path:
    """Write proteins in the chain_set.jsonl layout (gzip if the name ends in .gz), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    opener = gzip.open(tmp, "wt", compresslevel=9) if path.name.endswith(".gz") else open(tmp, "w")
    with opener as f:
        for p in proteins:
            f.write(json.dumps(p.to_dict(), separators=(",", ":")) + "\n")
    tmp.replace(path)
    return path
