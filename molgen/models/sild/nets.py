r"""The networks of SiLD: equivariant encoder and decoder, the bond head, and the latent denoiser.

All four work on PyG-style concatenated molecules (``batch [n]``) over the complete graph of each molecule
(the edge list of :func:`molgen.nn.molecule_net.complete_graph`) and are built on :class:`molgen.nn.egnn.EGNN`, as GeoLDM
(Xu et al. 2023, https://arxiv.org/abs/2305.01140) builds its autoencoder and denoiser on EDM's EGNN.

:class:`GauntLatentEncoder` (``model.encoder=gaunt``) is the encoder on :class:`molgen.nn.gaunt.GauntBackbone`
instead (higher-order irreps; SE(3)- not E(3)-equivariant, see docs/gaunt.md).

Symmetries (tested in tests/models/test_sild.py and tests/models/test_gaunt_generators.py): positions out of the encoder, decoder and denoiser rotate and
translate with the input positions; every scalar output (latent features, logits, noise on features, bond
logits) is invariant.
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.generative.gaussian_path import remove_mean
from molgen.nn.egnn import EGNN
from molgen.nn.gaunt import GauntBackbone
from molgen.nn.graph import symmetric_edges, upper_edges
from molgen.nn.molecule_net import GVPMoleculeNet
from molgen.nn.radial import GaussianRBF
from molgen.nn.self_condition import SelfConditionInputs


class LatentEncoder(nn.Module):
    r"""GeoLDM's encoder: an EGNN from atoms to a Gaussian posterior over per-atom latents.

    :math:`q(z_x, z_h \mid x, h) = \mathcal N(\mu_x, \sigma_x^2 I)\,\mathcal N(\mu_h, \mathrm{diag}\,\sigma_h^2)`
    with equivariant :math:`\mu_x` (zero centre of mass) and invariant :math:`\mu_h, \sigma`.

    Args:
        in_dim: width of the atom features (one-hot types and charges).
        latent_dim: ``k``, invariant latent width per atom (GeoLDM: 1-2).
        hidden, n_layers: EGNN size (GeoLDM: 1 layer).

    Shapes:
        feats ``[n, in_dim]``, pos ``[n, 3]`` -> mu_x ``[n, 3]``, mu_h ``[n, k]``, log_sigma_x ``[n, 1]``,
        log_sigma_h ``[n, k]``.
    """

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 64, n_layers: int = 1):
        super().__init__()
        self.latent_dim = latent_dim
        self.egnn = EGNN(in_dim, 2 * latent_dim + 1, hidden, n_layers)

    def forward(self, feats: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, x = self.egnn(feats, pos, edge_index)
        k = self.latent_dim
        mu_h, log_sigma_h, log_sigma_x = out[:, :k], out[:, k:2 * k], out[:, 2 * k:]
        return remove_mean(x, batch, num_graphs), mu_h, log_sigma_x.clamp(-8, 2), log_sigma_h.clamp(-8, 2)


class GauntLatentEncoder(nn.Module):
    r"""The posterior of :class:`LatentEncoder` from a :class:`~molgen.nn.gaunt.GauntBackbone` (``encoder=gaunt``).

    :math:`\mu_x = x + v` with the backbone's equivariant vector ``v`` per atom (then zero centre of mass);
    :math:`\mu_h, \log\sigma_h, \log\sigma_x` from its invariant output. SE(3)-equivariant (the backbone's
    cross-product vector path is parity-odd, so a mirror image is not a symmetry, unlike the EGNN encoder).

    Args:
        in_dim: width of the atom features (one-hot types and charges).
        latent_dim: ``k``, invariant latent width per atom.
        lmax, hidden, n_layers, correlation: the backbone's ``lmax``, ``hidden_channels``, ``num_layers``,
            ``correlation``.
        cutoff: radial envelope (Angstrom) on the complete graph (QM9 molecules span up to ~10 A).
        avg_neighbors: divisor of summed messages (~17 neighbours in QM9 molecules with H).

    Shapes: as :class:`LatentEncoder`.
    """

    def __init__(self, in_dim: int, latent_dim: int, lmax: int = 2, hidden: int = 32, n_layers: int = 2,
                 correlation: int = 2, cutoff: float = 10.0, avg_neighbors: float = 16.0):
        super().__init__()
        self.latent_dim = latent_dim
        self.backbone = GauntBackbone(in_dim, 2 * latent_dim + 1, hidden_channels=hidden, lmax=lmax,
                                      num_layers=n_layers, num_vectors=1, cutoff=cutoff, correlation=correlation,
                                      avg_neighbors=avg_neighbors)

    def forward(self, feats: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, vec = self.backbone(feats, pos, edge_index, None, batch)             # [n, 2k+1], [n, 1, 3]
        k = self.latent_dim
        mu_h, log_sigma_h, log_sigma_x = out[:, :k], out[:, k:2 * k], out[:, 2 * k:]
        mu_x = remove_mean(pos + vec[:, 0], batch, num_graphs)
        return mu_x, mu_h, log_sigma_x.clamp(-8, 2), log_sigma_h.clamp(-8, 2)


class LatentDecoder(nn.Module):
    """GeoLDM's decoder: an EGNN from latents back to positions, atom-type logits and charge logits.

    Shapes:
        z_x ``[n, 3]``, z_h ``[n, k]`` -> pos ``[n, 3]`` (zero mean), type_logits ``[n, n_types]``,
        charge_logits ``[n, n_charges]``.
    """

    def __init__(self, latent_dim: int, n_types: int, n_charges: int, hidden: int = 64, n_layers: int = 4):
        super().__init__()
        self.n_types = n_types
        self.egnn = EGNN(latent_dim, n_types + n_charges, hidden, n_layers)

    def forward(self, z_x: torch.Tensor, z_h: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, x = self.egnn(z_h, z_x, edge_index)
        return remove_mean(x, batch, num_graphs), out[:, :self.n_types], out[:, self.n_types:]


class BondHead(nn.Module):
    r"""Bond orders from a molecule's atoms and geometry (invariant message passing, then an edge classifier).

    :math:`p(b_{ij}) = \mathrm{softmax}\,\phi_b(h_i + h_j,\ h_i \odot h_j,\ \mathrm{RBF}(d_{ij}))`, symmetric in
    ``i, j`` by construction; classes are 0 (none) and :class:`~molgen.data.molecule.BondOrder` 1..4.

    Shapes:
        feats ``[n, in_dim]``, pos ``[n, 3]``, edge_index ``[2, E]`` -> ``[E, n_bond_types]``.
    """

    def __init__(self, in_dim: int, n_bond_types: int = 5, hidden: int = 64, n_layers: int = 2, n_rbf: int = 16):
        super().__init__()
        self.egnn = EGNN(in_dim, hidden, hidden, n_layers, update_coords=False)
        self.rbf = GaussianRBF(n_rbf, 0.0, 4.0)
        self.edge = nn.Sequential(nn.Linear(2 * hidden + n_rbf, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, n_bond_types))

    def forward(self, feats: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h, _ = self.egnn(feats, pos, edge_index)
        i, j = edge_index
        d = (pos[i] - pos[j]).norm(dim=-1)
        return self.edge(torch.cat([h[i] + h[j], h[i] * h[j], self.rbf(d)], -1))


class EquivariantDenoiser(nn.Module):
    r"""EDM's noise-prediction network :math:`\hat\epsilon(z_t, t)` on ``(x, h)``, optionally property-conditioned.

    The time (and, through :class:`molgen.conditioning.PropertyEmbedding`, the target property) enters the node
    scalars before the first layer; :math:`\hat\epsilon_x = x_{out} - x_t` with the centre of mass removed.

    Args:
        feat_dim: ``k``, width of ``h``.
        hidden, n_layers: EGNN size (EDM/GeoLDM: 256, 9).
        property_embedding: a :class:`~molgen.conditioning.PropertyEmbedding` of width ``hidden``, or None.

    Shapes:
        x_t ``[n, 3]``, h_t ``[n, k]``, t ``[B]``, context ``[B]`` (property value, user units) or None
        -> eps_x ``[n, 3]``, eps_h ``[n, k]``.
    """

    def __init__(self, feat_dim: int, hidden: int = 128, n_layers: int = 6,
                 property_embedding: nn.Module | None = None):
        super().__init__()
        self.input = nn.Linear(feat_dim + 1, hidden)
        self.property_embedding = property_embedding
        self.egnn = EGNN(hidden, feat_dim, hidden, n_layers)

    def forward(self, x_t: torch.Tensor, h_t: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                num_graphs: int, context: torch.Tensor | None, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = self.input(torch.cat([h_t, t[batch].unsqueeze(-1)], -1))            # [n, hidden]
        if self.property_embedding is not None:
            if context is None:
                raise ValueError("this denoiser is property-conditioned: it needs a context value per molecule")
            h0 = self.property_embedding(h0, context, batch)
        eps_h, x_out = self.egnn(h0, x_t, edge_index)
        return remove_mean(x_out - x_t, batch, num_graphs), eps_h


# ------------------------------------------------------------------------------------------ bonds in the latent
def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, d_out))


class EdgeLatentEncoder(nn.Module):
    r"""A Gaussian posterior over ``d_e`` invariant latent scalars per atom pair, from the pair's bond order and
    the two atoms' latent means: :math:`q(z_e \mid b_{ij}) = \mathcal N(\mu_e, \mathrm{diag}\,\sigma_e^2)`,
    :math:`[\mu_e, \log\sigma_e] = \phi(\mathrm{onehot}(b_{ij}),\ \mu_{h,i} + \mu_{h,j},\ \mu_{h,i}\odot\mu_{h,j})`
    (symmetric in ``i, j``). Puts the bonds into SiLD's latent, so they are generated with the atoms instead of
    being read off a decoded geometry (issue #15).

    Shapes:
        bond ``[E_u]`` long (0 = none), mu_h ``[n, k]``, pairs ``[2, E_u]`` -> mu_e, log_sigma_e ``[E_u, d_e]``.
    """

    def __init__(self, n_bond_types: int, latent_dim: int, edge_latent_dim: int, hidden: int = 64):
        super().__init__()
        self.n_bond_types = n_bond_types
        self.mlp = _mlp(n_bond_types + 2 * latent_dim, hidden, 2 * edge_latent_dim)

    def forward(self, bond: torch.Tensor, mu_h: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = pairs
        out = self.mlp(torch.cat([nn.functional.one_hot(bond, self.n_bond_types).to(mu_h.dtype),
                                  mu_h[i] + mu_h[j], mu_h[i] * mu_h[j]], -1))
        mu, log_sigma = out.chunk(2, -1)
        return mu, log_sigma.clamp(-8, 2)


class BondDecoder(nn.Module):
    r"""Bond-order logits of every atom pair from its latents: :math:`\phi(z_{e,ij},\ z_{h,i} + z_{h,j},\
    z_{h,i}\odot z_{h,j},\ \mathrm{RBF}(|z_{x,i} - z_{x,j}|))`, invariant and symmetric in ``i, j``.

    Shapes:
        z_e ``[E_u, d_e]``, z_h ``[n, k]``, z_x ``[n, 3]``, pairs ``[2, E_u]`` -> ``[E_u, n_bond_types]``.
    """

    def __init__(self, latent_dim: int, edge_latent_dim: int, n_bond_types: int, hidden: int = 64, n_rbf: int = 16):
        super().__init__()
        self.rbf = GaussianRBF(n_rbf, 0.0, 4.0)
        self.mlp = _mlp(edge_latent_dim + 2 * latent_dim + n_rbf, hidden, n_bond_types)

    def forward(self, z_e: torch.Tensor, z_h: torch.Tensor, z_x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        i, j = pairs
        d = (z_x[i] - z_x[j]).norm(dim=-1)
        return self.mlp(torch.cat([z_e, z_h[i] + z_h[j], z_h[i] * z_h[j], self.rbf(d)], -1))


class GVPLatentDenoiser(SelfConditionInputs):
    r"""The flow prior's endpoint network on SiLD's latents, on PropMolFlow's geometry-complete GVP trunk
    (:class:`~molgen.nn.molecule_net.GVPMoleculeNet`, FlowMol's), with optional edge latents.

    Inputs: node scalars from ``[z_h, t]`` (and the property, once), edge features from ``[z_e, t]`` on both
    directions of each pair (or ``t`` alone without edge latents), positions ``z_x``. The trunk moves the atoms
    and refreshes the edges; outputs: the endpoints, the moved positions (centred) and the node and pair latents
    from heads on the node scalars and on ``e_ij + e_ji`` (symmetric), as
    :meth:`molgen.models.sild.model.SiLD.predict_endpoint` returns them. Equivariant positions, invariant features.

    Args:
        feat_dim: ``k`` (node latent width); edge_feat_dim: ``d_e`` (0: no edge latents).
        hidden, n_layers, v_dim, edge_dim, rbf_dim, rbf_max, n_cp_feats, message_norm: the trunk's
            ``s_dim``, ``n_layers``, ``v_dim``, ``edge_dim``, ... (PropMolFlow's CPU sizes: 64, 4, 8, 32).
        property_embedding: a :class:`~molgen.conditioning.PropertyEmbedding` of width ``hidden``, or None.
        self_condition: take the previous endpoint prediction ``self_cond = (x1_hat, h1_hat, e1_hat)`` as input
            (:class:`~molgen.nn.self_condition.SelfConditionInputs`, as PropMolFlow's networks; ``e1_hat`` of width
            0 without edge latents).

    Shapes:
        x_t ``[n, 3]``, h_t ``[n, k]``, t ``[B]`` (flow time), context ``[B]`` or None, edge_index ``[2, E]``,
        reverse ``[E]``, e_t ``[E_u, d_e]`` or None, self_cond ``([n, 3], [n, k], [E_u, d_e])`` or None
        -> x1 ``[n, 3]``, h1 ``[n, k]``, e1 ``[E_u, d_e]`` or None.
    """

    def __init__(self, feat_dim: int, edge_feat_dim: int = 0, hidden: int = 64, n_layers: int = 4, v_dim: int = 8,
                 edge_dim: int = 32, rbf_dim: int = 16, rbf_max: float = 14.0, n_cp_feats: int = 4,
                 message_norm: float | str = 100.0, property_embedding: nn.Module | None = None,
                 self_condition: bool = False):
        super().__init__()
        self.edge_feat_dim = edge_feat_dim
        self.node_in = nn.Sequential(nn.Linear(feat_dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU(), nn.LayerNorm(hidden))
        self.edge_in = nn.Sequential(nn.Linear(edge_feat_dim + 1, edge_dim), nn.SiLU(), nn.Linear(edge_dim, edge_dim),
                                     nn.SiLU(), nn.LayerNorm(edge_dim))
        self.property_embedding = property_embedding
        self.init_self_condition(self_condition, hidden, edge_dim, feat_dim, edge_feat_dim)
        self.trunk = GVPMoleculeNet(hidden, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm)
        self.node_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, feat_dim))
        self.edge_out = (nn.Sequential(nn.Linear(edge_dim, edge_dim), nn.SiLU(), nn.Linear(edge_dim, edge_feat_dim))
                         if edge_feat_dim else None)

    def forward(self, x_t: torch.Tensor, h_t: torch.Tensor, t: torch.Tensor, batch: torch.Tensor, num_graphs: int,
                context: torch.Tensor | None, edge_index: torch.Tensor, reverse: torch.Tensor,
                e_t: torch.Tensor | None = None,
                self_cond: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        t_node = t[batch].unsqueeze(-1).to(x_t.dtype)                                # [n, 1]
        h = self.node_in(torch.cat([h_t, t_node], -1))                                # [n, S]
        if self.property_embedding is not None:
            if context is None:
                raise ValueError("this denoiser is property-conditioned: it needs a context value per molecule")
            h = self.property_embedding(h, context, batch)
        t_edge = t_node[edge_index[0]]                                                # [E, 1]
        if self.edge_feat_dim:
            if e_t is None:
                raise ValueError("this denoiser models edge latents: e_t is required")
            e = self.edge_in(torch.cat([symmetric_edges(e_t, edge_index, reverse), t_edge], -1))   # [E, Ed]
        else:
            e = self.edge_in(t_edge)
        h, e = self.add_self_condition(h, e, x_t, batch, edge_index, reverse, self_cond)
        h, x, e = self.trunk(h, x_t, e, edge_index)                                   # [n,S], [n,3], [E,Ed]
        res_e = None
        if self.edge_out is not None:
            upper = upper_edges(edge_index)
            res_e = self.edge_out(e[upper] + e[reverse[upper]])                       # [E_u, d_e]
        return remove_mean(x, batch, num_graphs), self.node_out(h), res_e
