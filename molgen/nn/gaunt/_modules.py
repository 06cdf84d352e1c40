"""Learnable layers for the three operation classes of the Gaunt tensor product paper (Luo et al., ICLR 2024, sec. 4).

Features are SH-coefficient tensors ``[..., C, (L+1)^2]`` in e3nn's order (C channels, degrees 0..L, parity
(-1)^l). A Gaunt product cannot take free per-path weights (its path ratios are fixed by the Gaunt
coefficients); following the paper, weights are per (channel, degree) on the inputs and on the output, i.e.
rank-1 path weights ``w_{l1} w'_{l2} w''_{l3}``. Scaling a degree block commutes with rotations, so every layer
here is SO(3)-equivariant.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from molgen.errors import ConfigError
from molgen.nn.gaunt._basis import num_sh, plan_tensors
from molgen.nn.gaunt._grid import _project, _synthesize
from molgen.nn.gaunt._product import gaunt_tensor_product


def degree_index(lmax: int, device: torch.device | None = None) -> Tensor:
    """Degree ``l`` of each SH index, ``[(lmax+1)^2]`` long (to expand per-degree weights)."""
    return torch.repeat_interleave(torch.arange(lmax + 1, device=device), 2 * torch.arange(lmax + 1, device=device) + 1)


@lru_cache(maxsize=None)
def degree_matrix(lmax: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """0/1 matrix ``[L+1, (L+1)^2]`` mapping a degree to its 2l+1 coefficients."""
    index = degree_index(lmax)
    return (torch.arange(lmax + 1)[:, None] == index[None, :]).to(dtype=dtype, device=device)


def expand_degrees(weights: Tensor, lmax: int) -> Tensor:
    """Per-degree weights ``[..., L+1]`` -> per-coefficient weights ``[..., (L+1)^2]``.

    A matmul with a 0/1 matrix: much faster than fancy indexing in backward (no index_put accumulation).
    """
    return weights @ degree_matrix(lmax, weights.dtype, weights.device)


def _check(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


class GauntFeatureInteraction(nn.Module):
    r"""Channel-wise Gaunt product of two node features ("Gaunt-Selfmix"; paper sec. 4, feature interaction).

    .. math:: z_c = w^{out}_{c,l_3} \odot \big( (w^{1}_{c,l_1} \odot x_c) \otimes_G (w^{2}_{c,l_2} \odot y_c) \big)

    Args:
        channels: number of channels C (the product is depthwise: channel c of x times channel c of y).
        lmax_in: degree L of both inputs.
        lmax_out: output degree (default ``lmax_in``).

    Shapes:
        x, y ``[..., C, (L+1)^2]`` -> ``[..., C, (lmax_out+1)^2]``.
    """

    def __init__(self, channels: int, lmax_in: int, lmax_out: int | None = None) -> None:
        super().__init__()
        _check("channels", channels, 1)
        _check("lmax_in", lmax_in, 0)
        self.channels, self.lmax_in = channels, lmax_in
        self.lmax_out = lmax_in if lmax_out is None else lmax_out
        self.weight1 = nn.Parameter(torch.ones(channels, lmax_in + 1))
        self.weight2 = nn.Parameter(torch.ones(channels, lmax_in + 1))
        self.weight_out = nn.Parameter(torch.ones(channels, self.lmax_out + 1))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x = x * expand_degrees(self.weight1, self.lmax_in)
        y = y * expand_degrees(self.weight2, self.lmax_in)
        return gaunt_tensor_product(x, y, self.lmax_out) * expand_degrees(self.weight_out, self.lmax_out)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lmax_in={self.lmax_in}, lmax_out={self.lmax_out}"


class GauntConvolution(nn.Module):
    r"""Equivariant convolution: node features times the SH of the edge direction, with radial weights.

    .. math:: m_{ij,c} = w^{out}_{c,l_3}(r_{ij}) \odot \big( (w^{in}_{c,l_1}(r_{ij}) \odot h_{j,c})
              \otimes_G Y(\hat r_{ij}) \big),\qquad h'_i = \frac{1}{\bar n} \sum_{j \in \mathcal N(i)} m_{ij}

    The per-edge, per-(channel, degree) weights come from an MLP of invariant edge features (radial basis, bond
    types, end-point scalars...).

    Args:
        channels: C.
        lmax_in: degree of the node features.
        lmax_sh: degree of the edge spherical harmonics.
        lmax_out: degree of the messages.
        edge_features: size of the invariant edge-feature vector fed to the radial MLP.
        hidden: hidden width of the radial MLP.
        avg_neighbors: the sum of messages is divided by this number.

    Shapes:
        h ``[N, C, (L_in+1)^2]``, edge_sh ``[E, (L_sh+1)^2]``, edge_features ``[E, F]``, edge_index ``[2, E]``
        (row 0 source j, row 1 target i) -> ``[N, C, (L_out+1)^2]``.
    """

    def __init__(self, channels: int, lmax_in: int, lmax_sh: int, lmax_out: int, edge_features: int,
                 hidden: int = 64, avg_neighbors: float = 1.0) -> None:
        super().__init__()
        for name, value, minimum in (("channels", channels, 1), ("lmax_in", lmax_in, 0), ("lmax_sh", lmax_sh, 0),
                                     ("lmax_out", lmax_out, 0), ("edge_features", edge_features, 1)):
            _check(name, value, minimum)
        self.channels, self.lmax_in, self.lmax_sh, self.lmax_out = channels, lmax_in, lmax_sh, lmax_out
        self.avg_neighbors = float(avg_neighbors)
        self.radial = nn.Sequential(nn.Linear(edge_features, hidden), nn.SiLU(),
                                    nn.Linear(hidden, channels * (lmax_in + 1 + lmax_out + 1)))

    def forward(self, h: Tensor, edge_sh: Tensor, edge_features: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index
        w = self.radial(edge_features).view(-1, self.channels, self.lmax_in + self.lmax_out + 2)
        w_in, w_out = w[..., : self.lmax_in + 1], w[..., self.lmax_in + 1 :]
        h_j = h.index_select(0, src) * expand_degrees(w_in, self.lmax_in)  # [E, C, n_in]
        # the edge SH is shared by all channels: it broadcasts over C inside the product
        msg = gaunt_tensor_product(h_j, edge_sh[:, None, :], self.lmax_out) * expand_degrees(w_out, self.lmax_out)
        out = h.new_zeros(h.shape[0], self.channels, num_sh(self.lmax_out))
        return out.index_add_(0, dst, msg) / self.avg_neighbors

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, lmax_in={self.lmax_in}, lmax_sh={self.lmax_sh}, "
                f"lmax_out={self.lmax_out}")


class GauntManyBody(nn.Module):
    r"""Many-body product basis (MACE-style), with the nu-fold products taken in the grid (Fourier) domain.

    .. math:: B_{c,lm} = \sum_{\nu=1}^{\nu_{max}} w^{\nu}_{z, c, l}\, \big[A_c^{\otimes_G \nu}\big]_{lm}

    ``A^{(x)nu}`` is the SH expansion of the nu-th power of the spherical function of A. It is computed as in
    the paper by repeated products in a domain where the product is pointwise: A is synthesised once on an S2
    grid fine enough for degree ``nu_max L + L_out`` (exact), raised to the powers 1..nu_max there, and each
    power is projected back once.

    Args:
        channels: C.
        lmax: degree L of A and of the output.
        correlation: nu_max (>= 1).
        num_elements: number of species for species-dependent weights (1: shared).

    Shapes:
        a ``[N, C, (L+1)^2]``, species ``[N]`` long (optional when num_elements == 1) -> ``[N, C, (L+1)^2]``.
    """

    def __init__(self, channels: int, lmax: int, correlation: int = 3, num_elements: int = 1) -> None:
        super().__init__()
        for name, value, minimum in (("channels", channels, 1), ("lmax", lmax, 0), ("correlation", correlation, 1),
                                     ("num_elements", num_elements, 1)):
            _check(name, value, minimum)
        self.channels, self.lmax, self.correlation, self.num_elements = channels, lmax, correlation, num_elements
        weight = torch.zeros(correlation, num_elements, channels, lmax + 1)
        weight[0] = 1.0  # start as the identity (nu = 1 term)
        self.weight = nn.Parameter(weight)

    def power_basis(self, a: Tensor) -> Tensor:
        """``[A^(x)1, ..., A^(x)nu_max]`` truncated to degree L: ``[nu, ..., (L+1)^2]``."""
        lmax, nu = self.lmax, self.correlation
        t = plan_tensors("grid", lmax, (nu - 1) * lmax, lmax, a.dtype, a.device)
        flat = a.reshape(-1, a.shape[-1])
        values = _synthesize(flat, t, "1")  # [P, T, B]
        powers, current = [], values
        for k in range(nu):
            if k:
                current = current * values
            powers.append(_project(current, t).view(a.shape[:-1] + (-1,)))
        return torch.stack(powers)

    def forward(self, a: Tensor, species: Tensor | None = None) -> Tensor:
        basis = self.power_basis(a)  # [nu, N, C, n]
        if species is None:
            if self.num_elements != 1:
                raise ConfigError("GauntManyBody with num_elements > 1 needs the species of each node")
            species = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
        w = expand_degrees(self.weight[:, species], self.lmax)  # [nu, N, C, n]
        return (w * basis).sum(0)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, lmax={self.lmax}, correlation={self.correlation}, "
                f"num_elements={self.num_elements}")
