"""Geometric vector perceptrons (GVP) and GVP message passing, geometry-complete (SE(3)) variant.

* GVP: Jing et al., "Learning from Protein Structure with Geometric Vector Perceptrons", ICLR 2021,
  https://arxiv.org/abs/2009.01411, with the vector gating of Jing et al. 2021 (https://arxiv.org/abs/2106.03843).
* Cross-product vector features (``n_cp_feats``) as in FlowMol (Dunn & Koes, https://arxiv.org/abs/2404.19739,
  https://arxiv.org/abs/2411.16644) and PropMolFlow (https://arxiv.org/abs/2505.21469): the cross product of
  two equivariant vectors is a pseudovector, so a GVP with ``n_cp_feats > 0`` is equivariant to rotations and
  translations (SE(3)) but *not* to reflections -- it can tell a molecule from its mirror image.

A node carries scalars ``s [..., F]`` (rotation invariant) and vectors ``v [..., V, 3]`` (rotation equivariant).
Written by hand (no well-kept library ships GVP with cross-product features and gating in plain PyTorch;
e3nn's tensor products are far slower for 16 l=1 channels).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def norm_no_nan(x: torch.Tensor, dim: int = -1, keepdim: bool = False, eps: float = 1e-8,
                sqrt: bool = True) -> torch.Tensor:
    """L2 norm clamped away from 0 (finite gradient at the zero vector)."""
    out = torch.clamp(torch.sum(x * x, dim=dim, keepdim=keepdim), min=eps)
    return torch.sqrt(out) if sqrt else out


class GVP(nn.Module):
    r"""One geometric vector perceptron with sigmoid vector gating and optional cross-product features.

    .. math::
        V_h = W_h V,\quad V_{cp} = (W_a V) \times (W_b V),\quad
        s' = \phi(W_s [s \,\|\, \lVert [V_h, V_{cp}] \rVert]),\quad
        V' = \sigma(W_g s' + b_g) \odot W_u [V_h, V_{cp}]

    Args:
        s_in, s_out: scalar channels in / out.
        v_in, v_out: vector channels in / out.
        n_cp_feats: cross-product vector channels added to the hidden vectors (0 = E(3)-equivariant GVP).
        hidden_vectors: hidden vector channels (default ``max(v_in, v_out)``).
        scalar_activation: apply SiLU to the scalar output (False for a linear read-out).
        vector_gate: "sigmoid" (gates in (0, 1)) or "linear" (unbounded gates; used for position updates).

    Shapes:
        s ``[..., s_in]``, v ``[..., v_in, 3]`` -> (``[..., s_out]``, ``[..., v_out, 3]``).
    """

    def __init__(self, s_in: int, v_in: int, s_out: int, v_out: int, n_cp_feats: int = 0,
                 hidden_vectors: int | None = None, scalar_activation: bool = True, vector_gate: str = "sigmoid"):
        super().__init__()
        if vector_gate not in ("sigmoid", "linear"):
            raise ValueError(f"vector_gate must be 'sigmoid' or 'linear', got {vector_gate!r}")
        if v_in < 1 or v_out < 1:
            raise ValueError(f"GVP needs at least one vector channel in and out, got v_in={v_in}, v_out={v_out}")
        h = hidden_vectors or max(v_in, v_out)
        self.s_in, self.v_in, self.s_out, self.v_out, self.n_cp_feats = s_in, v_in, s_out, v_out, n_cp_feats
        self.w_h = nn.Parameter(torch.empty(v_in, h).uniform_(-1 / math.sqrt(v_in), 1 / math.sqrt(v_in)))
        if n_cp_feats:
            self.w_cp = nn.Parameter(torch.empty(v_in, 2 * n_cp_feats).uniform_(-1 / math.sqrt(v_in), 1 / math.sqrt(v_in)))
        hu = h + n_cp_feats
        self.w_u = nn.Parameter(torch.empty(hu, v_out).uniform_(-1 / math.sqrt(hu), 1 / math.sqrt(hu)))
        self.to_scalars = nn.Linear(s_in + hu, s_out)
        self.scalar_activation = nn.SiLU() if scalar_activation else nn.Identity()
        self.to_gates = nn.Linear(s_out, v_out)
        self.vector_gate = vector_gate

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vh = torch.einsum("...vc,vh->...hc", v, self.w_h)                        # [..., h, 3]
        if self.n_cp_feats:
            a, b = torch.einsum("...vc,vp->...pc", v, self.w_cp).chunk(2, dim=-2)  # 2 x [..., n_cp, 3]
            vh = torch.cat([vh, torch.linalg.cross(a, b, dim=-1)], dim=-2)         # [..., h + n_cp, 3]
        vu = torch.einsum("...hc,hu->...uc", vh, self.w_u)                        # [..., v_out, 3]
        s_out = self.scalar_activation(self.to_scalars(torch.cat([s, norm_no_nan(vh)], -1)))  # [..., s_out]
        gates = self.to_gates(s_out).unsqueeze(-1)                                 # [..., v_out, 1]
        if self.vector_gate == "sigmoid":
            gates = torch.sigmoid(gates)
        return s_out, gates * vu                                                   # [..., s_out], [..., v_out, 3]

    def __repr__(self) -> str:
        return f"GVP(s={self.s_in}->{self.s_out}, v={self.v_in}->{self.v_out}, n_cp_feats={self.n_cp_feats})"


class GVPSequential(nn.Sequential):
    """A chain of GVPs passing ``(s, v)`` along."""

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        for gvp in self:
            s, v = gvp(s, v)
        return s, v


class GVPLayerNorm(nn.Module):
    r"""LayerNorm on scalars; vectors divided by their root-mean-square channel norm (no parameters).

    Shapes: s ``[..., F]``, v ``[..., V, 3]`` -> same.
    """

    def __init__(self, s_dim: int, eps: float = 1e-5):
        super().__init__()
        self.scalar_norm = nn.LayerNorm(s_dim)
        self.eps = eps

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rms = torch.sqrt(norm_no_nan(v, sqrt=False).mean(-1, keepdim=True) + self.eps) + self.eps  # [..., 1]
        return self.scalar_norm(s), v / rms.unsqueeze(-1)


class GVPConv(nn.Module):
    r"""GVP message passing over a directed edge list (FlowMol's GVPConv, without attention).

    .. math::
        m_{j\to i} = \mathrm{GVP}^{n_{msg}}\big([s_j \| \mathrm{RBF}(d_{ij}) \| e_{ij}],\;
                      [\hat r_{ji},\, V_j]\big),\qquad
        (s_i, V_i) \leftarrow \mathrm{LN}\big((s_i, V_i) + \tfrac{1}{Z}\textstyle\sum_j m_{j\to i}\big),\qquad
        (s_i, V_i) \leftarrow \mathrm{LN}\big((s_i, V_i) + \mathrm{GVP}^{n_{upd}}(s_i, V_i)\big)

    with :math:`\hat r_{ji} = (x_j - x_i)/\lVert x_j - x_i \rVert` and :math:`Z` = ``message_norm`` (a constant,
    or "mean" for the in-degree).

    Args:
        s_dim, v_dim: node scalar / vector channels.
        edge_dim: edge feature size (0 = none).
        rbf_dim: distance-RBF size.
        n_cp_feats: cross-product channels per GVP.
        n_message_gvps, n_update_gvps: depth of the message and update GVP stacks.
        message_norm: a positive number (divide the summed messages) or "mean".

    Shapes:
        s ``[n, s_dim]``, v ``[n, v_dim, 3]``, edge_index ``[2, E]`` (source, target), unit ``[E, 3]``
        (source minus target, normalised), rbf ``[E, rbf_dim]``, edge_feats ``[E, edge_dim]`` -> (s, v).
    """

    def __init__(self, s_dim: int, v_dim: int, edge_dim: int, rbf_dim: int, n_cp_feats: int = 0,
                 n_message_gvps: int = 3, n_update_gvps: int = 3, message_norm: float | str = 100.0):
        super().__init__()
        if not (message_norm == "mean" or (isinstance(message_norm, (int, float)) and message_norm > 0)):
            raise ValueError(f"message_norm must be a positive number or 'mean', got {message_norm!r}")
        self.message_norm = message_norm
        self.edge_dim = edge_dim
        msg = [GVP(s_dim + rbf_dim + edge_dim, v_dim + 1, s_dim, v_dim, n_cp_feats)]
        msg += [GVP(s_dim, v_dim, s_dim, v_dim, n_cp_feats) for _ in range(n_message_gvps - 1)]
        self.message = GVPSequential(*msg)
        self.update = GVPSequential(*[GVP(s_dim, v_dim, s_dim, v_dim, n_cp_feats) for _ in range(n_update_gvps)])
        self.message_norm_layer = GVPLayerNorm(s_dim)
        self.update_norm_layer = GVPLayerNorm(s_dim)

    def forward(self, s: torch.Tensor, v: torch.Tensor, edge_index: torch.Tensor, unit: torch.Tensor,
                rbf: torch.Tensor, edge_feats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        src, dst = edge_index                                                     # [E], [E]
        ms = [s[src], rbf] + ([edge_feats] if self.edge_dim else [])
        ms, mv = self.message(torch.cat(ms, -1),                                  # [E, s + rbf + edge]
                              torch.cat([unit.unsqueeze(1), v[src]], 1))          # [E, 1 + V, 3]
        agg_s = torch.zeros_like(s).index_add_(0, dst, ms)                        # [n, s]
        agg_v = torch.zeros_like(v).index_add_(0, dst, mv)                        # [n, V, 3]
        if self.message_norm == "mean":
            z = torch.bincount(dst, minlength=s.shape[0]).clamp(min=1).to(s.dtype).unsqueeze(-1)  # [n, 1]
            agg_s, agg_v = agg_s / z, agg_v / z.unsqueeze(-1)
        else:
            agg_s, agg_v = agg_s / self.message_norm, agg_v / self.message_norm
        s, v = self.message_norm_layer(s + agg_s, v + agg_v)
        ds, dv = self.update(s, v)
        return self.update_norm_layer(s + ds, v + dv)
