"""Homology-aware train/val/test split of protein chains.

Chains are grouped into clusters that must not be separated: two chains are linked when they share a CATH
topology (C.A.T) label, or when their local alignment (Biopython ``PairwiseAligner``, BLOSUM62, gap open -11,
extend -1) has at least ``identity`` identical residues over the shorter chain. Linked chains form one
cluster (union-find, i.e. single linkage), and whole clusters are assigned to test, validation and train. So
no test chain shares a topology with, or has >= ``identity`` sequence identity to, a training chain.
Unlabelled chains are handled by the identity criterion alone.

Every pair is scored (O(N^2) alignments; ~2 min for 500 chains on one core). The full identity alignment is
only computed for pairs whose alignment score passes a cheap bound, which rejects most unrelated pairs.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from molgen.data.proteins import Protein, blosum62_aligner


def _aligner():
    return blosum62_aligner("local", open_gap=-11, extend_gap=-1)


def local_identity(a: str, b: str, aligner=None) -> float:
    """Identical aligned residues of the best local alignment / length of the shorter sequence (0..1)."""
    aligner = aligner or _aligner()
    aln = aligner.align(a, b)[0]
    return aln.counts().identities / max(1, min(len(a), len(b)))


def homology_clusters(proteins: list[Protein], identity: float = 0.3, progress: bool = True) -> np.ndarray:
    """Cluster id per protein (single linkage on shared CATH topology or local identity >= ``identity``)."""
    n = len(proteins)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    by_topology: dict[str, int] = {}
    for i, p in enumerate(proteins):
        for t in p.topologies:
            if t in by_topology:
                union(i, by_topology[t])
            else:
                by_topology[t] = i
    aligner = _aligner()
    seqs = [p.sequence for p in proteins]
    for i in tqdm(range(n), desc="homology clustering", disable=not progress, leave=False):
        for j in range(i + 1, n):
            if find(i) == find(j):
                continue
            short = min(len(seqs[i]), len(seqs[j]))
            # An alignment with identity*short identities scores at least ~ identity*short*4 - the rest; a
            # score below 1.5*identity*short cannot come from a homolog at this identity (BLOSUM62 identities
            # average ~5.3). Only pairs above the bound get the (slower) traceback.
            if aligner.score(seqs[i], seqs[j]) < 1.5 * identity * short:
                continue
            if local_identity(seqs[i], seqs[j], aligner) >= identity:
                union(i, j)
    roots = np.array([find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def split_clusters(clusters: np.ndarray, fractions: tuple[float, float] = (0.1, 0.1), seed: int = 0,
                   prefer_test: np.ndarray | None = None) -> np.ndarray:
    """Assign whole clusters to 'test', 'val', 'train' (array of strings, one per chain).

    Args:
        clusters: cluster id per chain. Shape ``(N,)``.
        fractions: target (test, val) fractions of chains; clusters are taken in a seeded random order
            until each target is reached.
        prefer_test: optional boolean per chain; clusters containing such chains are considered first for
            the test set (e.g. chains with CATH labels, so that test templates are CATH domains).
    """
    rng = np.random.default_rng(seed)
    ids = np.unique(clusters)
    order = rng.permutation(ids)
    if prefer_test is not None:
        preferred = {c for c in ids if prefer_test[clusters == c].any()}
        order = np.array([c for c in order if c in preferred] + [c for c in order if c not in preferred])
    n = len(clusters)
    split = np.array(["train"] * n, dtype=object)
    targets = [("test", fractions[0] * n), ("val", fractions[1] * n)]
    counts = {"test": 0, "val": 0}
    k = 0
    for name, target in targets:
        while counts[name] < target and k < len(order):
            members = clusters == order[k]
            if members.sum() > max(1, 0.5 * target):  # a giant cluster would swallow the set: keep it in train
                k += 1
                continue
            split[members] = name
            counts[name] += int(members.sum())
            k += 1
        if name == "test" and prefer_test is not None:  # validation clusters come from the remaining order
            pass
    return split.astype(str)
