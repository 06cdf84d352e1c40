"""The residue tokenizer of molgen's protein models: 4 special tokens then the 20 amino acids.

Token ids are part of every protein checkpoint's weights (embedding rows), so this layout never changes.
"""
from __future__ import annotations

import torch

from molgen.data.proteins import AMINO_ACIDS

PAD, BOS, EOS, MASK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<mask>")
VOCAB = SPECIALS + tuple(AMINO_ACIDS)
AA_OFFSET = len(SPECIALS)


def encode(seq: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Token ids of a 20-letter sequence (``<bos>``/``<eos>`` optional)."""
    ids = [AA_OFFSET + AMINO_ACIDS.index(c) for c in seq]
    return ([BOS] if bos else []) + ids + ([EOS] if eos else [])


def decode(ids) -> str:
    """Sequence of amino-acid tokens up to the first ``<eos>``; special tokens are dropped."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i >= AA_OFFSET:
            out.append(AMINO_ACIDS[i - AA_OFFSET])
    return "".join(out)


def pad_batch(seqs: list[list[int]], value: int = PAD) -> torch.Tensor:
    """Right-pad token lists into a ``(B, L_max)`` long tensor."""
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out
