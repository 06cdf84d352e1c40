r"""EDM-style variational diffusion on point clouds with invariant features (Hoogeboom et al. 2022).

Equivariant Diffusion for Molecule Generation, https://arxiv.org/abs/2203.17003, in the variational-diffusion
parameterisation of Kingma et al. 2021 (https://arxiv.org/abs/2107.00630). A sample is a molecule's atoms:
equivariant positions ``x [n, 3]`` (kept in the zero-centre-of-mass subspace) and invariant features
``h [n, k]`` (GeoLDM's latents, or EDM's scaled one-hot atom types). Forward process, variance preserving:

.. math::
    z_t = \alpha_t\,[x, h] + \sigma_t\,\epsilon,\qquad \alpha_t^2 + \sigma_t^2 = 1,\qquad
    \gamma_t = \log(\sigma_t^2 / \alpha_t^2)

with :math:`\epsilon_x` a zero-centre-of-mass Gaussian per molecule. A network predicts :math:`\epsilon`; the
training loss is EDM's simple L2, :math:`\|\epsilon - \hat\epsilon(z_t, t)\|^2` averaged over the molecule's
coordinates. Because the prior and the noise are rotation invariant and the network is equivariant, the learned
density is invariant under rotations and translations of ``x``.

Sampling: ``ancestral`` is EDM's :math:`p(z_s \mid z_t)` (exact for any ``s < t``, so fewer steps means a
strided chain); ``ddim`` is the deterministic DDIM update (Song et al. 2021, https://arxiv.org/abs/2010.02502,
:math:`\eta = 0`), the probability-flow ODE discretised in :math:`\gamma`.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from molgen.generative.gaussian_path import centred_gaussian, remove_mean

SAMPLERS = ("ancestral", "ddim")


def polynomial_alphas2(timesteps: int, power: float = 2.0, precision: float = 1e-5) -> np.ndarray:
    r"""EDM's ``polynomial_2`` schedule: :math:`\alpha_t^2` on the grid ``t = 0, 1/T, ..., 1``.

    :math:`\alpha^2(t) = (1 - t^{p})^2`, made safe by clipping each step's ratio
    :math:`\alpha^2_{k}/\alpha^2_{k-1}` at 0.001 and squeezing into ``[precision, 1 - precision]``
    (:math:`\alpha^2 \leftarrow (1 - 2s)\alpha^2 + s`).

    Returns:
        ``[timesteps + 1]`` float64, decreasing from ``1 - precision`` to ``precision``.
    """
    t = np.linspace(0.0, 1.0, timesteps + 1)
    alphas2 = (1.0 - t ** power) ** 2
    ratio = np.clip(alphas2 / np.concatenate([[1.0], alphas2[:-1]]), 0.001, 1.0)
    alphas2 = np.cumprod(ratio)
    return (1.0 - 2.0 * precision) * alphas2 + precision


class PolynomialNoiseSchedule(nn.Module):
    r"""A fixed noise schedule on ``T`` steps, looked up at continuous ``t`` in ``[0, 1]`` (rounded to the grid).

    Args:
        timesteps: ``T`` (EDM/GeoLDM: 1000).
        power: the polynomial power (``polynomial_2``: 2).
        precision: ``s``, the floor of :math:`\alpha^2` and :math:`\sigma^2` (EDM: 1e-5).
    """

    def __init__(self, timesteps: int = 1000, power: float = 2.0, precision: float = 1e-5):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.timesteps, self.power, self.precision = int(timesteps), float(power), float(precision)
        a2 = polynomial_alphas2(self.timesteps, self.power, self.precision)
        gamma = np.log(1.0 - a2) - np.log(a2)                                  # log(sigma^2 / alpha^2)
        self.register_buffer("gamma_table", torch.tensor(gamma, dtype=torch.float32), persistent=False)

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\gamma_t` for ``t`` in ``[0, 1]`` (any shape)."""
        k = torch.round(t.clamp(0, 1) * self.timesteps).long()
        return self.gamma_table[k]

    @staticmethod
    def alpha(gamma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(-gamma))

    @staticmethod
    def sigma(gamma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(gamma))

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, power={self.power}, precision={self.precision}"


