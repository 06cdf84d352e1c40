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
from molgen.nn.radial import GaussianRBF


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
