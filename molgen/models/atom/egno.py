"""EGNO: Equivariant Graph Neural Operator (Xu, Han, Lou, Kossaifi, Ramanathan, Azizzadenesheli, Leskovec,
Ermon, Anandkumar; ICML 2024, arXiv 2401.11037), the equivariant baseline of ATOM.

EGNO decodes the P future frames of a molecule at once: the input state is replicated over P time slots,
every layer first mixes the slots with a **temporal Fourier layer** (an FNO-style spectral convolution along
the slot axis, keeping the lowest ``n_modes`` frequencies) and then runs one **EGNN layer with velocity**
(Satorras et al. 2021) on every slot's graph:

    m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, e_ij)
    v_i <- phi_v(h_i) v_i + (1/|N(i)|) sum_j (x_i - x_j) phi_x(m_ij);   x_i <- x_i + v_i
    h_i <- h_i + phi_h(h_i, sum_j m_ij)

The temporal layer acts on the invariant features (``h <- h + LeakyReLU(FNO(h))``) and, with real weights
shared over x/y/z, on the stacked pair ``(x - centroid, v)`` (2 -> 2 channels, residual), which keeps E(3)
equivariance. A 32-d sinusoidal embedding of the slot index (``sin_cos`` layout of
:func:`molgen.nn.embeddings.sinusoidal_embedding`) is concatenated to the node features. The EGNN layer is
:class:`molgen.nn.egnn.EGNNLayer` with ``velocity=True, coord_step="linear"`` on dense (padded) graphs.

Graph (as EGNO's MD17 loader): heavy atoms; bonds where the distance at the input frame is < 1.6 Angstrom,
plus 2-hop edges; edge attributes ``[Z_i, Z_j] / z_max`` and the hop type. EGNO's hand-written per-molecule
"stick" flags are omitted (they exist only for the eight MD17 molecules).

Note: the reference code's MD17 script defaults ``--use_time_conv`` to False, silently training MD17 without
the temporal convolution; here ``use_time_conv=True`` (the model the paper describes) is the default.

Shapes:
    x0, v0: ``[B, N, 3]``; z: ``[B, N]`` long; mask: ``[B, N]`` bool -> ``[B, P, N, 3]``
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from molgen.nn.egnn import EGNNLayer
from molgen.nn.embeddings import sinusoidal_embedding


class TemporalFourierLayer(nn.Module):
    """Spectral convolution along the time-slot axis (Li et al. 2021, FNO, arXiv 2010.08895).

    ``y = irfft( W_k * rfft(u)_k  for k < n_modes, 0 otherwise )`` with complex ``W_k`` of shape
    ``[C_in, C_out]``.

    Shapes:
        u: ``[B, P, ..., C_in]`` -> ``[B, P, ..., C_out]`` (the FFT runs over dim 1)
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: int = 2, init_scale: float | None = None):
        super().__init__()
        self.n_modes = n_modes
        scale = init_scale if init_scale is not None else 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(n_modes, in_channels, out_channels, 2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        P = u.shape[1]
        u_ft = torch.fft.rfft(u, dim=1)                                              # [B, P//2+1, ..., C]
        k = min(self.n_modes, u_ft.shape[1])
        w = torch.view_as_complex(self.weight[:k].contiguous())                     # [k, Cin, Cout]
        out_ft = torch.zeros(*u_ft.shape[:-1], w.shape[-1], dtype=u_ft.dtype, device=u.device)
        out_ft[:, :k] = torch.einsum("bk...i,kio->bk...o", u_ft[:, :k], w)
        return torch.fft.irfft(out_ft, n=P, dim=1)


#: the velocity EGNN layer's sub-network names (EGNO's phi_e, phi_x, phi_v, phi_h)
_LAYER_NAMES = {"message": "phi_e", "coord": "phi_x", "velocity": "phi_v", "node": "phi_h"}


def egno_layer(hidden: int, edge_dim: int) -> EGNNLayer:
    """One EGNN layer with velocity (see the module docstring for the update) as EGNO uses it.

    Shapes: ``layer(h [G, N, H], x [G, N, 3], edge_attr=e [G, N, N, E], v=v [G, N, 3], adj=adj [G, N, N])``
    -> ``(h, x, v)``.
    """
    return EGNNLayer(hidden, edge_attr_dim=edge_dim, attention=False, coord_step="linear", coords_clamp=100.0,
                     velocity=True, module_names=_LAYER_NAMES)


class EGNO(nn.Module):
    """EGNO forecaster.

    Args:
        n_targets: P (8). hidden: 64. n_layers: 5. n_modes: Fourier modes kept (2). time_emb_dim: 32.
        use_time_conv: temporal Fourier layers on (True: the paper's model).
        cutoff: bond cutoff in Angstrom (1.6). z_max: atomic-number normaliser (10).
    """

    def __init__(self, n_targets: int = 8, hidden: int = 64, n_layers: int = 5, n_modes: int = 2,
                 time_emb_dim: int = 32, use_time_conv: bool = True, cutoff: float = 1.6, z_max: float = 10.0):
        super().__init__()
        self.n_targets, self.hidden, self.use_time_conv = n_targets, hidden, use_time_conv
        self.cutoff, self.z_max = cutoff, z_max
        self.register_buffer("slot_emb", sinusoidal_embedding(torch.arange(n_targets), time_emb_dim, "sin_cos"),
                             persistent=False)
        self.embed = nn.Linear(2 + time_emb_dim, hidden)
        self.layers = nn.ModuleList(egno_layer(hidden, 4) for _ in range(n_layers))
        self.time_h = nn.ModuleList(TemporalFourierLayer(hidden, hidden, n_modes) for _ in range(n_layers))
        self.time_xv = nn.ModuleList(TemporalFourierLayer(2, 2, n_modes, init_scale=0.1) for _ in range(n_layers))

    def extra_repr(self) -> str:
        return f"P={self.n_targets}, hidden={self.hidden}, layers={len(self.layers)}, time_conv={self.use_time_conv}"

    def graph(self, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense adjacency (bonds + 2-hop) ``[B, N, N]`` and edge attributes ``[B, N, N, 4]`` from the input frame."""
        B, N, _ = x0.shape
        pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(N, dtype=torch.bool, device=x0.device)
        bond = (torch.cdist(x0, x0) < self.cutoff) & pair
        two_hop = (bond.float() @ bond.float() > 0) & pair & ~bond
        zn = z.to(x0.dtype) / self.z_max
        e = torch.stack([zn[:, :, None].expand(B, N, N), zn[:, None, :].expand(B, N, N),
                         bond.to(x0.dtype), two_hop.to(x0.dtype)], -1)
        return bond | two_hop, e

    def forward(self, x0: torch.Tensor, v0: torch.Tensor, z: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = x0.shape
        P = self.n_targets
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=x0.device)
        m = mask[:, None, :, None].to(x0.dtype)                                       # [B, 1, N, 1]
        adj, e = self.graph(x0, z, mask)
        adj = adj[:, None].expand(B, P, N, N).reshape(B * P, N, N)
        e = e[:, None].expand(B, P, N, N, e.shape[-1]).reshape(B * P, N, N, e.shape[-1])
        # node features ||v||, Z/z_max plus the slot embedding; state replicated over the P slots
        feats = torch.cat([v0.norm(dim=-1, keepdim=True), z[..., None].to(x0.dtype) / self.z_max], -1)
        feats = torch.cat([feats[:, None].expand(B, P, N, 2),
                           self.slot_emb[None, :, None].expand(B, P, N, self.slot_emb.shape[-1])], -1)
        h = self.embed(feats) * m                                                     # [B, P, N, H]
        x = x0[:, None].expand(B, P, N, 3) * m
        v = v0[:, None].expand(B, P, N, 3) * m
        n_atoms = m.sum(2, keepdim=True).clamp(min=1)
        for layer, conv_h, conv_xv in zip(self.layers, self.time_h, self.time_xv):
            if self.use_time_conv:
                h = h + F.leaky_relu(conv_h(h))
                centroid = (x * m).sum(2, keepdim=True) / n_atoms                    # [B, P, 1, 3]
                xv = torch.stack([x - centroid, v], -1)                               # [B, P, N, 3, 2]
                xv = xv + conv_xv(xv)
                x, v = (centroid + xv[..., 0]) * m, xv[..., 1] * m
            hf, xf, vf = layer(h.reshape(B * P, N, -1), x.reshape(B * P, N, 3), edge_attr=e, v=v.reshape(B * P, N, 3),
                               adj=adj)
            h, x, v = hf.view(B, P, N, -1) * m, xf.view(B, P, N, 3) * m, vf.view(B, P, N, 3) * m
        return x


class StaticBaseline(nn.Module):
    """Predicts no motion: every future frame equals the input frame ``x_t``. No parameters.

    Shapes: x0 ``[B, N, 3]`` -> ``[B, P, N, 3]``
    """

    def __init__(self, n_targets: int = 8):
        super().__init__()
        self.n_targets = n_targets

    def forward(self, x0, v0, z, mask=None):
        out = x0[:, None].expand(x0.shape[0], self.n_targets, *x0.shape[1:])
        return out if mask is None else out * mask[:, None, :, None]
