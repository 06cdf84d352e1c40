"""Interpolant schedules: how far along the path from prior (t=0) to data (t=1) a modality is at time t."""
from __future__ import annotations

import math
from typing import Protocol

import torch


class Schedule(Protocol):
    """``alpha(t)`` in [0, 1] with ``alpha(0) = 0``, ``alpha(1) = 1``, and its derivative ``d_alpha(t)``."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor: ...


class LinearSchedule:
    r""":math:`\alpha_t = t` (PropMolFlow/FlowMol2 use it for every modality)."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return "LinearSchedule()"


class CosineSchedule:
    r""":math:`\alpha_t = \sin^2(\pi t / 2)` (FlowMol's configurable but unused alternative)."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(0.5 * math.pi * t) ** 2

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * torch.sin(math.pi * t)

    def __repr__(self) -> str:
        return "CosineSchedule()"
