"""Gaussian diffusion over element latents (DDPM, Ho et al. 2020) with x0-prediction, as CPDiffusion-SS.

Forward process :math:`z_t = \\sqrt{\\bar\\alpha_t} z_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon`; the network predicts
:math:`\\hat z_0` and the loss is :math:`\\lVert \\hat z_0 - z_0 \\rVert^2` (mean over dimensions). Schedules:
``sqrt`` (Diffusion-LM, Li et al. 2022: :math:`\\bar\\alpha(s) = 1 - \\sqrt{s + 10^{-4}}`, the released
benchmark model's), ``cosine`` and ``linear``. Samplers: ancestral DDPM over all T steps with the "fixed-large"
variance the paper uses, and deterministic DDIM (Song et al. 2021) on a strided subset of steps (faster).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t) -> z0_hat


def alpha_bar_fn(schedule: str) -> Callable[[float], float]:
    if schedule == "sqrt":
        return lambda s: 1 - math.sqrt(s + 1e-4)
    if schedule == "cosine":
        return lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    raise ValueError(f"unknown noise schedule '{schedule}' (choose sqrt, cosine, linear)")


def make_betas(schedule: str, steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of a schedule over ``steps`` steps (``beta_i = 1 - abar((i+1)/T) / abar(i/T)``, clipped)."""
    if schedule == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    f = alpha_bar_fn(schedule)
    return torch.tensor([min(1 - f((i + 1) / steps) / f(i / steps), max_beta) for i in range(steps)],
                        dtype=torch.float64)


class GaussianDiffusion(nn.Module):
    """Noise schedule, training loss and samplers for x0-predicting latent diffusion.

    Args:
        steps: number of diffusion steps T (benchmark model: 500).
        schedule: ``sqrt`` | ``cosine`` | ``linear``.
    """

    def __init__(self, steps: int = 500, schedule: str = "sqrt"):
        super().__init__()
        self.steps, self.schedule = steps, schedule
        betas = make_betas(schedule, steps)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        bufs = {
            "betas": betas, "abar": abar, "abar_prev": abar_prev,
            "post_coef_x0": betas * abar_prev.sqrt() / (1 - abar),
            "post_coef_xt": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
            # "fixed large" variance (Ho et al.; the paper's default): [post_var[1], beta_1, ..., beta_{T-1}]
            "var_large": torch.cat([post_var[1:2], betas[1:]]),
        }
        for k, v in bufs.items():
            self.register_buffer(k, v.float(), persistent=False)

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noisy latents at step t. Shapes: z0, noise ``(N, D)``, t ``(N,)`` -> ``(N, D)``."""
        a = self.abar[t].unsqueeze(-1)
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    def loss(self, denoise: Denoiser, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-node x0 MSE (mean over latent dimensions). Shapes: ``(N, D)``, t ``(N,)`` -> ``(N,)``."""
        z0_hat = denoise(self.q_sample(z0, t, noise), t)
        return ((z0_hat - z0) ** 2).mean(-1)

    @torch.no_grad()
    def sample_ddpm(self, denoise: Denoiser, shape: tuple[int, int], generator: torch.Generator | None = None,
                    device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
        """Ancestral sampling over all T steps (``p_sample_loop``). Returns ``z_0`` of ``shape``."""
        z = torch.randn(shape, generator=generator, device=device)
        steps = range(self.steps - 1, -1, -1)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="DDPM", leave=False)
        for i in steps:
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            z0_hat = denoise(z, t)
            mean = self.post_coef_x0[i] * z0_hat + self.post_coef_xt[i] * z
            if i > 0:
                z = mean + self.var_large[i].sqrt() * torch.randn(shape, generator=generator, device=device)
            else:
                z = mean
        return z

    @torch.no_grad()
    def sample_ddim(self, denoise: Denoiser, shape: tuple[int, int], steps: int = 50,
                    generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                    eta: float = 0.0) -> torch.Tensor:
        """DDIM sampling on ``steps`` evenly strided timesteps (eta=0: deterministic given the start noise)."""
        ts = torch.linspace(self.steps - 1, 0, steps).round().long().unique_consecutive().tolist()
        z = torch.randn(shape, generator=generator, device=device)
        for k, i in enumerate(ts):
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            z0_hat = denoise(z, t)
            a = self.abar[i]
            a_prev = self.abar[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0, device=device)
            eps = (z - a.sqrt() * z0_hat) / (1 - a).sqrt().clamp_min(1e-8)
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp_min(0).sqrt()
            z = a_prev.sqrt() * z0_hat + (1 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps
            if eta > 0 and k + 1 < len(ts):
                z = z + sigma * torch.randn(shape, generator=generator, device=device)
        return z
