"""E(3)-invariant EGNN denoiser on the SS graph (CPDiffusion-SS ``EGNN_NET2`` / ``EGNN_Sparse``).

Each layer is an EGNN layer (Satorras et al. 2021, https://arxiv.org/abs/2102.09844) *without* coordinate
updates, so geometry enters only through squared distances and the network is invariant to rotations,
reflections and translations of the template:

.. math::
    m_{ij} = \\phi_m(h_i, h_j, e_{ij}, \\lVert x_i - x_j \\rVert^2), \\quad
    h_i \\leftarrow h_i + \\phi_h(h_i, \\textstyle\\sum_j m_{ij}), \\quad
    e_{ij} \\leftarrow \\mathrm{LN}(e_{ij} + \\phi_e(m_{ij}))

followed by FiLM time conditioning ``h * (1 + scale_l(t)) + shift_l(t)``, LayerNorm and a 4x GELU feed-forward
block with residual, as in the paper's code. Written here (not PyG's or lucidrains' EGNN) because the edge
update, the no-coordinate-update variant and per-layer FiLM are not offered together by a maintained library;
aggregation uses PyG's ``scatter``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import scatter


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps. Shapes: ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class EGNNLayer(nn.Module):
    """One invariant EGNN layer with edge update. Shapes: h (N, d), e (E, d), d2 (E, 1) -> (N, d), (E, d)."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.message = nn.Sequential(nn.Linear(3 * dim + 1, 4 * dim), nn.SiLU(), nn.Dropout(dropout),
                                     nn.Linear(4 * dim, dim), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.edge = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.edge_norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, e: torch.Tensor, d2: torch.Tensor, edge_index: torch.Tensor):
        src, dst = edge_index
        m = self.message(torch.cat([h[dst], h[src], e, d2], dim=-1))
        agg = scatter(m, dst, dim=0, dim_size=h.shape[0], reduce="sum")
        h = h + self.node(torch.cat([h, agg], dim=-1))
        e = self.edge_norm(e + self.edge(m))
        return h, e


class SSGraphDenoiser(nn.Module):
    """x0-predicting denoiser of element latents on the SS graph.

    Args:
        latent_dim: element latent size.
        hidden: node/edge width (benchmark model: 640).
        layers: EGNN layers (benchmark model: 4).
        dropout: dropout in messages and feed-forward blocks (benchmark model: 0).

    Shapes:
        z_t ``(N, latent_dim)`` noisy latents, ss ``(N, 3)`` one-hot types, pos ``(N, 3)`` normalised element
        centroids, edge_index ``(2, E)``, edge_attr ``(E,)`` 1/distance, t ``(N,)`` timestep per node ->
        ``(N, latent_dim)`` predicted clean latents.
    """

    def __init__(self, latent_dim: int, hidden: int = 128, layers: int = 4, dropout: float = 0.0):
        super().__init__()
        self.hidden = hidden
        self.ss_embed = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.latent_embed = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.node_in = nn.Linear(2 * hidden, hidden)
        self.edge_embed = nn.Linear(1, hidden)
        self.time_mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, 4 * hidden))
        self.layers = nn.ModuleList(EGNNLayer(hidden, dropout) for _ in range(layers))
        self.film = nn.ModuleList(nn.Linear(4 * hidden, 2 * hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout),
                                               nn.Linear(4 * hidden, hidden)) for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))
        for film in self.film:  # start as identity FiLM
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    def forward(self, z_t: torch.Tensor, ss: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.node_in(torch.cat([self.ss_embed(ss), self.latent_embed(z_t)], dim=-1))  # (N, hidden)
        e = self.edge_embed(edge_attr.unsqueeze(-1))  # (E, hidden)
        src, dst = edge_index
        d2 = ((pos[dst] - pos[src]) ** 2).sum(-1, keepdim=True)  # (E, 1): the only use of geometry
        temb = self.time_mlp(timestep_embedding(t, self.hidden).to(z_t.dtype))  # (N, 4 hidden)
        for layer, film, norm, ffn, ffn_norm in zip(self.layers, self.film, self.norms, self.ffn, self.ffn_norms):
            h, e = layer(h, e, d2, edge_index)
            scale, shift = film(temb).chunk(2, dim=-1)
            h = norm(h * (1 + scale) + shift)
            h = ffn_norm(h + ffn(h))
        return self.head(h)
