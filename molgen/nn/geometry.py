"""Rigid-body geometry of point sets, batched and masked: Kabsch rotations and alignment, rotation vectors.

Conventions: points are rows ``[..., n, 3]``; a rotation ``R [..., 3, 3]`` acts on column vectors, so a point set
turns as ``p @ R^T`` (e3nn's and :func:`torch.linalg.matrix_exp`'s convention). ``mask [..., n]`` marks real atoms
of a padded batch; padding rows take no part and come back at zero.
"""
from __future__ import annotations

import torch


def _weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return (torch.ones_like(x[..., 0]) if mask is None else mask.to(x.dtype))[..., None]       # [..., n, 1]


def centred(x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x minus its centroid over real atoms (padding zeroed), the centroid [..., 1, 3])``."""
    m = _weights(x, mask)
    c = (x * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp(min=1)
    return (x - c) * m, c


def kabsch_rotation(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The proper rotation ``R [..., 3, 3]`` minimising ``|p R^T - q|`` over real atoms, for centred ``p, q``
    ``[..., n, 3]`` (a reflection is never returned)."""
    m = _weights(p, mask)
    h = (p * m).transpose(-1, -2).double() @ (q * m).double()                                   # [..., 3, 3]
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return (vt.transpose(-1, -2) @ diag @ u.transpose(-1, -2)).to(p.dtype)


def kabsch_align(mobile: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mobile`` rotated and translated onto ``target`` (least squares over real atoms, no reflection)."""
    p, _ = centred(mobile, mask)
    q, c = centred(target, mask)
    return (p @ kabsch_rotation(p, q, mask).transpose(-1, -2) + c) * _weights(target, mask)


def rotation_vector(R: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3] -> [..., 3]``: axis times angle (radians) of proper rotations (angles below pi)."""
    v = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1) / 2
    s = v.norm(dim=-1)                                                                          # sin(angle)
    angle = torch.atan2(s, ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    return v * torch.where(s > 1e-12, angle / s.clamp(min=1e-12), torch.ones_like(s))[..., None]


def skew(w: torch.Tensor) -> torch.Tensor:
    """``[..., 3] -> [..., 3, 3]``: the matrix of ``w x .`` (``matrix_exp(skew(w))`` turns by ``|w|`` about ``w``)."""
    z = torch.zeros_like(w[..., 0])
    return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1), torch.stack([w[..., 2], z, -w[..., 0]], -1),
                        torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)
