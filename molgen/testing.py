"""Helpers for testing symmetry contracts, shipped so downstream code can test its layers the same way."""
from __future__ import annotations

import torch


def random_orthogonal(seed: int, proper: bool = True, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A Haar-random rotation (``proper=True``, det +1) or rotoreflection (det -1), ``[3, 3]``, reproducible."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)
