"""GauntBackbone: an E(3)-translation / SO(3)-rotation equivariant message-passing network built on Gaunt products.

The plain interface molgen's generators call (``model.backbone=gaunt``)::

    h_out, vec_out = backbone(h, pos, edge_index, edge_attr, batch)

Each layer (cf. MACE's interaction + product blocks, with Gaunt products instead of Clebsch-Gordan ones):

1. equivariant RMS norm of the node irreps X (per degree, over channels);
2. convolution: ``A_i = 1/n sum_j w_out(e_ij) * ((w_in(e_ij) * X_j) (x)_G Y(r_ij))``
   (:class:`GauntConvolution`; e_ij = radial basis of |r_ij|, edge_attr, scalars of i and j);
3. many-body: ``B = sum_nu w_nu * A^(x)nu`` (:class:`GauntManyBody`) and a channel-wise self-interaction
   ``X (x)_G A`` (:class:`GauntFeatureInteraction`);
4. vector path: ``u x v`` of two channel mixes of the l=1 blocks of A, added to the l=1 block. Gaunt products
   only contain the paths with l1+l2+l3 even, so the cross product (1 x 1 -> 1) is missing from steps 2-3;
   this path adds it back (it is a pseudo-vector: the network is equivariant to rotations, not reflections,
   which is what chirality-aware generators want);
5. per-degree channel mixing, gated nonlinearity (SiLU on scalars, sigmoid gates on l > 0), residual update.

Outputs: invariant features from the l=0 block and the per-degree norms; vectors from channel mixes of the
l=1 blocks (e3nn's l=1 basis is (x, y, z), so they are Cartesian vectors).
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from molgen.errors import ConfigError
from molgen.nn.gaunt._basis import num_sh
from molgen.nn.gaunt._modules import (GauntConvolution, GauntFeatureInteraction, GauntManyBody, degree_matrix,
                                      expand_degrees)
from molgen.nn.radial import GaussianRBF


class DegreeLinear(nn.Module):
    """Channel mixing with one ``C_in x C_out`` matrix per degree (equivariant). ``[N, C_in, n] -> [N, C_out, n]``."""

    def __init__(self, c_in: int, c_out: int, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.weight = nn.Parameter(torch.randn(lmax + 1, c_in, c_out) / math.sqrt(c_in))

    def forward(self, x: Tensor) -> Tensor:
        # one GEMM per degree over the channels of its 2l+1 coefficients
        outs = [torch.einsum("nci,cd->ndi", x[..., l * l : (l + 1) ** 2], self.weight[l]) for l in range(self.lmax + 1)]
        return torch.cat(outs, dim=-1)


def degree_norms(x: Tensor, lmax: int) -> Tensor:
    """Invariant norms per (channel, degree): ``[N, C, n] -> [N, C, L+1]``."""
    return ((x * x) @ degree_matrix(lmax, x.dtype, x.device).t()).clamp_min(1e-12).sqrt()


class EquivariantRMSNorm(nn.Module):
    """Divide each degree block by its RMS norm over channels (learnable per-(channel, degree) scale)."""

    def __init__(self, channels: int, lmax: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.scale = nn.Parameter(torch.ones(channels, lmax + 1))

    def forward(self, x: Tensor) -> Tensor:
        norms = degree_norms(x, self.lmax)  # [N, C, L+1]
        rms = (norms.pow(2).mean(-2, keepdim=True) + self.eps).sqrt()  # [N, 1, L+1]
        return x * expand_degrees(self.scale / rms, self.lmax)


class GauntLayer(nn.Module):
    """One interaction + product layer of :class:`GauntBackbone` (see the module docstring, steps 1-5)."""

    def __init__(self, channels: int, lmax: int, edge_features: int, correlation: int, avg_neighbors: float) -> None:
        super().__init__()
        self.lmax = lmax
        self.norm = EquivariantRMSNorm(channels, lmax)
        self.conv = GauntConvolution(channels, lmax, lmax, lmax, edge_features + 2 * channels,
                                     hidden=channels, avg_neighbors=avg_neighbors)
        self.many_body = GauntManyBody(channels, lmax, correlation)
        self.self_interaction = GauntFeatureInteraction(channels, lmax, lmax)
        self.vector_mix = nn.Linear(channels, 2 * channels, bias=False) if lmax >= 1 else None
        self.mix = DegreeLinear(channels, channels, lmax)
        self.gate = nn.Linear(channels * (lmax + 1), channels * (lmax + 1))

    def forward(self, x: Tensor, edge_sh: Tensor, edge_features: Tensor, edge_index: Tensor) -> Tensor:
        y = self.norm(x)
        src, dst = edge_index
        scalars = y[..., 0]
        e = torch.cat([edge_features, scalars.index_select(0, src), scalars.index_select(0, dst)], dim=-1)
        a = self.conv(y, edge_sh, e, edge_index)  # [N, C, n]
        b = self.many_body(a) + self.self_interaction(y, a)
        if self.vector_mix is not None:  # the parity-odd 1 x 1 -> 1 path that Gaunt products lack
            u, v = self.vector_mix(a[..., 1:4].transpose(-1, -2)).chunk(2, dim=-1)  # [N, 3, C] each
            cross = torch.cross(u, v, dim=-2).transpose(-1, -2)  # [N, C, 3]
            b = torch.cat([b[..., :1], b[..., 1:4] + cross, b[..., 4:]], dim=-1)
        b = self.mix(b)
        invariants = degree_norms(b, self.lmax).flatten(1)  # [N, C (L+1)]
        gates = self.gate(torch.cat([b[..., 0], invariants[:, b.shape[1]:]], dim=-1) if self.lmax else b[..., 0])
        gates = gates.view(b.shape[0], b.shape[1], self.lmax + 1)
        scal = nn.functional.silu(b[..., :1]) * torch.sigmoid(gates[..., :1])
        rest = b[..., 1:] * expand_degrees(torch.sigmoid(gates), self.lmax)[..., 1:]
        return x + torch.cat([scal, rest], dim=-1)


class GauntBackbone(nn.Module):
    r"""Equivariant message-passing backbone with Gaunt tensor products (higher-order irreps, lmax configurable).

    Luo, Chen & Krishnapriyan, ICLR 2024 (https://arxiv.org/abs/2401.10216); layer structure after MACE
    (Batatia et al., NeurIPS 2022). Invariant to rotations, translations; equivariant to node permutations.

    Args:
        in_channels: size C of the invariant input node features.
        out_channels: size of the invariant output features.
        hidden_channels: channels per degree.
        lmax: highest degree of the node irreps (1..8 tested).
        num_layers: message-passing layers.
        num_vectors: V, equivariant output vectors per node.
        edge_dim: F, size of ``edge_attr`` (0 when none is passed).
        cutoff: radius (Angstrom) of the radial envelope (edges beyond it get zero-weighted messages).
        num_radial: Gaussian radial basis functions.
        correlation: nu_max of the many-body product.
        avg_neighbors: messages are summed and divided by this.

    Shapes:
        h ``[N, C]``, pos ``[N, 3]``, edge_index ``[2, E]`` (source, target), edge_attr ``[E, F]`` or None,
        batch ``[N]`` (accepted for the generator interface; messages only flow along ``edge_index``)
        -> h_out ``[N, out_channels]``, vec_out ``[N, V, 3]``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 32, lmax: int = 2,
                 num_layers: int = 3, num_vectors: int = 1, edge_dim: int = 0, cutoff: float = 5.0,
                 num_radial: int = 16, correlation: int = 2, avg_neighbors: float = 10.0) -> None:
        super().__init__()
        if lmax < 1:
            raise ConfigError(f"GauntBackbone needs lmax >= 1 for its vector outputs, got lmax={lmax}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("hidden_channels", hidden_channels), ("num_layers", num_layers),
                            ("num_vectors", num_vectors), ("num_radial", num_radial), ("correlation", correlation)):
            if value < 1:
                raise ConfigError(f"GauntBackbone: {name} must be >= 1, got {value}")
        self.lmax, self.hidden_channels, self.edge_dim, self.num_vectors = lmax, hidden_channels, edge_dim, num_vectors
        self.embed = nn.Linear(in_channels, hidden_channels)
        self.rbf = GaussianRBF(num_radial, 0.0, cutoff, cosine_cutoff=True, persistent=True)
        self.layers = nn.ModuleList(GauntLayer(hidden_channels, lmax, num_radial + edge_dim, correlation,
                                               avg_neighbors) for _ in range(num_layers))
        self.out_scalar = nn.Sequential(nn.Linear(hidden_channels * (lmax + 1), hidden_channels), nn.SiLU(),
                                        nn.Linear(hidden_channels, out_channels))
        self.out_vector = nn.Linear(hidden_channels, num_vectors, bias=False)

    def forward(self, h: Tensor, pos: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if h.dim() != 2 or pos.shape != (h.shape[0], 3) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ConfigError(f"GauntBackbone expects h [N, C], pos [N, 3], edge_index [2, E]; got "
                              f"{tuple(h.shape)}, {tuple(pos.shape)}, {tuple(edge_index.shape)}")
        if (edge_attr is None) != (self.edge_dim == 0) or (edge_attr is not None and edge_attr.shape[-1] != self.edge_dim):
            got = None if edge_attr is None else tuple(edge_attr.shape)
            raise ConfigError(f"GauntBackbone was built with edge_dim={self.edge_dim}, got edge_attr {got}")
        src, dst = edge_index
        vec = pos[src] - pos[dst]  # [E, 3]
        dist = vec.norm(dim=-1)
        unit = vec / dist.clamp_min(1e-9)[:, None]
        edge_sh = o3.spherical_harmonics(list(range(self.lmax + 1)), unit, normalize=False,
                                         normalization="integral") * math.sqrt(4 * math.pi)  # [E, n], Y_0 = 1
        edge_features = self.rbf(dist)
        if edge_attr is not None:
            edge_features = torch.cat([edge_features, edge_attr.to(edge_features.dtype)], dim=-1)
        x = h.new_zeros(h.shape[0], self.hidden_channels, num_sh(self.lmax))
        x[..., 0] = self.embed(h)
        for layer in self.layers:
            x = layer(x, edge_sh, edge_features, edge_index)
        invariants = torch.cat([x[..., 0], degree_norms(x, self.lmax)[..., 1:].flatten(1)], dim=-1)
        h_out = self.out_scalar(invariants)
        vec_out = self.out_vector(x[..., 1:4].transpose(-1, -2)).transpose(-1, -2)  # [N, V, 3]
        return h_out, vec_out
