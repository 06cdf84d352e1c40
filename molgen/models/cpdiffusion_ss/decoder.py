"""Autoregressive sequence decoder of CPDiffusion-SS: element latents -> amino-acid sequence of free length.

As in the paper's ``diff_decoder.py`` (an ESM-IF-style pre-LN Transformer decoder): causal self-attention over
the tokens generated so far (sinusoidal positions on decoder tokens only), cross-attention to the sequence of SS
element latents (no positional encoding on the latents), trained by teacher forcing with cross-entropy.
Sampling draws tokens from the softmax at a temperature until ``<eos>``. Unlike the paper's code, which skips a
step for the whole batch when any row samples a special token, special tokens other than ``<eos>`` are masked
out of the distribution (no batch-wide bias).

**Plan-aligned decoding** (``plan=True``, molgen's addition): the template's element lengths are the plan, so
the decoder knows at every position which element the residue belongs to. The token embedding at position ``i``
gets :func:`plan_features` added (through a linear map): the latent and SS type of residue ``i``'s element, its
distance from the element's start and end (one-hot up to 4) and relative position, or an end flag after the last
residue. The sequence has the plan's length by construction (``<eos>`` exactly there), and each residue is
predicted from its own element's latent instead of the decoder having to count its way through the elements by
cross-attention, which a few hundred training chains do not teach (the free decoder's held-out recovery stays at
chance).
"""
from __future__ import annotations

import math

import torch
from torch import nn

import torch.nn.functional as F

from molgen.data.protein_tokens import AA_OFFSET, BOS, EOS, PAD, VOCAB
from molgen.nn.embeddings import SinusoidalPositions

#: one-hot bins of the distance from an element's start and from its end (0, 1, 2, 3, >= 4)
_EDGE_BINS = 5
PLAN_EXTRA = 3 + 2 * _EDGE_BINS + 2          # SS one-hot, start/end distances, relative position, end flag


