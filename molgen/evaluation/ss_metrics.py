"""CPDiffusion-SS evaluation metrics, defined exactly as the paper's ``metrics.py`` (riacd/CPDiffusion-SS).

SS consistency is measured on *element-level* SS strings (one letter per contiguous SS element, e.g. "CHCEC"):

* identity (ID): Biopython ``PairwiseAligner`` global alignment, match 1, mismatch 0, gap scores 0 (the defaults of the Biopython it used);
  ``identities / (identities + mismatches + gaps) * 100`` of the first optimal alignment. Per template the
  **mean of the top-10** identities over the designs (``ss3_identity_top10``), ID_max = the maximum.
* composition MSE: per design, MSE (mean over the 3 classes H, E, C) between the normalised element-count
  fractions of design and template. Table I prints it scaled; molgen reports MSE x 100 (our reading of the
  table: the scale is not printed in the image).
* "w/o loop": the same after deleting loop letters (C, and I T S L - P for 8-state strings) from both.

Diversity and novelty: pairwise sequence identity among a template's designs (global alignment, identical /
aligned columns, as TMalign's Seq_ID), highest identity of each design to the training sequences, and TM-score
diversity (tmtools) when structures of the designs exist.
"""
from __future__ import annotations

import itertools
import random

import numpy as np

from molgen.data.proteins import blosum62_aligner, element_string

LOOP_LETTERS = set("CITSL-P")
SS3_ALPHABET = "HEC"


def _ss_aligner():
    from Bio.Align import PairwiseAligner

    aligner = PairwiseAligner()
    aligner.mode = "global"
    aligner.match_score = 1
    aligner.mismatch_score = 0
    # The paper ran Biopython < 1.86, whose default gap scores were 0; newer releases default to -1, so the
    # old defaults are set explicitly to reproduce its numbers.
    aligner.open_gap_score = 0
    aligner.extend_gap_score = 0
    return aligner


_ALIGNER = None


def remove_loops(s: str) -> str:
    return "".join(c for c in s if c not in LOOP_LETTERS)


def ss_identity(design: str, target: str, remove_loop: bool = False) -> float:
    """Identity (%) of two element-level SS strings (paper's ``seq_identity``); 0 when either is empty."""
    global _ALIGNER
    if remove_loop:
        design, target = remove_loops(design), remove_loops(target)
    if not design or not target:
        return 0.0
    _ALIGNER = _ALIGNER or _ss_aligner()
    c = _ALIGNER.align(design, target)[0].counts()
    return c.identities / (c.identities + c.mismatches + c.gaps) * 100.0


def ss_composition(s: str, remove_loop: bool = False) -> np.ndarray:
    """Normalised H/E/C element-count fractions (all zeros for an empty string, as the paper)."""
    if remove_loop:
        s = remove_loops(s)
    counts = np.array([s.count(c) for c in SS3_ALPHABET], dtype=float)
    return counts / counts.sum() if counts.sum() >= 1 else counts


def ss_composition_mse(design: str, target: str, remove_loop: bool = False) -> float:
    """MSE over the 3 classes between the element-composition fractions (paper's ``seq_composition_mse``)."""
    return float(((ss_composition(design, remove_loop) - ss_composition(target, remove_loop)) ** 2).mean())


def consistency(design_ss3: list[str], template_ss3: str, top_k: int = 10) -> dict[str, float]:
    """Per-template SS consistency of designs (per-residue or element-level SS3 strings are accepted).

    Returns ID (mean of top-``top_k``), ID_max, MSE (x100), and the same "w/o loop" plus the mean identity.
    """
    target = element_string(template_ss3)
    designs = [element_string(s) for s in design_ss3]
    out: dict[str, float] = {}
    for suffix, rl in (("", False), ("_noloop", True)):
        ids = sorted((ss_identity(d, target, rl) for d in designs), reverse=True)
        mses = [ss_composition_mse(d, target, rl) for d in designs]
        out[f"ID{suffix}"] = float(np.mean(ids[:top_k])) if ids else float("nan")
        out[f"ID_max{suffix}"] = float(max(ids)) if ids else float("nan")
        out[f"ID_mean{suffix}"] = float(np.mean(ids)) if ids else float("nan")
        out[f"MSE{suffix}"] = float(np.mean(mses) * 100) if mses else float("nan")
    return out


# ---------------------------------------------------------------------------------------------- sequences
def _seq_aligner():
    return blosum62_aligner("global", open_gap=-10, extend_gap=-0.5, end_gap=0)


def sequence_identity(a: str, b: str, aligner=None) -> float:
    """Identity (%) = identical / aligned (non-gap) columns of a BLOSUM62 global alignment with free end gaps."""
    if not a or not b:
        return 0.0
    aligner = aligner or _seq_aligner()
    c = aligner.align(a, b)[0].counts()
    return 100.0 * c.identities / max(1, c.identities + c.mismatches)


def pairwise_identity(seqs: list[str], max_pairs: int | None = 2000, seed: int = 0) -> float:
    """Mean pairwise sequence identity (%) among designs (a random subset of ``max_pairs`` pairs if more)."""
    pairs = list(itertools.combinations(range(len(seqs)), 2))
    if not pairs:
        return float("nan")
    if max_pairs and len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    aligner = _seq_aligner()
    return float(np.mean([sequence_identity(seqs[i], seqs[j], aligner) for i, j in pairs]))


def _kmers(s: str, k: int = 3) -> set[str]:
    return {s[i:i + k] for i in range(len(s) - k + 1)}


def novelty(seqs: list[str], reference: list[str], candidates: int = 10) -> list[float]:
    """Highest identity (%) of each design to the reference (training) sequences.

    The ``candidates`` references sharing most 3-mers with a design are aligned (k-mer prefilter; exact for
    near-copies, which share many 3-mers).
    """
    aligner = _seq_aligner()
    ref_kmers = [_kmers(r) for r in reference]
    out = []
    for s in seqs:
        km = _kmers(s)
        order = np.argsort([-len(km & rk) for rk in ref_kmers], kind="stable")[:candidates]
        out.append(max((sequence_identity(s, reference[j], aligner) for j in order), default=0.0))
    return out


def tm_diversity(ca_coords: list[np.ndarray], seqs: list[str], max_pairs: int | None = 500, seed: int = 0) -> float:
    """Mean pairwise TM-score ((TM1 + TM2) / 2, tmtools / TM-align) among design structures; NaN if < 2.

    Structures of fewer than 3 residues (TM-align's minimum) are left out.
    """
    from tmtools import tm_align

    ok = [i for i in range(len(seqs)) if len(seqs[i]) >= 3 and len(ca_coords[i]) >= 3]
    pairs = list(itertools.combinations(ok, 2))
    if not pairs:
        return float("nan")
    if max_pairs and len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    tms = []
    for i, j in pairs:
        r = tm_align(np.asarray(ca_coords[i], dtype=float), np.asarray(ca_coords[j], dtype=float), seqs[i], seqs[j])
        tms.append((r.tm_norm_chain1 + r.tm_norm_chain2) / 2)
    return float(np.mean(tms))


def q3(pred: list[str], true: list[str]) -> float:
    """Per-residue 3-state accuracy over all residues of all chains."""
    hit = sum(sum(a == b for a, b in zip(p, t)) for p, t in zip(pred, true))
    return hit / max(1, sum(len(t) for t in true))
