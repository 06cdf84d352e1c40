"""An SS-conditioned composition sampler: the simple baseline of the CPDiffusion-SS evaluation.

For each element of the template's SS plan, draw a length from the training distribution of element lengths
of that SS type, then draw each residue independently from the training amino-acid composition of that SS type.
It knows the plan (element types and order) but nothing about geometry or residue context.
"""
from __future__ import annotations

import numpy as np

from molgen.data.proteins import AMINO_ACIDS, SS3, ss_elements


class SSCompositionSampler:
    """Per-SS-type amino-acid frequencies and element-length histograms.

    Args:
        aa_freq: ``(3, 20)`` amino-acid frequencies for H, E, C residues (rows sum to 1).
        length_hist: ``(3, Lmax+1)`` counts of element lengths per SS type.
    """

    def __init__(self, aa_freq: np.ndarray, length_hist: np.ndarray):
        self.aa_freq = np.asarray(aa_freq, dtype=float)
        self.length_hist = np.asarray(length_hist, dtype=float)

    @classmethod
    def fit(cls, sequences: list[str], ss3: list[str], max_len: int = 100) -> "SSCompositionSampler":
        aa = np.ones((3, 20))  # add-one smoothing
        hist = np.zeros((3, max_len + 1))
        for seq, ss in zip(sequences, ss3):
            for a, s in zip(seq, ss):
                aa[SS3.index(s), AMINO_ACIDS.index(a)] += 1
            for e in ss_elements(ss):
                hist[SS3.index(e.ss), min(len(e), max_len)] += 1
        hist[:, 1] += hist.sum(1) == 0  # a type never seen: length 1
        return cls(aa / aa.sum(1, keepdims=True), hist)

    def state(self) -> dict:
        return {"aa_freq": self.aa_freq.tolist(), "length_hist": self.length_hist.tolist()}

    def sample(self, plan: str, n: int, seed: int = 0, lengths: list[int] | None = None) -> list[str]:
        """``n`` sequences for an element-level plan such as ``"CHCEC"``; ``lengths``: the template's element
        lengths (then every design has the template's length), else drawn from the training histograms."""
        rng = np.random.default_rng(seed)
        p_len = self.length_hist / self.length_hist.sum(1, keepdims=True)
        if lengths is not None and len(lengths) != len(plan):
            raise ValueError(f"{len(lengths)} element lengths for a plan of {len(plan)} elements")
        out = []
        for _ in range(n):
            parts = []
            for j, s in enumerate(plan):
                k = SS3.index(s)
                length = (int(lengths[j]) if lengths is not None
                          else max(1, int(rng.choice(len(p_len[k]), p=p_len[k]))))
                parts.append("".join(rng.choice(list(AMINO_ACIDS), size=length, p=self.aa_freq[k])))
            out.append("".join(parts))
        return out
