"""Self-conditioning inputs for endpoint networks on molecules (FlowMol3, https://arxiv.org/abs/2508.12629).

A flow model that predicts the clean endpoint ``z1_hat`` can take its own previous prediction as an extra input:
in training, half of the batches first predict without gradients and feed that prediction back; in sampling,
every step feeds its prediction into the next at no extra network cost. :class:`SelfConditionInputs` adds the
fed-back prediction as residuals on the initial node and edge features of a message-passing trunk:

* node residual: MLP of ``[h0, node features of the prediction, RBF(|x_t - x1_hat|)]`` (both centred, so it is
  translation invariant);
* edge residual: MLP of ``[e0, edge features of the prediction, RBF(|x1_hat_i - x1_hat_j|),
  |x1_hat_i - x1_hat_j| - |x_i - x_j|]`` on each pair ``i < j``, written to both directions (symmetric).

Every input is invariant, so an equivariant trunk stays equivariant. The last layers start at zero: a network
without self-conditioning, or one warm-started from such a network, computes exactly what it did. Used by
PropMolFlow's endpoint networks (class probabilities as features) and SiLD's GVP latent denoiser (latents).
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.generative.gaussian_path import remove_mean
from molgen.nn.radial import GaussianRBF


class SelfConditionInputs(nn.Module):
    """Mixin for endpoint networks: :meth:`init_self_condition` in ``__init__``, :meth:`add_self_condition` on the
    initial features ``h0 [n, S]``, ``e0 [E, Ed]`` before the trunk (parameters ``sc_rbf``, ``sc_node``,
    ``sc_edge`` on the network itself)."""

    def init_self_condition(self, enabled: bool, s_dim: int, edge_dim: int, node_feat_dim: int, edge_feat_dim: int,
                            n_rbf: int = 16, rbf_max: float = 6.0) -> None:
        """Create the residual MLPs when ``enabled``: ``node_feat_dim`` / ``edge_feat_dim`` = widths of the
        prediction's node features (all of them concatenated) and edge features (0: distances only)."""
        self.self_condition = bool(enabled)
        if not enabled:
            return
        self.sc_dims = (int(node_feat_dim), int(edge_feat_dim))
        self.sc_rbf = GaussianRBF(n_rbf, 0.0, rbf_max)
        self.sc_node = nn.Sequential(nn.Linear(s_dim + node_feat_dim + n_rbf, s_dim), nn.SiLU(),
                                     nn.Linear(s_dim, s_dim))
        self.sc_edge = nn.Sequential(nn.Linear(edge_dim + edge_feat_dim + n_rbf + 1, edge_dim), nn.SiLU(),
                                     nn.Linear(edge_dim, edge_dim))
        for mlp in (self.sc_node, self.sc_edge):
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    def add_self_condition(self, h: torch.Tensor, e: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor,
                           edge_index: torch.Tensor, reverse: torch.Tensor,
                           self_cond: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``h``, ``e`` plus the residuals of ``self_cond = (x1_hat [n, 3], *node features [n, .],
        edge features [E_u, Fe])``, the previous prediction (node features concatenated in order; ``E_u`` = the
        pairs with source < target, in edge order). None stands for "no prediction yet": the positions themselves
        and all-zero features, so every parameter takes part in every step (DDP). A no-op when disabled."""
        if not getattr(self, "self_condition", False):
            return h, e
        upper = edge_index[0] < edge_index[1]                                              # [E]
        if self_cond is None:
            n_node, n_edge = self.sc_dims
            self_cond = (pos, pos.new_zeros(pos.shape[0], n_node), pos.new_zeros(int(upper.sum()), n_edge))
        x1, *node, pe = self_cond
        # each atom's move from x_t to the prediction, both centred (translation invariant)
        d_node = (remove_mean(pos, batch) - remove_mean(x1, batch)).norm(dim=-1)           # [n]
        h = h + self.sc_node(torch.cat([h, *node, self.sc_rbf(d_node)], -1))               # [n, S]
        i, j = edge_index[:, upper]                                                        # [E_u]
        d1 = (x1[i] - x1[j]).norm(dim=-1)                                                  # [E_u]
        dt = (pos[i] - pos[j]).norm(dim=-1)                                                # [E_u]
        res = self.sc_edge(torch.cat([e[upper], pe, self.sc_rbf(d1), (d1 - dt).unsqueeze(-1)], -1))  # [E_u, Ed]
        delta = torch.zeros_like(e)
        delta[upper] = res
        delta[reverse[upper]] = res                                                        # symmetric
        return h, e + delta
