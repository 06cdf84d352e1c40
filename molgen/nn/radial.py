r"""Radial basis expansions of interatomic distances.

:class:`GaussianRBF`: ``n`` Gaussians :math:`\exp(-((d - \mu_k)/\sigma)^2)`, centres ``linspace(d_min, d_max, n)``,
width :math:`\sigma = (d_{max} - d_{min}) / n` (FlowMol's convention, used by the GVP networks), optionally times
the cosine cutoff envelope :math:`\tfrac12(\cos(\pi d / d_{max}) + 1)` (0 beyond ``d_max``; as in
SchNet/PhysNet-style cutoffs), which makes messages vanish smoothly at the cutoff radius (the Gaunt backbone).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GaussianRBF(nn.Module):
    r"""Gaussian radial basis, optionally with a smooth cosine cutoff (see the module docstring).

    Args:
        n: number of Gaussians.
        d_min, d_max: first and last centre (Angstrom); ``d_max`` is also the cutoff radius of the envelope.
        cosine_cutoff: multiply by :math:`\tfrac12(\cos(\pi \min(d/d_{max}, 1)) + 1)`.
        persistent: keep the centres in the state dict (the Gaunt backbone's checkpoints carry them).

    Shapes: ``d [...]`` -> ``[..., n]``.
    """

    def __init__(self, n: int = 32, d_min: float = 0.0, d_max: float = 14.0, cosine_cutoff: bool = False,
                 persistent: bool = False):
        super().__init__()
        if n < 1 or not d_max > d_min:
            raise ValueError(f"GaussianRBF needs n >= 1 and d_max > d_min, got n={n}, [{d_min}, {d_max}]")
        self.register_buffer("centers", torch.linspace(d_min, d_max, n), persistent=persistent)
        self.d_max, self.sigma, self.cosine_cutoff = float(d_max), (d_max - d_min) / n, cosine_cutoff

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        out = torch.exp(-(((d.unsqueeze(-1) - self.centers) / self.sigma) ** 2))
        if self.cosine_cutoff:
            envelope = 0.5 * (torch.cos(math.pi * (d / self.d_max).clamp(max=1.0)) + 1.0)
            out = out * envelope.unsqueeze(-1)
        return out

    def __repr__(self) -> str:
        cut = ", cosine_cutoff" if self.cosine_cutoff else ""
        return f"GaussianRBF({self.centers.numel()}, [{float(self.centers[0])}, {float(self.centers[-1])}]{cut})"
