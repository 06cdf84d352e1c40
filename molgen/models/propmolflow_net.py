"""PropMolFlow's endpoint network: from a noisy molecule at time t to the predicted clean molecule.

FlowMol2's CTMC ``EndpointVectorField`` (https://arxiv.org/abs/2411.16644) with PropMolFlow's property injection
(https://arxiv.org/abs/2505.21469, section "property embedding"):

1. node scalars ``h0 = LN(MLP([onehot(a_t) || onehot(c_t) || t]))`` (one-hots include the mask class);
2. ``h0 <- combine(h0, p)`` with the embedded property ``p`` (once, before the first layer);
3. edge features ``e0 = LN(MLP(onehot(e_t)))`` on every directed pair of the complete graph;
4. the GVP trunk (:class:`~molgen.nn.molecule_net.GVPMoleculeNet`) moves atoms and refreshes edges;
5. heads: atom-type and charge logits from the node scalars, bond logits from ``e_ij + e_ji`` (symmetric),
   positions re-centred to zero centre of mass.
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.conditioning import PropertyEmbedding
from molgen.generative.gaussian_path import remove_mean
from molgen.nn.molecule_net import GVPMoleculeNet


def _embed(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.SiLU(), nn.Linear(d, d), nn.SiLU(), nn.LayerNorm(d))


class EndpointNet(nn.Module):
    """Predict ``(x1_hat, atom logits, charge logits, bond logits)`` from the state at time t.

    Args:
        n_atom_types, n_charges, n_bond_types: real classes (mask tokens are added here).
        s_dim, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm: see
            :class:`~molgen.nn.molecule_net.GVPMoleculeNet`.
        property_embedding: conditions ``h0`` when given (None: unconditional).

    Shapes:
        a_t ``[n]``, c_t ``[n]`` long tokens (mask = number of classes); pos ``[n, 3]``; t ``[n]`` per atom;
        batch ``[n]``; edge_index ``[2, E]`` complete graph, reverse ``[E]``; e_t ``[E]`` symmetric tokens;
        value ``[B]`` or None
        -> x1_hat ``[n, 3]``, atom logits ``[n, n_atom_types]``, charge logits ``[n, n_charges]``,
        bond logits ``[E_upper, n_bond_types]`` for the edges with source < target, in edge order.
    """

    def __init__(self, n_atom_types: int, n_charges: int, n_bond_types: int, s_dim: int = 256, v_dim: int = 16,
                 edge_dim: int = 128, n_layers: int = 8, rbf_dim: int = 32, rbf_max: float = 14.0,
                 n_cp_feats: int = 4, message_norm: float | str = 100.0,
                 property_embedding: PropertyEmbedding | None = None):
        super().__init__()
        self.n_atom_types, self.n_charges, self.n_bond_types = n_atom_types, n_charges, n_bond_types
        self.node_embedding = _embed(n_atom_types + 1 + n_charges + 1 + 1, s_dim)
        self.edge_embedding = _embed(n_bond_types + 1, edge_dim)
        self.property_embedding = property_embedding
        self.trunk = GVPMoleculeNet(s_dim, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm)
        self.node_head = nn.Sequential(nn.Linear(s_dim, s_dim), nn.SiLU(), nn.Linear(s_dim, n_atom_types + n_charges))
        self.edge_head = nn.Sequential(nn.Linear(edge_dim, edge_dim), nn.SiLU(), nn.Linear(edge_dim, n_bond_types))

    def forward(self, a_t: torch.Tensor, c_t: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, reverse: torch.Tensor, e_t: torch.Tensor,
                value: torch.Tensor | None = None, num_graphs: int | None = None):
        # 1. initial node scalars from the (partly masked) atom types, charges and the time
        h = torch.cat([nn.functional.one_hot(a_t, self.n_atom_types + 1),
                       nn.functional.one_hot(c_t, self.n_charges + 1)], -1).to(pos.dtype)  # [n, Ka+1 + Kc+1]
        h = self.node_embedding(torch.cat([h, t.unsqueeze(-1).to(pos.dtype)], -1))         # [n, S]
        # 2. property injection (once)
        if self.property_embedding is not None:
            if value is None:
                raise ValueError("this model is conditional: a property value per molecule is required")
            h = self.property_embedding(h, value.to(pos.dtype), batch)                     # [n, S]
        # 3. edge features of the complete graph
        e = self.edge_embedding(nn.functional.one_hot(e_t, self.n_bond_types + 1).to(pos.dtype))  # [E, Ed]
        # 4. GVP trunk: message passing with position and edge updates
        h, x, e = self.trunk(h, pos, e, edge_index)                                        # [n,S],[n,3],[E,Ed]
        # 5. heads
        x1_hat = remove_mean(x, batch, num_graphs)                                         # [n, 3]
        node_logits = self.node_head(h)                                                    # [n, Ka + Kc]
        upper = edge_index[0] < edge_index[1]                                              # [E]
        bond_logits = self.edge_head(e[upper] + e[reverse[upper]])                         # [E_u, Ke]
        return x1_hat, node_logits[:, :self.n_atom_types], node_logits[:, self.n_atom_types:], bond_logits