def plan_features(latents: torch.Tensor, elem_ss: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
    """Per-position plan features ``(B, T, latent_dim + PLAN_EXTRA)``.

    Args:
        latents: ``(N, latent_dim)`` element latents of the batch.
        elem_ss: ``(N,)`` SS type (0..2) of each element.
        element: ``(B, T)`` the (global) element of the residue at each position; -1 after the last residue
            (the ``<eos>`` position and padding: all zero but the end flag).
    """
    B, T = element.shape
    valid = element >= 0
    e = element.clamp(min=0)
    pos = torch.arange(T, device=element.device).expand(B, T)
    n = latents.shape[0]
    start = torch.full((n,), T, dtype=torch.long, device=element.device).scatter_reduce(
        0, e[valid], pos[valid], reduce="amin")
    length = torch.bincount(e[valid], minlength=n).clamp(min=1)
    k = (pos - start[e]).clamp(min=0)
    rest = (length[e] - 1 - k).clamp(min=0)
    feats = torch.cat([latents[e], F.one_hot(elem_ss[e], 3).to(latents),
                       F.one_hot(k.clamp(max=_EDGE_BINS - 1), _EDGE_BINS).to(latents),
                       F.one_hot(rest.clamp(max=_EDGE_BINS - 1), _EDGE_BINS).to(latents),
                       ((k + 0.5) / length[e]).unsqueeze(-1).to(latents)], dim=-1)
    feats = feats * valid.unsqueeze(-1)
    return torch.cat([feats, (~valid).unsqueeze(-1).to(latents)], dim=-1)


class SSDecoder(nn.Module):
    """Transformer decoder with cross-attention to element latents.

    Args:
        latent_dim: element latent size.
        dim: decoder width.
        layers: decoder layers (paper: 3).
        heads: attention heads (paper: 8).
        ffn: feed-forward width.
        dropout: dropout (paper: attention dropout 0.1).
        ss_label: append the one-hot SS type to each latent (the paper's ``--decoder_add_2nd_label``).
        plan: plan-aligned decoding (module docstring): ``forward`` and ``sample`` take per-position
            :func:`plan_features`.

    Shapes:
        tokens ``(B, T)`` (``<bos>`` first), memory ``(B, N, latent_dim)``, memory_mask ``(B, N)`` bool
        (True = element), ss ``(B, N, 3)`` one-hot (only with ``ss_label``), plan ``(B, T, latent_dim +
        PLAN_EXTRA)`` (only with ``plan``) -> logits ``(B, T, |V|)``.
    """

    def __init__(self, latent_dim: int, dim: int = 128, layers: int = 2, heads: int = 4, ffn: int = 256,
                 dropout: float = 0.1, ss_label: bool = False, plan: bool = False):
        super().__init__()
        self.dim, self.ss_label, self.plan = dim, ss_label, plan
        if plan:
            self.plan_proj = nn.Linear(latent_dim + PLAN_EXTRA, dim)
        self.embed_tokens = nn.Embedding(len(VOCAB), dim, padding_idx=PAD)
        self.positions = SinusoidalPositions(dim)
        self.memory_proj = nn.Linear(latent_dim + (3 if ss_label else 0), dim)
        layer = nn.TransformerDecoderLayer(dim, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, len(VOCAB))

    def memory(self, latents: torch.Tensor, ss: torch.Tensor | None) -> torch.Tensor:
        if self.ss_label:
            latents = torch.cat([latents, ss.to(latents)], dim=-1)
        return self.memory_proj(latents)

    def _inputs(self, tokens: torch.Tensor, plan: torch.Tensor | None) -> torch.Tensor:
        h = self.positions(self.embed_tokens(tokens) * math.sqrt(self.dim))
        if self.plan:
            if plan is None:
                raise ValueError("a plan-aligned decoder needs the plan features of every position")
            h = h + self.plan_proj(plan[:, :tokens.shape[1]])
        return h

    def forward(self, tokens: torch.Tensor, latents: torch.Tensor, memory_mask: torch.Tensor,
                ss: torch.Tensor | None = None, plan: torch.Tensor | None = None) -> torch.Tensor:
        T = tokens.shape[1]
        h = self._inputs(tokens, plan)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)
        out = self.decoder(h, self.memory(latents, ss), tgt_mask=causal, tgt_key_padding_mask=tokens == PAD,
                           memory_key_padding_mask=~memory_mask)
        return self.head(self.norm(out))

    @torch.no_grad()
    def sample(self, latents: torch.Tensor, memory_mask: torch.Tensor, ss: torch.Tensor | None = None,
               max_len: int = 1024, temperature: float = 1.0, min_len: int = 1,
               generator: torch.Generator | None = None, plan: torch.Tensor | None = None,
               lengths: torch.Tensor | None = None) -> list[list[int]]:
        """Sample one sequence per row of ``latents`` (token ids without ``<bos>``/``<eos>``).

        Args:
            max_len: stop after this many residues (the paper: 1024).
            temperature: softmax temperature (the paper: 1.0); 0 = greedy.
            min_len: ``<eos>`` is forbidden before this many residues.
            plan, lengths: a plan-aligned decoder's per-position features ``(B, T, F)`` and the plan's length
                of each row ``(B,)``: each sequence has exactly that length (``min_len``/``max_len`` unused).
        """
        B = latents.shape[0]
        if self.plan:
            if plan is None or lengths is None:
                raise ValueError("a plan-aligned decoder samples from a plan (plan features and lengths)")
            max_len = int(lengths.max())
        memory = self.memory(latents, ss)
        tokens = torch.full((B, 1), BOS, dtype=torch.long, device=latents.device)
        done = torch.zeros(B, dtype=torch.bool, device=latents.device)
        allowed = torch.zeros(len(VOCAB), dtype=torch.bool, device=latents.device)
        allowed[AA_OFFSET:] = True
        for t in range(max_len):
            T = tokens.shape[1]
            h = self._inputs(tokens, plan)
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)
            out = self.decoder(h, memory, tgt_mask=causal, memory_key_padding_mask=~memory_mask)
            logits = self.head(self.norm(out[:, -1]))
            if self.plan:   # <eos> exactly at the plan's length, amino acids before it
                end = (lengths == t).unsqueeze(-1)
                ok = torch.where(end, F.one_hot(torch.tensor(EOS), len(VOCAB)).bool().to(end.device), allowed)
            else:
                ok = allowed.clone()
                ok[EOS] = t >= min_len
            logits = logits.masked_fill(~ok, float("-inf"))
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        out = []
        for row in tokens[:, 1:].tolist():
            seq = []
            for i in row:
                if i in (EOS, PAD):
                    break
                seq.append(i)
            out.append(seq)
        return out
