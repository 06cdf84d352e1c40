r"""x0-predicting diffusion of latent vectors in DDPM's conventions (Ho et al. 2020), as CPDiffusion-SS uses it.

A thin front end, kept separate because its conventions differ from EDM's
(:class:`~molgen.generative.equivariant_diffusion.EquivariantDiffusion`), not its maths: the schedule is a
:class:`~molgen.generative.schedule.NoiseSchedule` and both samplers are :func:`molgen.generative.diffusion.sample`.
What it fixes:

* ``T`` levels ``i = 0 .. T-1`` given to the network as integers (EDM: ``T + 1`` levels as ``t = i / T``);
* the network predicts :math:`\hat z_0` and the loss is :math:`\lVert \hat z_0 - z_0 \rVert^2` (mean over
  dimensions);
* ``ddpm``: ancestral sampling over all ``T`` levels with the "fixed-large" variance :math:`\beta_i` the paper
  uses; ``ddim``: deterministic DDIM on ``steps`` evenly strided levels (EDM counts ``steps + 1``).

Schedules by name (:data:`~molgen.generative.schedule.NOISE_SCHEDULES`): ``sqrt`` (Diffusion-LM, the released
benchmark model's), ``cosine``, ``linear``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from molgen.generative.diffusion import level_grid, q_sample, sample
from molgen.generative.schedule import get_noise_schedule

#: ``(z_t [N, D], t [N] long) -> z0_hat [N, D]``
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LatentDiffusion(nn.Module):
    """Noise schedule, training loss and samplers for x0-predicting latent diffusion.

    Args:
        steps: number of diffusion steps ``T`` (benchmark model: 500).
        schedule: a name of :data:`~molgen.generative.schedule.NOISE_SCHEDULES` (``sqrt`` | ``cosine`` | ``linear``).
    """

    def __init__(self, steps: int = 500, schedule: str = "sqrt"):
        super().__init__()
        self.schedule = get_noise_schedule(schedule, steps)

    @property
    def steps(self) -> int:
        """Number of noise levels (``T``)."""
        return self.schedule.num_levels

    @property
    def abar(self) -> torch.Tensor:
        r"""``[T]`` :math:`\bar\alpha_i` (float64)."""
        return self.schedule.alpha_bar_table

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noisy latents at step t. Shapes: z0, noise ``(N, D)``, t ``(N,)`` -> ``(N, D)``."""
        return q_sample(self.schedule, z0, t, noise)

    def loss(self, denoise: Denoiser, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-node x0 MSE (mean over latent dimensions). Shapes: ``(N, D)``, t ``(N,)`` -> ``(N,)``."""
        z0_hat = denoise(self.q_sample(z0, t, noise), t)
        return ((z0_hat - z0) ** 2).mean(-1)

    def _predictor(self, denoise: Denoiser) -> Callable[[torch.Tensor, int], torch.Tensor]:
        return lambda z, i: denoise(z, torch.full((z.shape[0],), i, dtype=torch.long, device=z.device))

    @torch.no_grad()
    def sample_ddpm(self, denoise: Denoiser, shape: tuple[int, int], generator: torch.Generator | None = None,
                    device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
        """Ancestral sampling over all T levels (``p_sample_loop``). Returns ``z_0`` of ``shape``."""
        z = torch.randn(shape, generator=generator, device=device)
        return sample(self.schedule, self._predictor(denoise), z, range(self.steps - 1, -1, -1), "ancestral",
                      prediction="x0", variance="large", generator=generator, progress=progress)

    @torch.no_grad()
    def sample_ddim(self, denoise: Denoiser, shape: tuple[int, int], steps: int = 50,
                    generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                    eta: float = 0.0) -> torch.Tensor:
        """DDIM sampling on ``steps`` evenly strided levels (eta=0: deterministic given the start noise)."""
        z = torch.randn(shape, generator=generator, device=device)
        return sample(self.schedule, self._predictor(denoise), z, level_grid(self.steps, steps), "ddim",
                      prediction="x0", eta=eta, generator=generator)
