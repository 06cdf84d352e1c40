"""Evaluation helpers for trajectory forecasters: measured equivariance error and report pictures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def equivariance_error(model, x0: torch.Tensor, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                       n_rotations: int = 8, seed: int = 0) -> float:
    """Mean relative rotation-equivariance error ``|f(R x, R v) - R f(x, v)| / |f(x, v)|``.

    Rotations are uniform random (e3nn's ``rand_matrix``) about the origin; positions are absolute, as the
    models see them. 0 for an exactly equivariant model up to float error; ATOM is quasi-equivariant.

    Shapes: x0, v0 ``[B, N, 3]``, z ``[B, N]``, mask ``[B, N]``.
    """
    from e3nn import o3

    was = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):  # seeded draws without resetting the caller's random stream
        torch.manual_seed(seed)
        base = model(x0, v0, z, mask)                                                 # [B, P, N, 3]
        errs = []
        for _ in range(n_rotations):
            R = o3.rand_matrix().to(x0.dtype)
            rotated = model(x0 @ R.T, v0 @ R.T, z, mask)
            errs.append(float((rotated - base @ R.T).norm() / base.norm().clamp(min=1e-12)))
    model.train(was)
    return float(np.mean(errs))


def plot_error_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], offsets_ps: np.ndarray, path: Path,
                      label: str = "model") -> Path:
    """MSE (1e-2 A^2) against forecast time, model (solid) vs static baseline (dashed), one colour per molecule."""
    from matplotlib.figure import Figure  # not pyplot: the caller's matplotlib backend stays as it is

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for k, (mol, (model_mse, static_mse)) in enumerate(curves.items()):
        c = f"C{k % 10}"
        ax.plot(offsets_ps, model_mse, "-o", color=c, ms=3, label=f"{mol} {label}")
        ax.plot(offsets_ps, static_mse, "--", color=c, alpha=0.6, label=f"{mol} static")
    ax.set_xlabel("forecast time (ps)")
    ax.set_ylabel("MSE (1e-2 Å²)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_overlay(x0: torch.Tensor, true: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, path: Path,
                 title: str = "") -> Path:
    """Predicted vs true heavy-atom positions for the first, middle and last forecast frame (x-y projection).

    Shapes: x0 ``[N, 3]``; true, pred ``[P, N, 3]``; mask ``[N]``.
    """
    from matplotlib.figure import Figure  # not pyplot: the caller's matplotlib backend stays as it is

    n = int(mask.sum())
    P = true.shape[0]
    frames = sorted({0, P // 2 - 1, P - 1})
    fig = Figure(figsize=(4 * len(frames), 3.8))
    axes = fig.subplots(1, len(frames))
    for ax, f in zip(np.atleast_1d(axes), frames):
        t, p = true[f, :n].numpy(), pred[f, :n].numpy()
        ax.scatter(*x0[:n, :2].numpy().T, c="lightgray", s=25, label="input x_t")
        ax.scatter(*t[:, :2].T, c="C0", s=30, label="true")
        ax.scatter(*p[:, :2].T, c="C3", marker="x", s=30, label="predicted")
        for a, b in zip(t, p):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="C3", lw=0.6, alpha=0.6)
        ax.set_title(f"frame {f + 1}/{P}")
        ax.set_aspect("equal")
        ax.set_xlabel("x (Å)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
