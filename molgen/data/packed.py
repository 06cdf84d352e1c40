"""Many small PyG graphs stored as a few concatenated tensors (one weights-only ``.pt`` file).

:class:`PackedGraphs` keeps node-level tensors (``x``, ``pos``, ``z``), edge-level tensors (``edge_index``,
``edge_attr``) and graph-level tensors (``y``) concatenated with pointer arrays, so a data set of 50k
molecules is one ``torch.save`` of plain tensors that loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch_geometric.data import Data

from molgen.data.graph import load_tensors, save_tensors
from molgen.errors import DataError

NODE_KEYS = ("x", "pos", "z")
EDGE_KEYS = ("edge_attr",)
GRAPH_KEYS = ("y",)


class PackedGraphs(torch.utils.data.Dataset):
    """A list of graphs with the same attributes, packed.

    Args:
        tensors: the dict written by :meth:`save` (built by :meth:`from_graphs`).
    """

    def __init__(self, tensors: dict):
        self.t = tensors

    @classmethod
    def from_graphs(cls, graphs: Sequence[Data], meta: dict | None = None) -> "PackedGraphs":
        if not graphs:
            raise DataError("empty data set: no graph to store")
        keys = [k for k in (*NODE_KEYS, *EDGE_KEYS, *GRAPH_KEYS) if k in graphs[0]]
        n_nodes = torch.tensor([g.num_nodes for g in graphs])
        n_edges = torch.tensor([g.edge_index.shape[1] for g in graphs])
        t: dict = {"meta": dict(meta or {}), "keys": keys,
                   "node_ptr": torch.cat([torch.zeros(1, dtype=torch.long), n_nodes.cumsum(0)]),
                   "edge_ptr": torch.cat([torch.zeros(1, dtype=torch.long), n_edges.cumsum(0)]),
                   "edge_index": torch.cat([g.edge_index for g in graphs], 1),
                   "idx": torch.tensor([int(g.idx) if "idx" in g else i for i, g in enumerate(graphs)])}
        for k in keys:
            t[k] = torch.cat([g[k] for g in graphs])
        return cls(t)

    def save(self, path: str | Path) -> Path:
        return save_tensors(self.t, path)

    @classmethod
    def load(cls, path: str | Path) -> "PackedGraphs":
        return cls(load_tensors(path))

    @property
    def meta(self) -> dict:
        return self.t["meta"]

    def __len__(self) -> int:
        return len(self.t["idx"])

    def __getitem__(self, i: int) -> Data:
        n0, n1 = int(self.t["node_ptr"][i]), int(self.t["node_ptr"][i + 1])
        e0, e1 = int(self.t["edge_ptr"][i]), int(self.t["edge_ptr"][i + 1])
        d = Data(edge_index=self.t["edge_index"][:, e0:e1], num_nodes=n1 - n0, idx=int(self.t["idx"][i]))
        for k in self.t["keys"]:
            if k in NODE_KEYS:
                d[k] = self.t[k][n0:n1]
            elif k in EDGE_KEYS:
                d[k] = self.t[k][e0:e1]
            else:
                d[k] = self.t[k][i : i + 1]
        return d
