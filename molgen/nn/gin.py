"""GIN encoder of Hu et al. 2020 with bond-feature embeddings, as used by GraphMVP.

Xu et al., "How Powerful are Graph Neural Networks?" (https://arxiv.org/abs/1810.00826), in the form of Hu et
al. 2020 (https://arxiv.org/abs/1905.12265) that GraphMVP (https://arxiv.org/abs/2110.07728) pretrains:

.. math::
    h_i^{(l+1)} = \\mathrm{MLP}^{(l)}\\Big(\\sum_{j \\in \\mathcal{N}(i) \\cup \\{i\\}}
                  h_j^{(l)} + e^{(l)}_{\\mathrm{type}}(b_{ji}) + e^{(l)}_{\\mathrm{dir}}(b_{ji})\\Big)

with a self-loop of its own bond type per atom, then BatchNorm, ReLU (not after the last layer) and dropout;
the node representation is the last layer's (JK "last"), the graph representation its mean over atoms.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MessagePassing, global_add_pool, global_mean_pool
from torch_geometric.utils import add_self_loops

READOUTS = ("mean", "layers-sum", "layers-mean-sum")


class GINEdgeConv(MessagePassing):
    """One GIN layer with summed bond-type and bond-direction embeddings in the message.

    PyG's :class:`~torch_geometric.nn.conv.GINEConv` applies a ReLU to ``x_j + e_ji`` and weights the centre
    by ``1 + eps`` without a self-loop edge type; Hu et al.'s layer (the one GraphMVP's checkpoints use)
    adds self-loops with their own bond type and sums ``x_j + e_ji`` plainly, so it is written here.

    Args:
        emb_dim: node feature size ``d`` (300 in the paper); the MLP is ``d -> 2d -> d``.
        num_bond_types: rows of the bond-type embedding (including the self-loop and mask types).
        num_bond_directions: rows of the bond-direction embedding.
        self_loop_bond_index: the bond type given to the self-loop edges.

    Shapes:
        x ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, 2]`` long -> ``[N, d]``.
    """

    def __init__(self, emb_dim: int, *, num_bond_types: int, num_bond_directions: int, self_loop_bond_index: int):
        super().__init__(aggr="add")
        if not 0 <= self_loop_bond_index < num_bond_types:
            raise ValueError(f"self_loop_bond_index={self_loop_bond_index} outside [0, {num_bond_types})")
        self.self_loop_bond_index = self_loop_bond_index
        self.mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim), nn.ReLU(), nn.Linear(2 * emb_dim, emb_dim))
        self.bond_type = nn.Embedding(num_bond_types, emb_dim)
        self.bond_dir = nn.Embedding(num_bond_directions, emb_dim)
        nn.init.xavier_uniform_(self.bond_type.weight)
        nn.init.xavier_uniform_(self.bond_dir.weight)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        edge_index, _ = add_self_loops(edge_index, num_nodes=n)
        loops = torch.zeros(n, 2, dtype=edge_attr.dtype, device=edge_attr.device)
        loops[:, 0] = self.self_loop_bond_index
        edge_attr = torch.cat([edge_attr, loops], 0)
        e = self.bond_type(edge_attr[:, 0]) + self.bond_dir(edge_attr[:, 1])
        return self.mlp(self.propagate(edge_index, x=x, e=e))

    def message(self, x_j: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return x_j + e


class GIN(nn.Module):
    """The 2D molecular graph encoder: atom embeddings, ``num_layers`` :class:`GINEdgeConv` layers.

    Args:
        num_layers: message-passing layers (5 in the paper).
        emb_dim: representation size (300 in the paper).
        dropout: dropout after every layer (0 in pretraining, 0.5 in fine-tuning).
        num_atom_types, num_chirality_tags: rows of the atom-type and chirality embeddings (the featurizer's
            vocabulary sizes, e.g. :data:`molgen.data.moleculenet.GIN_FEATURES`).
        num_bond_types, num_bond_directions, self_loop_bond_index: see :class:`GINEdgeConv`.

    Shapes:
        x ``[N, 2]`` long (atom type, chirality), edge_index ``[2, E]``, edge_attr ``[E, 2]`` long
        -> node representations ``[N, emb_dim]``; :meth:`embed_graph` -> ``[B, readout_dim(readout)]``.
    """

    def __init__(self, num_layers: int = 5, emb_dim: int = 300, dropout: float = 0.0, *, num_atom_types: int,
                 num_chirality_tags: int, num_bond_types: int, num_bond_directions: int, self_loop_bond_index: int):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"GIN needs at least 2 layers, got num_layers={num_layers}")
        self.num_layers, self.emb_dim, self.dropout = num_layers, emb_dim, dropout
        self.atom_type = nn.Embedding(num_atom_types, emb_dim)
        self.chirality = nn.Embedding(num_chirality_tags, emb_dim)
        nn.init.xavier_uniform_(self.atom_type.weight)
        nn.init.xavier_uniform_(self.chirality.weight)
        self.convs = nn.ModuleList(GINEdgeConv(emb_dim, num_bond_types=num_bond_types,
                                               num_bond_directions=num_bond_directions,
                                               self_loop_bond_index=self_loop_bond_index) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(emb_dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                all_layers: bool = False) -> torch.Tensor:
        h = self.atom_type(x[:, 0]) + self.chirality(x[:, 1])
        layers = []
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, edge_index, edge_attr))
            if layer < self.num_layers - 1:
                h = torch.relu(h)
            h = nn.functional.dropout(h, self.dropout, training=self.training)
            layers.append(h)
        # JK = last ([N, emb_dim]); all_layers: every layer's output concatenated, [N, num_layers * emb_dim]
        return torch.cat(layers, -1) if all_layers else h

    def embed_graph(self, data, readout: str = "mean") -> torch.Tensor:
        """Graph representation of a PyG batch (or one graph): ``readout="mean"`` (the fine-tuning readout: mean
        over atoms of the last layer, ``[B, emb_dim]``), ``"layers-sum"`` (sum over atoms of every layer's output,
        concatenated, ``[B, num_layers * emb_dim]``; InfoGraph's readout, which keeps molecule size and every
        receptive field) or ``"layers-mean-sum"`` (both pools of all layers, ``[B, 2 * num_layers * emb_dim]``)."""
        if readout not in READOUTS:
            raise ValueError(f"readout={readout!r}: choose from {', '.join(READOUTS)}")
        h = self(data.x, data.edge_index, data.edge_attr, all_layers=readout != "mean")
        batch = data.batch if getattr(data, "batch", None) is not None else h.new_zeros(h.size(0), dtype=torch.long)
        if readout == "mean":
            return global_mean_pool(h, batch)
        if readout == "layers-sum":
            return global_add_pool(h, batch)
        return torch.cat([global_mean_pool(h, batch), global_add_pool(h, batch)], -1)

    def readout_dim(self, readout: str = "mean") -> int:
        """Width of :meth:`embed_graph`'s output for ``readout``."""
        if readout not in READOUTS:
            raise ValueError(f"readout={readout!r}: choose from {', '.join(READOUTS)}")
        return {"mean": 1, "layers-sum": self.num_layers, "layers-mean-sum": 2 * self.num_layers}[readout] * self.emb_dim

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_layers={self.num_layers}, emb_dim={self.emb_dim}, dropout={self.dropout})"
