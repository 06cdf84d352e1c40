r"""EDM-style variational diffusion on point clouds with invariant features (Hoogeboom et al. 2022); used by SiLD.

Equivariant Diffusion for Molecule Generation, https://arxiv.org/abs/2203.17003, in the variational-diffusion
parameterisation of Kingma et al. 2021 (https://arxiv.org/abs/2107.00630). A sample is a molecule's atoms:
equivariant positions ``x [n, 3]`` (kept in the zero-centre-of-mass subspace) and invariant features
``h [n, k]`` (GeoLDM's latents, or EDM's scaled one-hot atom types). Forward process, variance preserving, on
the ``polynomial_2`` :class:`~molgen.generative.schedule.NoiseSchedule` (``T + 1`` levels at ``t = k / T``):

.. math::
    z_t = \alpha_t\,[x, h] + \sigma_t\,\epsilon,\qquad \alpha_t^2 + \sigma_t^2 = 1

with :math:`\epsilon_x` a zero-centre-of-mass Gaussian per molecule. A network predicts :math:`\epsilon`; the
training loss is EDM's simple L2, :math:`\|\epsilon - \hat\epsilon(z_t, t)\|^2` averaged over the molecule's
coordinates. Because the prior and the noise are rotation invariant and the network is equivariant, the learned
density is invariant under rotations and translations of ``x``.

This module holds only what is specific to point clouds (the ``(x, h)`` layout, centred noise, the loss, EDM's
step-count convention); the schedule is :func:`~molgen.generative.schedule.polynomial_schedule` and the samplers
are :func:`molgen.generative.diffusion.sample` with ``prediction="eps"``: ``ancestral`` is EDM's
:math:`p(z_s \mid z_t)` (posterior variance, exact for any ``s < t``, so fewer steps means a strided chain) and
``ddim`` the deterministic DDIM update (:math:`\eta = 0`).
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from molgen.generative.diffusion import SAMPLERS, level_grid, q_sample, sample
from molgen.generative.gaussian_path import centred_noise, molecule_mean, remove_mean
from molgen.generative.schedule import polynomial_schedule


class Denoiser(Protocol):
    """``(x_t [n,3], h_t [n,k], t [B], batch [n], num_graphs, context) -> (eps_x [n,3], eps_h [n,k])``."""

    def __call__(self, x_t: torch.Tensor, h_t: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                 num_graphs: int, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...


class EquivariantDiffusion(nn.Module):
    r"""The diffusion process over ``(x, h)`` and its two samplers (see the module docstring).

    Args:
        timesteps: ``T`` (1000); the schedule has ``T + 1`` levels, the network sees ``t = k / T``.
        power: schedule power (2).
        precision: schedule floor (1e-5).

    Shapes:
        x ``[n, 3]`` (zero mean per molecule), h ``[n, k]``, batch ``[n]`` sorted molecule index.
    """

    def __init__(self, timesteps: int = 1000, power: float = 2.0, precision: float = 1e-5):
        super().__init__()
        self.schedule = polynomial_schedule(timesteps, power, precision)

    @property
    def timesteps(self) -> int:
        return self.schedule.num_levels - 1

    def noise(self, batch: torch.Tensor, num_graphs: int, k: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard noise: zero-centre-of-mass Gaussian positions ``[n, 3]`` and Gaussian features ``[n, k]``."""
        return centred_noise(batch, num_graphs, k, generator)

    def loss(self, denoiser: Denoiser, x: torch.Tensor, h: torch.Tensor, batch: torch.Tensor, num_graphs: int,
             context: torch.Tensor | None = None, t: torch.Tensor | None = None,
             noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        r"""EDM's simple L2 loss per molecule, :math:`\frac{1}{N(3+k)}\|\epsilon - \hat\epsilon\|^2`.

        Args:
            t: ``[B]`` times in ``[0, 1]``; default uniform on the grid ``{0, 1/T, ..., 1}``.
            noise: ``(eps_x, eps_h)``; default fresh noise.

        Returns:
            ``[B]`` loss per molecule.
        """
        if t is None:
            t = torch.randint(0, self.timesteps + 1, (num_graphs,), device=x.device).float() / self.timesteps
        eps_x, eps_h = noise if noise is not None else self.noise(batch, num_graphs, h.shape[1])
        level = self.schedule.level(t)[batch]                                     # [n]
        x_t = q_sample(self.schedule, x, level, eps_x)                            # [n, 3]
        h_t = q_sample(self.schedule, h, level, eps_h)                            # [n, k]
        pred_x, pred_h = denoiser(x_t, h_t, t, batch, num_graphs, context)
        err = ((pred_x - eps_x) ** 2).sum(-1) + ((pred_h - eps_h) ** 2).sum(-1)   # [n]
        return molecule_mean(err, batch, num_graphs, 3 + h.shape[1])

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, batch: torch.Tensor, num_graphs: int, k: int,
               context: torch.Tensor | None = None, steps: int | None = None, sampler: str = "ancestral",
               generator: torch.Generator | None = None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(x [n, 3], h [n, k])`` from the model for molecules laid out by ``batch``.

        Args:
            steps: number of denoising steps between noise levels, in ``1..T`` (default ``T``; fewer gives a
                strided chain over ``steps + 1`` evenly spaced levels, then the step to the data).
            sampler: ``ancestral`` (stochastic, EDM) or ``ddim`` (deterministic).
            generator: torch RNG for reproducible samples.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
        steps = steps or self.timesteps
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")

        def predict(z: torch.Tensor, level: int) -> torch.Tensor:                # z [n, 3 + k]
            t = torch.full((num_graphs,), self.schedule.time(level), device=batch.device)
            return torch.cat(denoiser(z[:, :3], z[:, 3:], t, batch, num_graphs, context), -1)

        def noise() -> torch.Tensor:
            return torch.cat(self.noise(batch, num_graphs, k, generator), -1)

        def project(z: torch.Tensor) -> torch.Tensor:
            return torch.cat([remove_mean(z[:, :3], batch, num_graphs), z[:, 3:]], -1)

        z = sample(self.schedule, predict, noise(), level_grid(self.schedule.num_levels, steps + 1), sampler,
                   prediction="eps", variance="small", noise=noise, project=project, progress=progress)
        return z[:, :3], z[:, 3:]
