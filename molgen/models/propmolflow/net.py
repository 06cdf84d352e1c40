"""PropMolFlow's endpoint network: from a noisy molecule at time t to the predicted clean molecule.

FlowMol2's CTMC ``EndpointVectorField`` (https://arxiv.org/abs/2411.16644) with PropMolFlow's property injection
(https://arxiv.org/abs/2505.21469, section "property embedding"):

1. node scalars ``h0 = LN(MLP([onehot(a_t) || onehot(c_t) || t]))`` (one-hots include the mask class);
2. ``h0 <- combine(h0, p)`` with the embedded property ``p`` (once, before the first layer);
3. edge features ``e0 = LN(MLP(onehot(e_t)))`` on every directed pair of the complete graph;
4. the GVP trunk (:class:`~molgen.nn.molecule_net.GVPMoleculeNet`) moves atoms and refreshes edges;
5. heads: atom-type and charge logits from the node scalars, bond logits from ``e_ij + e_ji`` (symmetric),
   positions re-centred to zero centre of mass.

:class:`GauntEndpointNet` (``model.backbone=gaunt``) keeps steps 1-3 and the node head and swaps the trunk for
:class:`~molgen.nn.gaunt.GauntBackbone` (docs/gaunt.md, "In the generators").
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.conditioning import PropertyEmbedding
from molgen.generative.gaussian_path import remove_mean
from molgen.nn.gaunt import GauntBackbone
from molgen.nn.molecule_net import GVPMoleculeNet
from molgen.nn.radial import GaussianRBF
from molgen.nn.self_condition import SelfConditionInputs


def _embed(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.SiLU(), nn.Linear(d, d), nn.SiLU(), nn.LayerNorm(d))


class _Inputs(SelfConditionInputs):
    """Steps 1-3 of the module docstring, shared by both trunks (needs node_embedding, edge_embedding,
    property_embedding, n_atom_types, n_charges, n_bond_types on the subclass), and the self-conditioning inputs
    (:class:`~molgen.nn.self_condition.SelfConditionInputs`; the fed-back features are the predicted atom, charge
    and bond probabilities)."""

    def embed_inputs(self, a_t: torch.Tensor, c_t: torch.Tensor, pos: torch.Tensor, t: torch.Tensor,
                     batch: torch.Tensor, e_t: torch.Tensor, value: torch.Tensor | None):
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
        return h, e


class EndpointNet(_Inputs):
    """Predict ``(x1_hat, atom logits, charge logits, bond logits)`` from the state at time t.

    Args:
        n_atom_types, n_charges, n_bond_types: real classes (mask tokens are added here).
        s_dim, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm: see
            :class:`~molgen.nn.molecule_net.GVPMoleculeNet`.
        property_embedding: conditions ``h0`` when given (None: unconditional).
        self_condition: take the previous endpoint prediction as input (``self_cond`` of :meth:`forward`; see
            :class:`~molgen.nn.self_condition.SelfConditionInputs`).

    Shapes:
        a_t ``[n]``, c_t ``[n]`` long tokens (mask = number of classes); pos ``[n, 3]``; t ``[n]`` per atom;
        batch ``[n]``; edge_index ``[2, E]`` complete graph, reverse ``[E]``; e_t ``[E]`` symmetric tokens;
        value ``[B]`` or None; self_cond ``(x1_hat [n, 3], p(a) [n, Ka], p(c) [n, Kc], p(e) [E_upper, Ke])`` or None
        -> x1_hat ``[n, 3]``, atom logits ``[n, n_atom_types]``, charge logits ``[n, n_charges]``,
        bond logits ``[E_upper, n_bond_types]`` for the edges with source < target, in edge order.
    """

    def __init__(self, n_atom_types: int, n_charges: int, n_bond_types: int, s_dim: int = 256, v_dim: int = 16,
                 edge_dim: int = 128, n_layers: int = 8, rbf_dim: int = 32, rbf_max: float = 14.0,
                 n_cp_feats: int = 4, message_norm: float | str = 100.0,
                 property_embedding: PropertyEmbedding | None = None, self_condition: bool = False):
        super().__init__()
        self.n_atom_types, self.n_charges, self.n_bond_types = n_atom_types, n_charges, n_bond_types
        self.node_embedding = _embed(n_atom_types + 1 + n_charges + 1 + 1, s_dim)
        self.edge_embedding = _embed(n_bond_types + 1, edge_dim)
        self.property_embedding = property_embedding
        self.init_self_condition(self_condition, s_dim, edge_dim, n_atom_types + n_charges, n_bond_types)
        self.trunk = GVPMoleculeNet(s_dim, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm)
        self.node_head = nn.Sequential(nn.Linear(s_dim, s_dim), nn.SiLU(), nn.Linear(s_dim, n_atom_types + n_charges))
        self.edge_head = nn.Sequential(nn.Linear(edge_dim, edge_dim), nn.SiLU(), nn.Linear(edge_dim, n_bond_types))

    def forward(self, a_t: torch.Tensor, c_t: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, reverse: torch.Tensor, e_t: torch.Tensor,
                value: torch.Tensor | None = None, num_graphs: int | None = None, self_cond: tuple | None = None):
        h, e = self.embed_inputs(a_t, c_t, pos, t, batch, e_t, value)                     # [n,S], [E,Ed]
        h, e = self.add_self_condition(h, e, pos, batch, edge_index, reverse, self_cond)
        # 4. GVP trunk: message passing with position and edge updates
        h, x, e = self.trunk(h, pos, e, edge_index)                                        # [n,S],[n,3],[E,Ed]
        # 5. heads
        x1_hat = remove_mean(x, batch, num_graphs)                                         # [n, 3]
        node_logits = self.node_head(h)                                                    # [n, Ka + Kc]
        upper = edge_index[0] < edge_index[1]                                              # [E]
        bond_logits = self.edge_head(e[upper] + e[reverse[upper]])                         # [E_u, Ke]
        return x1_hat, node_logits[:, :self.n_atom_types], node_logits[:, self.n_atom_types:], bond_logits


class GauntEndpointNet(_Inputs):
    r""":class:`EndpointNet` with a :class:`~molgen.nn.gaunt.GauntBackbone` trunk (``model.backbone=gaunt``).

    Steps 1-3 (node scalars, property, edge embedding ``e0``) are :class:`EndpointNet`'s. The trunk takes the
    node scalars ``h0``, the positions ``x_t`` and ``e0`` as edge attributes on the complete graph, and returns
    invariant node features ``h`` and one equivariant vector ``v`` per atom. Heads:

    * positions: :math:`\hat x_1 = x_t + v`, re-centred (rotates with the input, invariant to translations);
    * atom-type and charge logits: the same MLP of ``h`` as :class:`EndpointNet`;
    * bonds (the trunk has no edge outputs): an MLP of the symmetric invariant pair features
      :math:`[h_i + h_j,\ h_i \odot h_j,\ e0_{ij},\ \mathrm{RBF}(|\hat x_{1,i} - \hat x_{1,j}|)]` (distances of the
      predicted clean geometry, 0-4 Angstrom).

    SE(3)-equivariant, not E(3): the backbone's cross-product vector path is parity-odd (docs/gaunt.md).

    Args:
        n_atom_types, n_charges, n_bond_types: real classes (mask tokens are added here).
        s_dim: node scalar width (input and output of the trunk); edge_dim: width of ``e0``.
        rbf_dim, rbf_max: the trunk's radial basis size and cutoff (Angstrom).
        lmax, hidden, n_layers, correlation: :class:`~molgen.nn.gaunt.GauntBackbone`'s ``lmax``,
            ``hidden_channels``, ``num_layers``, ``correlation``.
        avg_neighbors: divisor of summed messages (QM9 molecules with H have ~18 atoms: ~17 neighbours).
        property_embedding: conditions ``h0`` when given (None: unconditional).
        self_condition: as :class:`EndpointNet`.

    Shapes: as :class:`EndpointNet`.
    """

    def __init__(self, n_atom_types: int, n_charges: int, n_bond_types: int, s_dim: int = 64, edge_dim: int = 32,
                 rbf_dim: int = 16, rbf_max: float = 14.0, lmax: int = 2, hidden: int = 32, n_layers: int = 3,
                 correlation: int = 2, avg_neighbors: float = 16.0,
                 property_embedding: PropertyEmbedding | None = None, n_pair_rbf: int = 16,
                 self_condition: bool = False):
        super().__init__()
        self.n_atom_types, self.n_charges, self.n_bond_types = n_atom_types, n_charges, n_bond_types
        self.node_embedding = _embed(n_atom_types + 1 + n_charges + 1 + 1, s_dim)
        self.edge_embedding = _embed(n_bond_types + 1, edge_dim)
        self.property_embedding = property_embedding
        self.init_self_condition(self_condition, s_dim, edge_dim, n_atom_types + n_charges, n_bond_types)
        self.trunk = GauntBackbone(s_dim, s_dim, hidden_channels=hidden, lmax=lmax, num_layers=n_layers,
                                   num_vectors=1, edge_dim=edge_dim, cutoff=rbf_max, num_radial=rbf_dim,
                                   correlation=correlation, avg_neighbors=avg_neighbors)
        self.node_head = nn.Sequential(nn.Linear(s_dim, s_dim), nn.SiLU(), nn.Linear(s_dim, n_atom_types + n_charges))
        self.pair_rbf = GaussianRBF(n_pair_rbf, 0.0, 4.0)
        self.edge_head = nn.Sequential(nn.Linear(2 * s_dim + edge_dim + n_pair_rbf, edge_dim), nn.SiLU(),
                                       nn.Linear(edge_dim, edge_dim), nn.SiLU(), nn.Linear(edge_dim, n_bond_types))

    def forward(self, a_t: torch.Tensor, c_t: torch.Tensor, pos: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, reverse: torch.Tensor, e_t: torch.Tensor,
                value: torch.Tensor | None = None, num_graphs: int | None = None, self_cond: tuple | None = None):
        h, e = self.embed_inputs(a_t, c_t, pos, t, batch, e_t, value)                     # [n,S], [E,Ed]
        h, e = self.add_self_condition(h, e, pos, batch, edge_index, reverse, self_cond)
        # 4. Gaunt trunk on the complete graph: invariant features and one vector per atom
        h, vec = self.trunk(h, pos, edge_index, e, batch)                                  # [n,S], [n,1,3]
        # 5. heads
        x1_hat = remove_mean(pos + vec[:, 0], batch, num_graphs)                           # [n, 3]
        node_logits = self.node_head(h)                                                    # [n, Ka + Kc]
        upper = edge_index[0] < edge_index[1]                                              # [E]
        i, j = edge_index[:, upper]                                                        # [E_u] each
        d = (x1_hat[i] - x1_hat[j]).norm(dim=-1)                                          # [E_u]
        # e0 is symmetric (e_t is), so every feature is symmetric in i, j
        pair = torch.cat([h[i] + h[j], h[i] * h[j], e[upper], self.pair_rbf(d)], -1)      # [E_u, 2S+Ed+R]
        bond_logits = self.edge_head(pair)                                                 # [E_u, Ke]
        return x1_hat, node_logits[:, :self.n_atom_types], node_logits[:, self.n_atom_types:], bond_logits
