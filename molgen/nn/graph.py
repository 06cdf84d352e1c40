"""Graph utilities for batches of molecules (PyG-style concatenations with a sorted ``batch`` vector)."""
from __future__ import annotations

import torch


def complete_graph(batch: torch.Tensor, num_graphs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All directed atom pairs ``(i, j), i != j`` inside each molecule, and each edge's reverse.

    Args:
        batch: ``[n]`` molecule index of every atom, sorted (PyG convention).

    Returns:
        ``edge_index [2, E]`` (``E = sum_m N_m (N_m - 1)``), sorted by source then target, and
        ``reverse [E]`` with ``edge_index[:, reverse[k]] == edge_index.flip(0)[:, k]``.
    """
    counts = torch.bincount(batch, minlength=num_graphs or 0)                  # [B]
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])                  # [B + 1]
    nmax = int(counts.max()) if counts.numel() else 0
    ar = torch.arange(nmax, device=batch.device)
    valid = ar.unsqueeze(0) < counts.unsqueeze(1)                             # [B, nmax]
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & ~torch.eye(nmax, dtype=torch.bool, device=batch.device)
    b, i, j = pair.nonzero(as_tuple=True)                                     # [E] each, row-major
    ids = torch.full(pair.shape, -1, dtype=torch.long, device=batch.device)   # [B, nmax, nmax]
    ids[b, i, j] = torch.arange(b.numel(), device=batch.device)
    return torch.stack([ptr[b] + i, ptr[b] + j]), ids[b, j, i]                # [2, E], [E]


def upper_edges(edge_index: torch.Tensor) -> torch.Tensor:
    """Mask ``[E]`` of the pairs ``i < j`` of a complete graph: one row per atom pair, in edge order (the layout
    of per-pair values such as bond tokens, edge latents and their bond labels)."""
    return edge_index[0] < edge_index[1]


def symmetric_edges(values: torch.Tensor, edge_index: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """Per-pair values ``[E_u, ...]`` (pairs ``i < j`` in edge order, any dtype) on both directions of the
    complete graph: ``[E, ...]``, the value of pair ``(i, j)`` on edge ``(i, j)`` and on edge ``(j, i)``."""
    upper = upper_edges(edge_index)
    out = values.new_zeros((edge_index.shape[1], *values.shape[1:]))
    out[upper] = values
    out[reverse[upper]] = values
    return out


def edge_bond_types(edge_index: torch.Tensor, bond_index: torch.Tensor, bond_type: torch.Tensor,
                    num_nodes: int) -> torch.Tensor:
    """Bond type of every edge of ``edge_index`` (0 = no bond) from a sparse bond list.

    Args:
        edge_index: ``[2, E]`` directed edges, any order (e.g. :func:`complete_graph`'s).
        bond_index: ``[2, M]`` bonded atom pairs, each bond listed once in either direction (or in both).
        bond_type: ``[M]`` type of each bond (>= 1, e.g. :class:`~molgen.data.molecule.BondOrder`).
        num_nodes: number of atoms (the node ids are ``< num_nodes``).

    Returns:
        ``[E]`` long: the bond type of ``(i, j)`` and of ``(j, i)`` for every bond, 0 for every other edge.
    """
    keys = edge_index[0] * num_nodes + edge_index[1]                                    # [E]
    both = torch.cat([bond_index[0] * num_nodes + bond_index[1], bond_index[1] * num_nodes + bond_index[0]])
    order = torch.cat([bond_type, bond_type])                                           # [2M]
    sorted_keys, perm = both.sort()
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=max(len(sorted_keys) - 1, 0))  # [E]
    hit = sorted_keys[pos] == keys if len(sorted_keys) else torch.zeros_like(keys, dtype=torch.bool)
    labels = torch.zeros_like(keys)
    labels[hit] = order[perm[pos[hit]]].to(labels.dtype)
    return labels
