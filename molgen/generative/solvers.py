"""ODE solvers for the position flow with an endpoint-predicting network.

A solver advances positions from ``t`` to ``s`` given ``predict(x, t) -> (x1_hat, extra)``; ``extra`` (the
categorical logits) is that of the first evaluation, which the CTMC step then uses. Euler needs one network
evaluation per step; Heun (explicit trapezoid) two, except on the last step where the velocity at ``kappa=1``
is undefined and it falls back to Euler.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from molgen.generative.gaussian_path import GaussianPath

Predict = Callable[[torch.Tensor, float], tuple[torch.Tensor, Any]]


class Solver(Protocol):
    evaluations_per_step: int

    def step(self, predict: Predict, path: GaussianPath, x_t: torch.Tensor, t: float,
             s: float) -> tuple[torch.Tensor, Any]: ...


class EulerSolver:
    """``x_s = x_t + (s - t) u_t(x_t)``."""

    evaluations_per_step = 1

    def step(self, predict: Predict, path: GaussianPath, x_t: torch.Tensor, t: float,
             s: float) -> tuple[torch.Tensor, Any]:
        x1_hat, extra = predict(x_t, t)
        return x_t + (s - t) * path.velocity(x_t, x1_hat, t), extra


class HeunSolver:
    """``x' = x_t + h u_t(x_t)``, ``x_s = x_t + h/2 (u_t(x_t) + u_s(x'))`` (Euler on the last step)."""

    evaluations_per_step = 2

    def step(self, predict: Predict, path: GaussianPath, x_t: torch.Tensor, t: float,
             s: float) -> tuple[torch.Tensor, Any]:
        x1_hat, extra = predict(x_t, t)
        u_t = path.velocity(x_t, x1_hat, t)
        x_euler = x_t + (s - t) * u_t
        if float(path.schedule.kappa(torch.tensor(s))) >= 1.0 - 1e-6:
            return x_euler, extra
        x1_hat_s, _ = predict(x_euler, s)
        return x_t + 0.5 * (s - t) * (u_t + path.velocity(x_euler, x1_hat_s, s)), extra


def time_grid(steps: int, power: float = 1.0) -> list[float]:
    """``steps + 1`` times from 0 to 1 (``steps`` integration steps): ``t_k = 1 - (1 - k / steps) ** power``.
    ``power`` 1 spaces them equally; ``power`` > 1 makes the steps shrink towards t = 1, where the molecule's
    details (bond orders, exact geometry) settle."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return (1.0 - (1.0 - u) ** power).tolist()


SOLVERS: dict[str, type] = {"euler": EulerSolver, "heun": HeunSolver}


def get_solver(name: str) -> Solver:
    """A solver by name, or ValueError naming the choices."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}' (choose from {', '.join(SOLVERS)})")
    return SOLVERS[name]()
