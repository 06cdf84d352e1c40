"""Autoregressive sequence decoder of CPDiffusion-SS: element latents -> amino-acid sequence of free length.

As in the paper's ``diff_decoder.py`` (an ESM-IF-style pre-LN Transformer decoder): causal self-attention over
the tokens generated so far (sinusoidal positions on decoder tokens only), cross-attention to the sequence of SS
element latents (no positional encoding on the latents), trained by teacher forcing with cross-entropy.
Sampling draws tokens from the softmax at a temperature until ``<eos>``. Unlike the paper's code, which skips a
step for the whole batch when any row samples a special token, special tokens other than ``<eos>`` are masked
out of the distribution (no batch-wide bias).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from molgen.data.protein_tokens import AA_OFFSET, BOS, EOS, PAD, VOCAB
from molgen.nn.embeddings import SinusoidalPositions


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

    Shapes:
        tokens ``(B, T)`` (``<bos>`` first), memory ``(B, N, latent_dim)``, memory_mask ``(B, N)`` bool
        (True = element), ss ``(B, N, 3)`` one-hot (only with ``ss_label``) -> logits ``(B, T, |V|)``.
    """

    def __init__(self, latent_dim: int, dim: int = 128, layers: int = 2, heads: int = 4, ffn: int = 256,
                 dropout: float = 0.1, ss_label: bool = False):
        super().__init__()
        self.dim, self.ss_label = dim, ss_label
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

    def forward(self, tokens: torch.Tensor, latents: torch.Tensor, memory_mask: torch.Tensor,
                ss: torch.Tensor | None = None) -> torch.Tensor:
        T = tokens.shape[1]
        h = self.positions(self.embed_tokens(tokens) * math.sqrt(self.dim))
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)
        out = self.decoder(h, self.memory(latents, ss), tgt_mask=causal, tgt_key_padding_mask=tokens == PAD,
                           memory_key_padding_mask=~memory_mask)
        return self.head(self.norm(out))

    @torch.no_grad()
    def sample(self, latents: torch.Tensor, memory_mask: torch.Tensor, ss: torch.Tensor | None = None,
               max_len: int = 1024, temperature: float = 1.0, min_len: int = 1,
               generator: torch.Generator | None = None) -> list[list[int]]:
        """Sample one sequence per row of ``latents`` (token ids without ``<bos>``/``<eos>``).

        Args:
            max_len: stop after this many residues (the paper: 1024).
            temperature: softmax temperature (the paper: 1.0); 0 = greedy.
            min_len: ``<eos>`` is forbidden before this many residues.
        """
        B = latents.shape[0]
        memory = self.memory(latents, ss)
        tokens = torch.full((B, 1), BOS, dtype=torch.long, device=latents.device)
        done = torch.zeros(B, dtype=torch.bool, device=latents.device)
        allowed = torch.zeros(len(VOCAB), dtype=torch.bool, device=latents.device)
        allowed[AA_OFFSET:] = True
        for t in range(max_len):
            T = tokens.shape[1]
            h = self.positions(self.embed_tokens(tokens) * math.sqrt(self.dim))
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)
            out = self.decoder(h, memory, tgt_mask=causal, memory_key_padding_mask=~memory_mask)
            logits = self.head(self.norm(out[:, -1]))
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
