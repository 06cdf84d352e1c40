r"""E(n)-equivariant graph neural network (EGNN) layers, as used by EDM and GeoLDM.

Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021,
https://arxiv.org/abs/2102.09844, with the two changes EDM (Hoogeboom et al. 2022, https://arxiv.org/abs/2203.17003)
makes for molecule generation: an attention gate on the messages and a ``tanh``-bounded coordinate update on
normalised difference vectors. One layer computes, for every edge ``(i, j)`` of the (complete) graph,

.. math::
    m_{ij} = \phi_e(h_i, h_j, d_{ij}^2, a_{ij}),\qquad m_{ij} \leftarrow m_{ij}\,\sigma(\phi_{att}(m_{ij})),

    h_i \leftarrow h_i + \phi_h\Big(h_i, \tfrac{1}{Z}\sum_j m_{ij}\Big),\qquad
    x_i \leftarrow x_i + \tfrac{1}{Z}\sum_j \frac{x_i - x_j}{d_{ij} + 1}\, r\,\tanh(\phi_x(m_{ij}))

with ``d_ij = ||x_i - x_j||``, edge attributes ``a_ij`` (invariant), aggregation normaliser ``Z`` and coordinate
range ``r``. Scalars ``h`` are E(3)-invariant, positions ``x`` equivariant (rotations, reflections, translations).

Written here (not taken from a library) because neither PyG nor e3nn ships EDM's variant of EGNN; PyG's message
passing is not used because the complete-graph edge lists are built once per batch and the whole layer is four
small MLPs and two ``index_add_`` scatters.
"""
from __future__ import annotations

import torch
from torch import nn


def _mlp(d_in: int, d_hidden: int, d_out: int, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out)]
    if last_act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EGNNLayer(nn.Module):
    r"""One EGNN layer with attention and a ``tanh`` coordinate update (see the module docstring).

    Args:
        hidden: width of ``h`` and of the messages.
        edge_attr_dim: width of the invariant edge attributes ``a_ij`` (0 for none).
        update_coords: move the atoms (False: an invariant message-passing layer, ``x`` is returned unchanged).
        coords_range: ``r``, the largest move one edge can cause (EDM: 15).
        norm_factor: ``Z``, the aggregation normaliser (EDM on QM9: 1, i.e. a plain sum).

    Shapes:
        h ``[n, hidden]``, x ``[n, 3]``, edge_index ``[2, E]`` (messages flow ``j -> i`` for ``(i, j)``),
        edge_attr ``[E, edge_attr_dim]`` -> (h ``[n, hidden]``, x ``[n, 3]``).
    """

    def __init__(self, hidden: int, edge_attr_dim: int = 0, update_coords: bool = True, coords_range: float = 15.0,
                 norm_factor: float = 1.0):
        super().__init__()
        self.hidden, self.update_coords = hidden, update_coords
        self.coords_range, self.norm_factor = float(coords_range), float(norm_factor)
        self.edge_mlp = _mlp(2 * hidden + 1 + edge_attr_dim, hidden, hidden)
        self.attention = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        self.node_mlp = _mlp(2 * hidden, hidden, hidden, last_act=False)
        if update_coords:
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=0.001)  # start close to the identity on positions
            self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = edge_index
        diff = x[i] - x[j]                                                     # [E, 3]
        d2 = (diff * diff).sum(-1, keepdim=True)                               # [E, 1]
        feats = [h[i], h[j], d2] + ([edge_attr] if edge_attr is not None else [])
        m = self.edge_mlp(torch.cat(feats, -1))                                # [E, hidden]
        m = m * self.attention(m)                                              # [E, hidden]
        agg = h.new_zeros(h.shape[0], self.hidden).index_add_(0, i, m) / self.norm_factor   # [n, hidden]
        h = h + self.node_mlp(torch.cat([h, agg], -1))                         # [n, hidden]
        if self.update_coords:
            unit = diff / (d2.sqrt() + 1.0)                                    # [E, 3]
            step = unit * torch.tanh(self.coord_mlp(m)) * self.coords_range    # [E, 3]
            x = x + x.new_zeros(x.shape).index_add_(0, i, step) / self.norm_factor
        return h, x

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, update_coords={self.update_coords}, coords_range={self.coords_range}"


class EGNN(nn.Module):
    r"""A stack of :class:`EGNNLayer` between an input and an output linear map on the scalars.

    The edge attributes are the squared distances of the *input* geometry (EDM feeds them to every layer so the
    network keeps seeing the starting geometry while positions move).

    Args:
        in_dim: width of the input scalars.
        out_dim: width of the output scalars.
        hidden: hidden width (EDM/GeoLDM: 256).
        n_layers: number of EGNN layers (EDM/GeoLDM dynamics: 9; GeoLDM encoder: 1).
        update_coords: whether the layers move the atoms.
        coords_range: per-layer coordinate range (EDM: 15).
        norm_factor: aggregation normaliser (EDM on QM9: 1).

    Shapes:
        h ``[n, in_dim]``, x ``[n, 3]``, edge_index ``[2, E]`` -> (h ``[n, out_dim]``, x ``[n, 3]``).
        Equivariance: ``EGNN(h, x R + t)`` = ``(h', x' R + t)`` for any orthogonal ``R`` and translation ``t``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, n_layers: int = 4, update_coords: bool = True,
                 coords_range: float = 15.0, norm_factor: float = 1.0):
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_attr_dim=1, update_coords=update_coords, coords_range=coords_range,
                      norm_factor=norm_factor) for _ in range(n_layers))
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = edge_index
        d2_0 = ((x[i] - x[j]) ** 2).sum(-1, keepdim=True)                       # [E, 1]
        h = self.embed(h)
        for layer in self.layers:
            h, x = layer(h, x, edge_index, d2_0)
        return self.out(h), x
