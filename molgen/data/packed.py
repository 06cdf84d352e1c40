"""Many small PyG graphs stored as a few concatenated tensors (one weights-only ``.pt`` file).

:class:`PackedGraphs` is a :class:`~molgen.data.graph.PackedGraphStore` (the storage :class:`GraphDataset` uses:
PyG's collate/separate, concatenated tensors plus slices) of graphs with node-level tensors (``x``, ``pos``,
``z``), edge-level tensors (``edge_index``, ``edge_attr``) and a graph-level tensor (``y``), so a data set of 50k
molecules is one ``torch.save`` of plain tensors that loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch_geometric.data import Data

from molgen.data.graph import PackedGraphStore
from molgen.errors import DataError

#: The attributes a graph may carry besides ``edge_index`` (others are not stored), by level.
NODE_KEYS = ("x", "pos", "z")
EDGE_KEYS = ("edge_attr",)
GRAPH_KEYS = ("y",)


class PackedGraphs(PackedGraphStore):
    """A list of graphs with the same attributes, packed. Items: ``edge_index``, those of ``x``, ``pos``, ``z``,
    ``edge_attr``, ``y`` the graphs had, ``num_nodes`` and ``idx`` (the graph's ``idx``, default its position).

    Args:
        tensors: the dict written by :meth:`save` (built by :meth:`from_graphs`), or a format-1 one.
    """

    KIND = "PackedGraphs"

    @classmethod
    def from_graphs(cls, graphs: Sequence[Data], meta: dict | None = None) -> "PackedGraphs":
        if not graphs:
            raise DataError("empty data set: no graph to store")
        keys = ["edge_index", *(k for k in (*NODE_KEYS, *EDGE_KEYS, *GRAPH_KEYS) if k in graphs[0])]
        idx = [int(g.idx) if "idx" in g else i for i, g in enumerate(graphs)]
        return cls(cls._collate(list(graphs), keys, idx, meta))

    @classmethod
    def _from_format1(cls, t: dict) -> dict:
        """Format 1: ``node_ptr``/``edge_ptr`` pointers, the stored attributes listed in ``keys``."""
        if "node_ptr" not in t or "keys" not in t:
            return super()._from_format1(t)
        nodes, edges, graphs = t["node_ptr"], t["edge_ptr"], torch.arange(len(t["idx"]) + 1)
        slices = {"edge_index": edges, **{k: nodes if k in NODE_KEYS else edges if k in EDGE_KEYS else graphs
                                          for k in t["keys"]}}
        return {"data": {k: t[k] for k in slices}, "slices": slices, "num_nodes": nodes.diff(), "idx": t["idx"],
                "meta": t["meta"]}
