"""GraphMVP: 2D-3D multi-view pretraining of a GIN by a SchNet (Liu et al., ICLR 2022, arXiv:2110.07728).

The two views of one molecule, the 2D graph ``G`` (encoded by :class:`~molgen.nn.gin.GIN`, mean-pooled to
``h_2D``) and a 3D conformer (encoded by :class:`~molgen.nn.schnet.SchNetEncoder` to ``h_3D``), teach each
other through

* **EBM-NCE** (contrastive, :func:`ebm_nce`): with L2-normalised ``x, y`` and temperature ``T``,
  ``L = 1/2 [BCE(<x_i, y_i>/T, 1) + BCE(<x_i, y_{i+1}>/T, 0)]`` (one negative: the next molecule of the
  batch), averaged over the 2D->3D and 3D->2D directions;
* **VRR** (generative, :class:`VariationalReconstruction`): ``z ~ N(mu(x), sigma(x)^2)`` decoded to the other
  view's (detached) representation, ``L = ||dec(z) - sg(y)||^2 + beta KL(N(mu, sigma^2) || N(0, I))``, both
  directions averaged;
* optionally a 2D self-supervised term: **AttrMask** (GraphMVP-G, :class:`AttrMaskHead`) or **ContextPred**
  (GraphMVP-C, :class:`ContextPredHead`) from Hu et al. 2020.

Total: ``alpha_1 EBM-NCE + alpha_2 VRR (+ alpha_3 SSL)``, paper weights alpha_1 = alpha_2 = 1, beta = 2,
T = 0.2 (GraphMVP, -C) / 0.05 (-G), alpha_3 = 1 (AttrMask) / 0.1 (ContextPred). SchNet and the 3D->2D VRR
learn at ``lr * lr_3d_scale`` (0.1).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.utils import scatter, subgraph

from molgen.data.moleculenet import GIN_FEATURES, MASK_ATOM_INDEX
from molgen.nn.gin import GIN
from molgen.nn.schnet import SchNetEncoder


# --------------------------------------------------------------------------------------------- losses
def ebm_nce(x: torch.Tensor, y: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """EBM-NCE of GraphMVP with one negative per positive, symmetrised over both directions.

    Shapes:
        x ``[B, d]`` (2D view), y ``[B, d]`` (3D view) -> scalar. ``B >= 2`` (the negative is another molecule).
    """
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)

    def one_way(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pos = (a * b).sum(-1) / temperature
        neg = (a * b.roll(1, dims=0)).sum(-1) / temperature
        return 0.5 * (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                      + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))

    return 0.5 * (one_way(x, y) + one_way(y, x))


class VariationalReconstruction(nn.Module):
    """VRR, one direction: encode ``x`` to ``N(mu, sigma^2)``, decode a sample to the target view ``y``.

    Args:
        emb_dim: representation size of both views.
        beta: weight of the KL term (2 in the paper).

    Shapes:
        x ``[B, d]``, y ``[B, d]`` -> scalar loss (``y`` is detached: the target view gets no gradient).
    """

    def __init__(self, emb_dim: int, beta: float = 2.0):
        super().__init__()
        self.beta = beta
        self.mu = nn.Linear(emb_dim, emb_dim)
        self.log_var = nn.Linear(emb_dim, emb_dim)
        self.decoder = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.BatchNorm1d(emb_dim), nn.ReLU(),
                                     nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.mu(x), self.log_var(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        recon = F.mse_loss(self.decoder(z), y.detach())
        kl = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)).mean()
        return recon + self.beta * kl


def mask_atoms(x: torch.Tensor, batch: torch.Tensor, rate: float, mask_index: int = MASK_ATOM_INDEX,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hu et al.'s AttrMask corruption: ``int(n * rate + 1)`` random atoms per molecule get the mask token
    ``mask_index`` (the featurizer's, :data:`molgen.data.moleculenet.MASK_ATOM_INDEX`).

    Returns:
        (masked ``x [N, 2]``, masked atom indices ``[M]``).
    """
    counts = torch.bincount(batch)
    start = torch.cumsum(counts, 0) - counts
    picked = []
    for g, (s, n) in enumerate(zip(start.tolist(), counts.tolist())):
        k = min(n, int(n * rate + 1))
        picked.append(s + torch.randperm(n, generator=generator)[:k])
    idx = torch.cat(picked).to(x.device)
    x = x.clone()
    x[idx, 0] = mask_index
    x[idx, 1] = 0
    return x, idx


