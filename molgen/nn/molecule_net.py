"""A fully connected GVP network over the atoms of each molecule, with position and edge updates.

The trunk of PropMolFlow's vector field (FlowMol's ``EndpointVectorField``, https://arxiv.org/abs/2411.16644)
and of its GVP property regressor: ``n_layers`` :class:`~molgen.nn.gvp.GVPConv` layers on the complete graph
of every molecule (no radius cutoff); after every layer but the first, a position updater moves the atoms by a
GVP-predicted vector and an edge updater refreshes the edge features from the two end atoms and the new
distance. Molecules are PyG-style concatenations (a ``batch`` vector), edges are directed pairs ``i != j``.
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.nn.graph import complete_graph  # noqa: F401 -- re-exported: the graph these nets run on
from molgen.nn.gvp import GVP, GVPConv, GVPSequential, norm_no_nan
from molgen.nn.radial import GaussianRBF


def edge_geometry(pos: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors source-minus-target ``[E, 3]`` and distances ``[E]``."""
    diff = pos[edge_index[0]] - pos[edge_index[1]]                            # [E, 3]
    d = norm_no_nan(diff, keepdim=True) + 1e-8                                # [E, 1]
    return diff / d, d.squeeze(-1)


class PositionUpdate(nn.Module):
    """Move atoms by one vector from 3 GVPs (last one with linear gating): ``x <- x + V_out``."""

    def __init__(self, s_dim: int, v_dim: int, n_cp_feats: int):
        super().__init__()
        self.gvps = GVPSequential(GVP(s_dim, v_dim, s_dim, v_dim, n_cp_feats),
                                  GVP(s_dim, v_dim, s_dim, v_dim, n_cp_feats),
                                  GVP(s_dim, v_dim, s_dim, 1, n_cp_feats, vector_gate="linear"))

    def forward(self, s: torch.Tensor, pos: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, dv = self.gvps(s, v)                                                   # [n, 1, 3]
        return pos + dv.squeeze(1)                                                # [n, 3]


class EdgeUpdate(nn.Module):
    """``e_ij <- LN(e_ij + MLP([s_i, s_j, e_ij, RBF(d_ij)]))``."""

    def __init__(self, s_dim: int, edge_dim: int, rbf_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * s_dim + edge_dim + rbf_dim, edge_dim), nn.SiLU(),
                                 nn.Linear(edge_dim, edge_dim), nn.SiLU())
        self.norm = nn.LayerNorm(edge_dim)

    def forward(self, s: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor, rbf: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        return self.norm(e + self.mlp(torch.cat([s[src], s[dst], e, rbf], -1)))  # [E, edge_dim]


class GVPMoleculeNet(nn.Module):
    r"""Stack of GVPConv layers on complete molecular graphs, with position and edge updates.

    Args:
        s_dim: node scalar channels (paper: 256).
        v_dim: node vector channels (paper: 16); node vectors start at zero.
        edge_dim: edge feature channels (paper: 128).
        n_layers: GVPConv layers (paper: 8).
        rbf_dim, rbf_max: distance RBF (paper: 32 on [0, 14] Angstrom).
        n_cp_feats: cross-product channels per GVP (paper: 4; 0 makes the net E(3)- instead of SE(3)-equivariant).
        message_norm: divisor of the summed messages (paper: 100) or "mean".
        update_positions: run the position updater after every layer but the first.

    Shapes:
        s ``[n, s_dim]`` (already embedded), pos ``[n, 3]``, e ``[E, edge_dim]`` (embedded), edge_index ``[2, E]``
        -> (s ``[n, s_dim]``, pos ``[n, 3]``, e ``[E, edge_dim]``).
    """

    def __init__(self, s_dim: int = 256, v_dim: int = 16, edge_dim: int = 128, n_layers: int = 8,
                 rbf_dim: int = 32, rbf_max: float = 14.0, n_cp_feats: int = 4, message_norm: float | str = 100.0,
                 update_positions: bool = True, n_message_gvps: int = 3, n_update_gvps: int = 3):
        super().__init__()
        self.v_dim = v_dim
        self.update_positions = update_positions
        self.rbf = GaussianRBF(rbf_dim, 0.0, rbf_max)
        self.convs = nn.ModuleList([GVPConv(s_dim, v_dim, edge_dim, rbf_dim, n_cp_feats, n_message_gvps,
                                            n_update_gvps, message_norm) for _ in range(n_layers)])
        n_upd = max(n_layers - 1, 0)
        self.position_updates = nn.ModuleList(
            [PositionUpdate(s_dim, v_dim, n_cp_feats) for _ in range(n_upd)] if update_positions else [])
        self.edge_updates = nn.ModuleList([EdgeUpdate(s_dim, edge_dim, rbf_dim) for _ in range(n_upd)])

    def forward(self, s: torch.Tensor, pos: torch.Tensor, e: torch.Tensor,
                edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = s.new_zeros(s.shape[0], self.v_dim, 3)                                # [n, V, 3]
        unit, d = edge_geometry(pos, edge_index)                                  # [E, 3], [E]
        rbf = self.rbf(d)                                                         # [E, rbf]
        for k, conv in enumerate(self.convs):
            s, v = conv(s, v, edge_index, unit, rbf, e)                           # [n, S], [n, V, 3]
            if k == 0:
                continue
            if self.update_positions:
                pos = self.position_updates[k - 1](s, pos, v)                     # [n, 3]
                unit, d = edge_geometry(pos, edge_index)
                rbf = self.rbf(d)
            e = self.edge_updates[k - 1](s, e, edge_index, rbf)                   # [E, edge_dim]
        return s, pos, e
