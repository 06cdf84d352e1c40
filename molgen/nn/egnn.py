r"""E(n)-equivariant graph neural network (EGNN) layers: one configurable layer for every EGNN in molgen.

Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021,
https://arxiv.org/abs/2102.09844. One :class:`EGNNLayer` computes, for every edge ``(i, j)`` (messages flow
``j -> i``),

.. math::
    m_{ij} = \phi_e(h_i, h_j, d_{ij}^2, a_{ij}),\qquad
    h_i \leftarrow h_i + \phi_h\Big(h_i, \tfrac{1}{Z}\textstyle\sum_j m_{ij}\Big)

with ``d_ij = ||x_i - x_j||`` and invariant edge attributes ``a_ij``, plus, as configured,

* an attention gate ``m_ij <- m_ij sigmoid(phi_att(m_ij))`` (EDM, Hoogeboom et al. 2022,
  https://arxiv.org/abs/2203.17003);
* a coordinate update, either EDM's bounded step on normalised differences (``coord_step="tanh"``)

  .. math:: x_i \leftarrow x_i + \tfrac{1}{Z}\textstyle\sum_j \frac{x_i - x_j}{d_{ij} + 1}\, r\,\tanh(\phi_x(m_{ij}))

  or the paper's step (``coord_step="linear"``, as EGNO's code: each edge's term clamped to ``+-coords_clamp``)

  .. math:: \Delta_i = \tfrac{1}{|N(i)|}\textstyle\sum_j (x_i - x_j)\,\phi_x(m_{ij});

* the paper's velocity term (``velocity=True``): ``v_i <- phi_v(h_i) v_i + Delta_i``, ``x_i <- x_i + v_i``;
* an edge-feature update ``a_ij <- LN(a_ij + phi_a(m_ij))`` (CPDiffusion-SS's ``EGNN_Sparse``);
* no coordinate update at all (``update_coords=False``): an invariant layer that sees geometry only through
  ``d_ij^2``.

Scalars ``h`` (and edge features) are E(3)-invariant, positions and velocities equivariant (rotations,
reflections, translations); everything is equivariant to permutations of the nodes. Graphs are sparse edge
lists (``edge_index``) or dense padded adjacency blocks (``adj``).

The layer's users in molgen: :class:`EGNN` (EDM/GeoLDM, used by SiLD), CPDiffusion-SS's
:class:`~molgen.models.cpdiffusion_ss.denoiser.SSGraphDenoiser` (invariant, edge update) and EGNO's
:class:`~molgen.models.atom.egno.EGNO` (velocity, dense graphs). Written here (not taken from a library) because
neither PyG nor e3nn ships these variants; PyG's message passing is not used because the layer is four small
MLPs and two ``index_add_`` scatters.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: Attribute (state-dict) names of the sub-networks by role; ``module_names`` overrides them.
DEFAULT_NAMES = {"message": "edge_mlp", "attention": "attention", "node": "node_mlp", "coord": "coord_mlp",
                 "velocity": "velocity_mlp", "edge": "edge_update", "edge_norm": "edge_norm"}
COORD_STEPS = ("tanh", "linear")


def _mlp(d_in: int, d_hidden: int, d_out: int, last_act: bool = True, dropout: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, d_hidden), nn.SiLU()]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(d_hidden, d_out))
    if last_act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EGNNLayer(nn.Module):
    r"""One configurable EGNN layer (see the module docstring for the update rules).

    The defaults are EDM's layer (attention, ``tanh`` coordinate update). The other configurations in molgen:

    * CPDiffusion-SS denoiser: ``update_coords=False, attention=False, edge_attr_dim=hidden, update_edges=True,
      message_hidden=4 * hidden, node_hidden=2 * hidden, dropout=p, distance_last=True``;
    * EGNO: ``attention=False, coord_step="linear", velocity=True, edge_attr_dim=4`` on dense graphs.

    Args:
        hidden: width of ``h`` and of the messages.
        edge_attr_dim: width of the invariant edge attributes ``a_ij`` (0 for none).
        update_coords: move the nodes (False: ``x`` is returned unchanged; the layer is E(3)-invariant).
        coords_range: ``r``, the largest move one edge can cause with ``coord_step="tanh"`` (EDM: 15).
        norm_factor: ``Z``, divisor of the summed messages (and of the ``tanh`` coordinate steps); EDM on QM9: 1.
        attention: gate every message by ``sigmoid(phi_att(m_ij))`` (EDM).
        coord_step: ``"tanh"`` (EDM) or ``"linear"`` (Satorras et al.: mean over neighbours of
            ``(x_i - x_j) phi_x(m_ij)``, each clamped to ``+-coords_clamp``).
        coords_clamp: clamp of the ``"linear"`` per-edge step (EGNO: 100).
        velocity: keep a velocity ``v`` (Satorras et al. eq. 7): ``v <- phi_v(h) v + Delta``, ``x <- x + v``.
        update_edges: return updated edge features ``LN(a + phi_a(m))`` (needs ``edge_attr_dim == hidden``).
        message_hidden, node_hidden: hidden widths of ``phi_e`` and ``phi_h`` (default ``hidden``).
        dropout: a dropout layer in ``phi_e`` after its first activation (None: no layer).
        distance_last: message input ``[h_i, h_j, a_ij, d_ij^2]`` instead of ``[h_i, h_j, d_ij^2, a_ij]``.
        module_names: attribute names of the sub-networks by role (``message``, ``attention``, ``node``,
            ``coord``, ``velocity``, ``edge``, ``edge_norm``), i.e. their state-dict keys; unnamed roles keep
            :data:`DEFAULT_NAMES`. Lets every model keep the parameter names its checkpoints were saved with.

    Sub-networks are created in a fixed order (message, attention, node, coord, velocity, edge), which keeps the
    seeded initialisation of the EDM and CPDiffusion-SS layers as before they shared this class.

    Shapes:
        sparse: h ``[n, hidden]``, x ``[n, 3]``, edge_index ``[2, E]`` (``(i, j)``: message ``j -> i``),
        edge_attr ``[E, edge_attr_dim]``, v ``[n, 3]``;
        dense (``adj`` given, ``edge_index`` None): h ``[G, N, hidden]``, x ``[G, N, 3]``, adj ``[G, N, N]`` bool
        (``adj[g, i, j]``: message ``j -> i``), edge_attr ``[G, N, N, edge_attr_dim]``, v ``[G, N, 3]``.
        Returns ``(h, x)``, then ``v`` if ``velocity``, then the edge features if ``update_edges``.
    """

    def __init__(self, hidden: int, edge_attr_dim: int = 0, update_coords: bool = True, coords_range: float = 15.0,
                 norm_factor: float = 1.0, attention: bool = True, coord_step: str = "tanh",
                 coords_clamp: float = 100.0, velocity: bool = False, update_edges: bool = False,
                 message_hidden: int | None = None, node_hidden: int | None = None, dropout: float | None = None,
                 distance_last: bool = False, module_names: Mapping[str, str] | None = None):
        super().__init__()
        if coord_step not in COORD_STEPS:
            raise ValueError(f"coord_step must be one of {COORD_STEPS}, got {coord_step!r}")
        if velocity and not update_coords:
            raise ValueError("velocity=True needs update_coords=True")
        if update_edges and edge_attr_dim != hidden:
            raise ValueError(f"update_edges needs edge_attr_dim == hidden, got {edge_attr_dim} and {hidden}")
        unknown = set(module_names or {}) - set(DEFAULT_NAMES)
        if unknown:
            raise ValueError(f"unknown module roles {sorted(unknown)} (choose from {sorted(DEFAULT_NAMES)})")
        self.hidden, self.edge_attr_dim, self.update_coords = hidden, edge_attr_dim, update_coords
        self.coords_range, self.norm_factor = float(coords_range), float(norm_factor)
        self.coords_clamp = float(coords_clamp)
        self.use_attention, self.coord_step, self.velocity = attention, coord_step, velocity
        self.update_edges, self.distance_last = update_edges, distance_last
        self._role_names = {**DEFAULT_NAMES, **(module_names or {})}
        add = self._add
        add("message", _mlp(2 * hidden + 1 + edge_attr_dim, message_hidden or hidden, hidden, dropout=dropout))
        if attention:
            add("attention", nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid()))
        add("node", _mlp(2 * hidden, node_hidden or hidden, hidden, last_act=False))
        if update_coords:
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=0.001)  # start close to the identity on positions
            add("coord", nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last))
        if velocity:
            add("velocity", _mlp(hidden, hidden, 1, last_act=False))
        if update_edges:
            add("edge", _mlp(hidden, hidden, hidden, last_act=False))
            add("edge_norm", nn.LayerNorm(hidden))

    def _add(self, role: str, module: nn.Module) -> None:
        setattr(self, self._role_names[role], module)

    def _part(self, role: str) -> nn.Module:
        return getattr(self, self._role_names[role])

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None, v: torch.Tensor | None = None,
                adj: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if (edge_index is None) == (adj is None):
            raise ValueError("pass exactly one of edge_index (sparse graph) and adj (dense graph)")
        if (edge_attr is None) != (self.edge_attr_dim == 0):
            raise ValueError(f"this layer was built with edge_attr_dim={self.edge_attr_dim}, got edge_attr "
                             f"{None if edge_attr is None else tuple(edge_attr.shape)}")
        if self.velocity and v is None:
            raise ValueError("this layer has a velocity term: pass v")
        dense = adj is not None
        if dense:
            G, N, H = h.shape
            diff = x[:, :, None] - x[:, None]                                  # [G, N, N, 3]
            h_i, h_j = h[:, :, None].expand(G, N, N, H), h[:, None].expand(G, N, N, H)
            mask = adj[..., None].to(h.dtype)                                  # [G, N, N, 1]
        else:
            i, j = edge_index
            diff = x[i] - x[j]                                                 # [E, 3]
            h_i, h_j = h[i], h[j]

        def aggregate(t: torch.Tensor) -> torch.Tensor:                       # sum over the neighbours j of i
            return t.sum(-2) if dense else t.new_zeros(h.shape[0], t.shape[-1]).index_add_(0, i, t)

        d2 = (diff * diff).sum(-1, keepdim=True)                               # [E, 1]
        attrs = [] if edge_attr is None else [edge_attr]
        m = self._part("message")(torch.cat([h_i, h_j] + (attrs + [d2] if self.distance_last else [d2] + attrs), -1))
        if self.use_attention:
            m = m * self._part("attention")(m)                                 # [E, hidden]
        if dense:
            m = m * mask
        out_x, out_v = x, v
        if self.update_coords:
            phi_x = self._part("coord")(m)                                     # [E, 1]
            if self.coord_step == "tanh":
                step = diff / (d2.sqrt() + 1.0) * torch.tanh(phi_x) * self.coords_range
            else:
                step = (diff * phi_x).clamp(-self.coords_clamp, self.coords_clamp)
            if dense:
                step = step * mask
            if self.coord_step == "tanh":
                delta = aggregate(step) / self.norm_factor                     # [n, 3]
            else:
                degree = (mask.sum(-2) if dense else
                          torch.bincount(i, minlength=h.shape[0]).to(x.dtype).unsqueeze(-1)).clamp(min=1)
                delta = aggregate(step) / degree
            if self.velocity:
                out_v = self._part("velocity")(h) * v + delta
                out_x = x + out_v
            else:
                out_x = x + delta
        agg = aggregate(m) / self.norm_factor                                  # [n, hidden]
        out = (h + self._part("node")(torch.cat([h, agg], -1)), out_x)
        if self.velocity:
            out += (out_v,)
        if self.update_edges:
            out += (self._part("edge_norm")(edge_attr + self._part("edge")(m)),)
        return out

    def extra_repr(self) -> str:
        s = f"hidden={self.hidden}, edge_attr_dim={self.edge_attr_dim}, update_coords={self.update_coords}"
        if self.update_coords:
            s += f", coord_step={self.coord_step!r}"
            s += f", coords_range={self.coords_range}" if self.coord_step == "tanh" else f", clamp={self.coords_clamp}"
        return s + f", attention={self.use_attention}, velocity={self.velocity}, update_edges={self.update_edges}"


class EGNN(nn.Module):
    r"""A stack of EDM :class:`EGNNLayer` s between an input and an output linear map on the scalars.

    The edge attributes are the squared distances of the *input* geometry (EDM feeds them to every layer so the
    network keeps seeing the starting geometry while positions move).

    Args:
        in_dim: width of the input scalars.
        out_dim: width of the output scalars.
        hidden: hidden width (EDM/GeoLDM: 256).
        n_layers: number of EGNN layers (EDM/GeoLDM dynamics: 9; GeoLDM encoder: 1).
        update_coords: whether the layers move the atoms.
        coords_range: per-layer coordinate range (EDM: 15).
        norm_factor: aggregation normaliser (EDM on QM9: 1).

    Shapes:
        h ``[n, in_dim]``, x ``[n, 3]``, edge_index ``[2, E]`` -> (h ``[n, out_dim]``, x ``[n, 3]``).
        Equivariance: ``EGNN(h, x R + t)`` = ``(h', x' R + t)`` for any orthogonal ``R`` and translation ``t``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, n_layers: int = 4, update_coords: bool = True,
                 coords_range: float = 15.0, norm_factor: float = 1.0):
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_attr_dim=1, update_coords=update_coords, coords_range=coords_range,
                      norm_factor=norm_factor) for _ in range(n_layers))
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = edge_index
        d2_0 = ((x[i] - x[j]) ** 2).sum(-1, keepdim=True)                       # [E, 1]
        h = self.embed(h)
        for layer in self.layers:
            h, x = layer(h, x, edge_index, d2_0)
        return self.out(h), x
