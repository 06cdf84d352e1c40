"""E(3)-invariant EGNN denoiser on the SS graph (CPDiffusion-SS ``EGNN_NET2`` / ``EGNN_Sparse``).

Each layer is an EGNN layer (Satorras et al. 2021, https://arxiv.org/abs/2102.09844) *without* coordinate
updates, so geometry enters only through squared distances and the network is invariant to rotations,
reflections and translations of the template:

.. math::
    m_{ij} = \\phi_m(h_i, h_j, e_{ij}, \\lVert x_i - x_j \\rVert^2), \\quad
    h_i \\leftarrow h_i + \\phi_h(h_i, \\textstyle\\sum_j m_{ij}), \\quad
    e_{ij} \\leftarrow \\mathrm{LN}(e_{ij} + \\phi_e(m_{ij}))

followed by FiLM time conditioning ``h * (1 + scale_l(t)) + shift_l(t)``, LayerNorm and a 4x GELU feed-forward
block with residual, as in the paper's code. The EGNN layer is :class:`molgen.nn.egnn.EGNNLayer` in its
invariant, edge-updating configuration; the time embedding is :func:`molgen.nn.embeddings.sinusoidal_embedding`
with the ``cos_sin`` layout (ADM's ``timestep_embedding``).
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.nn.egnn import EGNNLayer
from molgen.nn.embeddings import sinusoidal_embedding

#: the layer's sub-network names as this model's checkpoints store them
_LAYER_NAMES = {"message": "message", "node": "node", "edge": "edge", "edge_norm": "edge_norm"}


def ss_egnn_layer(dim: int, dropout: float = 0.0) -> EGNNLayer:
    """One invariant EGNN layer with edge update (messages ``4 dim`` wide, node MLP ``2 dim``).

    Shapes: ``layer(h (N, d), pos (N, 3), edge_index (2, E) as (target, source), e (E, d))`` -> ``(h, pos, e)``.
    """
    return EGNNLayer(dim, edge_attr_dim=dim, update_coords=False, attention=False, update_edges=True,
                     message_hidden=4 * dim, node_hidden=2 * dim, dropout=dropout, distance_last=True,
                     module_names=_LAYER_NAMES)


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
        self.layers = nn.ModuleList(ss_egnn_layer(hidden, dropout) for _ in range(layers))
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
        flow = edge_index.flip(0)  # (target, source): messages flow source -> target
        temb = self.time_mlp(sinusoidal_embedding(t, self.hidden, "cos_sin").to(z_t.dtype))  # (N, 4 hidden)
        for layer, film, norm, ffn, ffn_norm in zip(self.layers, self.film, self.norms, self.ffn, self.ffn_norms):
            h, _, e = layer(h, pos, flow, e)  # geometry enters only as squared distances
            scale, shift = film(temb).chunk(2, dim=-1)
            h = norm(h * (1 + scale) + shift)
            h = ffn_norm(h + ffn(h))
        return self.head(h)
