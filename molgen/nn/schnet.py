"""SchNet 3D encoder (PyG's) returning a molecule representation, with a radius graph that needs no torch-cluster.

Schütt et al. 2017 (https://arxiv.org/abs/1706.08566) as configured by GraphMVP: hidden 300, 128 filters,
6 interactions, 51 Gaussians, cutoff 10 Angstrom, mean readout, a ``hidden -> hidden/2 -> out`` head.
PyG's :class:`~torch_geometric.nn.models.SchNet` builds its graph with ``radius_graph`` from torch-cluster;
here it gets :class:`DenseRadiusGraph`, a ``torch.cdist`` radius graph per molecule (molecules are small,
so the dense ``[B, n_max, n_max]`` distance block is cheap). Unlike ``radius_graph`` it keeps every
neighbour within the cutoff (no ``max_num_neighbors`` cap).

Outputs depend on interatomic distances only, so they are invariant to rotations, reflections and
translations of each molecule.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.models import SchNet
from torch_geometric.utils import to_dense_batch


class DenseRadiusGraph(nn.Module):
    """All ordered atom pairs ``(j -> i)`` of the same molecule closer than ``cutoff``.

    Shapes:
        pos ``[N, 3]``, batch ``[N]`` -> edge_index ``[2, E]``, edge_weight (distance) ``[E]``.
    """

    def __init__(self, cutoff: float = 10.0):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dense, mask = to_dense_batch(pos, batch)  # [B, n, 3], [B, n]
        dist = torch.cdist(dense, dense)  # [B, n, n]
        n = dense.size(1)
        keep = mask[:, :, None] & mask[:, None, :] & (dist < self.cutoff)
        keep &= ~torch.eye(n, dtype=torch.bool, device=pos.device)[None]
        b, i, j = keep.nonzero(as_tuple=True)
        offset = torch.cumsum(mask.sum(1), 0) - mask.sum(1)  # first atom of each molecule
        src, dst = offset[b] + j, offset[b] + i
        edge_index = torch.stack([src, dst])
        return edge_index, (pos[src] - pos[dst]).norm(dim=-1)


class SchNetEncoder(SchNet):
    """PyG SchNet with a vector output: ``mean_i lin2(ssp(lin1(h_i)))`` of size ``out_dim``.

    Args:
        hidden_channels: atom representation size (300 in GraphMVP).
        out_dim: molecule representation size (defaults to ``hidden_channels``).
        num_filters, num_interactions, num_gaussians, cutoff: as PyG's SchNet (128, 6, 51, 10.0 in GraphMVP).

    Shapes:
        z ``[N]`` atomic numbers (< 100), pos ``[N, 3]``, batch ``[N]`` -> ``[B, out_dim]``.
    """

    def __init__(self, hidden_channels: int = 300, out_dim: int | None = None, num_filters: int = 128,
                 num_interactions: int = 6, num_gaussians: int = 51, cutoff: float = 10.0):
        super().__init__(hidden_channels=hidden_channels, num_filters=num_filters,
                         num_interactions=num_interactions, num_gaussians=num_gaussians, cutoff=cutoff,
                         interaction_graph=DenseRadiusGraph(cutoff), readout="mean")
        self.out_dim = out_dim or hidden_channels
        self.lin2 = nn.Linear(hidden_channels // 2, self.out_dim)
        nn.init.xavier_uniform_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(self, z: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(z, pos, batch)