class AttrMaskHead(nn.Module):
    """AttrMask (Hu et al. 2020): predict the atom type of masked atoms from the GIN's node representations."""

    def __init__(self, emb_dim: int, mask_index: int, rate: float = 0.15):
        super().__init__()
        self.rate, self.mask_index = rate, mask_index
        self.classifier = nn.Linear(emb_dim, mask_index)  # every real atom type sits below the mask token

    def forward(self, gin: GIN, data) -> torch.Tensor:
        x, idx = mask_atoms(data.x, data.batch, self.rate, self.mask_index)
        h = gin(x, data.edge_index, data.edge_attr)
        return F.cross_entropy(self.classifier(h[idx]), data.x[idx, 0])


class ContextPredHead(nn.Module):
    """ContextPred (Hu et al. 2020), "CBOW" form with one negative.

    For a random centre atom per molecule: the substructure is its ``k``-hop neighbourhood (``k`` = the GIN's
    layers) encoded by the main GIN (the centre's representation); the context is the ring of atoms at
    distance ``(k - 1, k + 2]``, encoded by a separate ``3``-layer GIN and averaged over the anchor atoms
    (the ring's atoms also inside the substructure). A (substructure, context) pair of the same molecule is
    a positive, the next molecule's context a negative. Molecules with no anchor atom are skipped.
    """

    def __init__(self, emb_dim: int, num_layers: int, features: dict | None = None):
        super().__init__()
        self.k, self.r1, self.r2 = num_layers, num_layers - 1, num_layers + 2
        self.context_gin = GIN(num_layers=self.r2 - self.r1, emb_dim=emb_dim, **(features or GIN_FEATURES))

    def _distances(self, data, centres: torch.Tensor) -> torch.Tensor:
        """Hop distance ``[N]`` of every atom from its own molecule's centre (inf if unreachable)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import shortest_path

        n = data.num_nodes
        ei = data.edge_index.cpu().numpy()
        adj = coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(n, n)).tocsr()
        d = shortest_path(adj, unweighted=True, indices=centres.cpu().numpy())  # [B, N]
        own = d[data.batch.cpu().numpy(), np.arange(n)]
        return torch.from_numpy(own).to(data.x.device)

    def forward(self, gin: GIN, data) -> torch.Tensor:
        batch = data.batch
        counts = torch.bincount(batch)
        start = torch.cumsum(counts, 0) - counts
        centres = start + (torch.rand(len(counts), device=counts.device) * counts).long()
        dist = self._distances(data, centres)
        in_sub, in_ctx = dist <= self.k, (dist > self.r1) & (dist <= self.r2)
        anchor = in_ctx & in_sub
        has_anchor = torch.zeros(len(counts), dtype=torch.bool, device=batch.device)
        has_anchor[batch[anchor]] = True
        if has_anchor.sum() < 2:
            return data.x.new_zeros((), dtype=torch.float)
        # substructure: main GIN on the k-hop subgraph, centre atom's representation
        sub_nodes = in_sub.nonzero().squeeze(1)
        ei, ea = subgraph(sub_nodes, data.edge_index, data.edge_attr, relabel_nodes=True, num_nodes=data.num_nodes)
        h_sub = gin(data.x[sub_nodes], ei, ea)
        pos_in_sub = torch.full((data.num_nodes,), -1, dtype=torch.long, device=batch.device)
        pos_in_sub[sub_nodes] = torch.arange(len(sub_nodes), device=batch.device)
        sub_repr = h_sub[pos_in_sub[centres]]  # [B, d]
        # context: context GIN on the ring, mean over anchor atoms
        ctx_nodes = in_ctx.nonzero().squeeze(1)
        ei, ea = subgraph(ctx_nodes, data.edge_index, data.edge_attr, relabel_nodes=True, num_nodes=data.num_nodes)
        h_ctx = self.context_gin(data.x[ctx_nodes], ei, ea)
        is_anchor = anchor[ctx_nodes]
        ctx_repr = scatter(h_ctx[is_anchor], batch[ctx_nodes][is_anchor], dim=0, dim_size=len(counts), reduce="mean")
        sub_repr, ctx_repr = sub_repr[has_anchor], ctx_repr[has_anchor]
        pos = (sub_repr * ctx_repr).sum(-1)
        neg = (sub_repr * ctx_repr.roll(1, dims=0)).sum(-1)
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))


# --------------------------------------------------------------------------------------------- module
SSL_2D = {None: None, "none": None, "attr_mask": "AttrMask (GraphMVP-G)", "context_pred": "ContextPred (GraphMVP-C)"}


class GraphMVPPretrainer(pl.LightningModule):
    """GraphMVP pretraining of a GIN with a SchNet teacher/student; logs ``train/loss`` and each term.

    Args:
        num_layers, emb_dim: the GIN (5, 300 in the paper); SchNet's hidden size is ``emb_dim`` too.
        schnet_filters, schnet_interactions, schnet_gaussians, schnet_cutoff: SchNet (128, 6, 51, 10 Angstrom).
        temperature: EBM-NCE temperature (0.2; 0.05 for GraphMVP-G).
        alpha_contrastive, alpha_generative: weights of EBM-NCE and VRR (1, 1).
        beta: KL weight inside VRR (2).
        ssl_2d: None, ``"attr_mask"`` (GraphMVP-G) or ``"context_pred"`` (GraphMVP-C).
        alpha_ssl: weight of the 2D SSL term (1 for AttrMask, 0.1 for ContextPred).
        mask_rate: AttrMask's masking rate (0.15).
        lr: Adam learning rate of the GIN and 2D->3D VRR (1e-3); ``lr_3d_scale`` multiplies it for SchNet and
            the 3D->2D VRR (0.1).

    Batches are PyG batches of :mod:`molgen.data.conformers` pairs (``x, edge_index, edge_attr, z, pos``).
    """

    def __init__(self, num_layers: int = 5, emb_dim: int = 300, schnet_filters: int = 128,
                 schnet_interactions: int = 6, schnet_gaussians: int = 51, schnet_cutoff: float = 10.0,
                 temperature: float = 0.2, alpha_contrastive: float = 1.0, alpha_generative: float = 1.0,
                 beta: float = 2.0, ssl_2d: str | None = None, alpha_ssl: float = 1.0, mask_rate: float = 0.15,
                 lr: float = 1e-3, lr_3d_scale: float = 0.1, weight_decay: float = 0.0):
        super().__init__()
        if ssl_2d not in SSL_2D:
            raise ValueError(f"ssl_2d={ssl_2d!r}: choose from none, attr_mask, context_pred")
        self.save_hyperparameters()
        self.gin = GIN(num_layers, emb_dim, dropout=0.0, **GIN_FEATURES)
        self.schnet = SchNetEncoder(emb_dim, emb_dim, schnet_filters, schnet_interactions, schnet_gaussians,
                                    schnet_cutoff)
        self.vrr_2d_to_3d = VariationalReconstruction(emb_dim, beta)
        self.vrr_3d_to_2d = VariationalReconstruction(emb_dim, beta)
        ssl = None if ssl_2d in (None, "none") else ssl_2d
        self.ssl_head: nn.Module | None = (AttrMaskHead(emb_dim, MASK_ATOM_INDEX, mask_rate) if ssl == "attr_mask" else
                                           ContextPredHead(emb_dim, num_layers, GIN_FEATURES) if ssl == "context_pred" else None)

    def losses(self, data) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (``loss`` is the weighted total)."""
        hp = self.hparams
        h2d = self.gin.embed_graph(data)  # [B, d]
        h3d = self.schnet(data.z, data.pos, data.batch)  # [B, d]
        out = {"ebm_nce": ebm_nce(h2d, h3d, hp.temperature),
               "vrr": 0.5 * (self.vrr_2d_to_3d(h2d, h3d) + self.vrr_3d_to_2d(h3d, h2d))}
        total = hp.alpha_contrastive * out["ebm_nce"] + hp.alpha_generative * out["vrr"]
        if self.ssl_head is not None:
            out[hp.ssl_2d] = self.ssl_head(self.gin, data)
            total = total + hp.alpha_ssl * out[hp.ssl_2d]
        out["loss"] = total
        return out

    def training_step(self, data, batch_idx: int) -> torch.Tensor:
        out = self.losses(data)
        for k, v in out.items():
            self.log(f"train/{k}", v, batch_size=int(data.num_graphs), prog_bar=k == "loss", on_epoch=True,
                     on_step=False)
        return out["loss"]

    def validation_step(self, data, batch_idx: int) -> None:
        out = self.losses(data)
        for k, v in out.items():
            self.log(f"val/{k}", v, batch_size=int(data.num_graphs))

    def configure_optimizers(self):
        hp = self.hparams
        slow = list(self.schnet.parameters()) + list(self.vrr_3d_to_2d.parameters())
        slow_ids = {id(p) for p in slow}
        fast = [p for p in self.parameters() if id(p) not in slow_ids]
        return torch.optim.Adam([{"params": fast, "lr": hp.lr}, {"params": slow, "lr": hp.lr * hp.lr_3d_scale}],
                                lr=hp.lr, weight_decay=hp.weight_decay)

    def model_args(self) -> dict[str, Any]:
        """Plain-dict constructor arguments (weights-only safe) that rebuild this module."""
        return {k: (v if v is None or isinstance(v, (int, float, str, bool)) else str(v))
                for k, v in dict(self.hparams).items()}