class Denoiser(Protocol):
    """``(x_t [n,3], h_t [n,k], t [B], batch [n], num_graphs, context) -> (eps_x [n,3], eps_h [n,k])``."""

    def __call__(self, x_t: torch.Tensor, h_t: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                 num_graphs: int, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...


class EquivariantDiffusion(nn.Module):
    r"""The diffusion process over ``(x, h)`` and its two samplers (see the module docstring).

    Args:
        timesteps: ``T`` (1000).
        power: schedule power (2).
        precision: schedule floor (1e-5).

    Shapes:
        x ``[n, 3]`` (zero mean per molecule), h ``[n, k]``, batch ``[n]`` sorted molecule index.
    """

    def __init__(self, timesteps: int = 1000, power: float = 2.0, precision: float = 1e-5):
        super().__init__()
        self.schedule = PolynomialNoiseSchedule(timesteps, power, precision)

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps

    def noise(self, batch: torch.Tensor, num_graphs: int, k: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard noise: zero-centre-of-mass Gaussian positions ``[n, 3]`` and Gaussian features ``[n, k]``."""
        eps_x = centred_gaussian(batch, generator, num_graphs)
        eps_h = torch.randn(batch.shape[0], k, generator=generator).to(batch.device)
        return eps_x, eps_h

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
        gamma = self.schedule.gamma(t)[batch].unsqueeze(-1)                      # [n, 1]
        alpha, sigma = self.schedule.alpha(gamma), self.schedule.sigma(gamma)
        x_t = alpha * x + sigma * eps_x                                           # [n, 3]
        h_t = alpha * h + sigma * eps_h                                           # [n, k]
        pred_x, pred_h = denoiser(x_t, h_t, t, batch, num_graphs, context)
        err = ((pred_x - eps_x) ** 2).sum(-1) + ((pred_h - eps_h) ** 2).sum(-1)   # [n]
        per_graph = x.new_zeros(num_graphs).index_add_(0, batch, err)
        n_atoms = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(x.dtype)
        return per_graph / (n_atoms * (3 + h.shape[1]))

    def time_grid(self, steps: int) -> list[int]:
        """``steps + 1`` integer times from ``T`` down to 0 (evenly spaced, no repeats)."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")
        grid = np.unique(np.round(np.linspace(0, self.timesteps, steps + 1)).astype(int))[::-1]
        return [int(v) for v in grid]

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, batch: torch.Tensor, num_graphs: int, k: int,
               context: torch.Tensor | None = None, steps: int | None = None, sampler: str = "ancestral",
               generator: torch.Generator | None = None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(x [n, 3], h [n, k])`` from the model for molecules laid out by ``batch``.

        Args:
            steps: number of denoising steps (default ``T``; fewer gives a strided chain).
            sampler: ``ancestral`` (stochastic, EDM) or ``ddim`` (deterministic).
            generator: torch RNG for reproducible samples.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
        grid = self.time_grid(steps or self.timesteps)
        T = float(self.timesteps)
        z_x, z_h = self.noise(batch, num_graphs, k, generator)

        def gammas(step: int) -> torch.Tensor:
            return self.schedule.gamma_table[step]

        def eps_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            t = torch.full((num_graphs,), step / T, device=batch.device)
            return denoiser(z_x, z_h, t, batch, num_graphs, context)

        pairs = list(zip(grid[:-1], grid[1:]))
        for t_step, s_step in tqdm(pairs, desc=f"sampling ({sampler}, {len(pairs)} steps)", disable=not progress,
                                   leave=False):
            g_t, g_s = gammas(t_step), gammas(s_step)
            e_x, e_h = eps_at(t_step)
            a_t, s_t = self.schedule.alpha(g_t), self.schedule.sigma(g_t)
            a_s, s_s = self.schedule.alpha(g_s), self.schedule.sigma(g_s)
            if sampler == "ddim":
                z_x = a_s * (z_x - s_t * e_x) / a_t + s_s * e_x
                z_h = a_s * (z_h - s_t * e_h) / a_t + s_s * e_h
            else:
                # q(z_t | z_s): alpha_{t|s} = a_t / a_s, sigma^2_{t|s} = 1 - alpha^2_{t|s}  (variance preserving)
                sigma2_ts = -torch.expm1(F.softplus(g_s) - F.softplus(g_t))
                a_ts = a_t / a_s
                mu_x = z_x / a_ts - sigma2_ts / (a_ts * s_t) * e_x
                mu_h = z_h / a_ts - sigma2_ts / (a_ts * s_t) * e_h
                std = torch.sqrt(sigma2_ts) * s_s / s_t
                n_x, n_h = self.noise(batch, num_graphs, k, generator)
                z_x, z_h = mu_x + std * n_x, mu_h + std * n_h
            z_x = remove_mean(z_x, batch, num_graphs)
        # final denoising at t = 0: the posterior mean of the data given z_0
        e_x, e_h = eps_at(0)
        g0 = gammas(0)
        a0, s0 = self.schedule.alpha(g0), self.schedule.sigma(g0)
        x = remove_mean((z_x - s0 * e_x) / a0, batch, num_graphs)
        h = (z_h - s0 * e_h) / a0
        return x, h

