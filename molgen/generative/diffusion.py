r"""Variance-preserving Gaussian diffusion on a :class:`~molgen.generative.schedule.NoiseSchedule`: the forward
process and the one implementation of the two reverse samplers (used by SiLD and CPDiffusion-SS).

**Forward process.** :math:`q(z_k \mid x) = \mathcal N(\alpha_k x, \sigma_k^2 I)` (:func:`q_sample`). Between a
level ``t`` and a less noisy level ``s`` (``s`` may be the data itself: :math:`\alpha_s = 1, \sigma_s = 0`):

.. math::
    q(z_t \mid z_s) = \mathcal N(\alpha_{t|s} z_s,\ \sigma_{t|s}^2 I),\qquad
    \alpha_{t|s} = \alpha_t / \alpha_s,\qquad \sigma_{t|s}^2 = 1 - \bar\alpha_t / \bar\alpha_s .

**Parametrisations.** A network sees :math:`z_t` and predicts either the noise :math:`\hat\epsilon`
(``prediction="eps"``, EDM) or the data :math:`\hat x` (``"x0"``, CPDiffusion-SS); they are the same
information, :math:`z_t = \alpha_t \hat x + \sigma_t \hat\epsilon`. Every reverse step is therefore affine in
:math:`z_t` and the prediction (:class:`Transition`):

.. math::
    z_s = c_z\, z_t + c_{\mathrm{pred}}\, \widehat{\mathrm{pred}} + \mathrm{std}\cdot n,\qquad n \sim \mathcal N(0, I).

**Samplers** (:func:`transition`, :func:`sample`), for any ``s < t`` (fewer levels = a strided chain):

* ``ancestral`` (Ho et al. 2020, https://arxiv.org/abs/2006.11239; EDM's :math:`p(z_s \mid z_t)`): the mean of the
  posterior :math:`q(z_s \mid z_t, x = \hat x)`,

  .. math::
      \mu = \frac{\alpha_s \sigma_{t|s}^2}{\sigma_t^2}\,\hat x + \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}\,z_t
          = \frac{z_t}{\alpha_{t|s}} - \frac{\sigma_{t|s}^2}{\alpha_{t|s}\sigma_t}\,\hat\epsilon,

  with std ``small`` :math:`\sigma_{t|s}\sigma_s/\sigma_t` (the posterior's; EDM) or ``large``
  :math:`\sigma_{t|s}` (the forward step's, Ho et al.'s "fixed large"; CPDiffusion-SS), and no noise on the
  step to the data.
* ``ddim`` (Song et al. 2021, https://arxiv.org/abs/2010.02502):
  :math:`z_s = \alpha_s \hat x + \sqrt{\sigma_s^2 - \mathrm{std}^2}\,\hat\epsilon + \mathrm{std}\cdot n` with
  :math:`\mathrm{std} = \eta\,\sigma_{t|s}\sigma_s/\sigma_t`; :math:`\eta = 0` is deterministic (the
  probability-flow ODE discretised in :math:`\gamma`), :math:`\eta = 1` is the ancestral sampler with the small
  variance.

The chain visits the given levels, noisiest first, and ends with the step to the data, which returns the last
prediction of :math:`x`. Coefficients are computed in float64 from the schedule and applied to the state in its
own dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from molgen.generative.schedule import NoiseSchedule

SAMPLERS = ("ancestral", "ddim")
PREDICTIONS = ("eps", "x0")
VARIANCES = ("small", "large")

#: ``(z_t [N, ...], level) -> prediction [N, ...]`` (noise or data, see ``prediction``)
Predictor = Callable[[torch.Tensor, int], torch.Tensor]


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r""":math:`z_k = \alpha_k x_0 + \sigma_k \epsilon`, one level per row.

    Shapes: ``x0, noise [N, ...]``, ``k [N]`` long -> ``[N, ...]`` in ``x0``'s dtype.
    """
    shape = (-1,) + (1,) * (x0.dim() - 1)
    a = schedule.alpha(k).to(x0.dtype).reshape(shape)
    s = schedule.sigma(k).to(x0.dtype).reshape(shape)
    return a * x0 + s * noise


@dataclass(frozen=True)
class Transition:
    r"""One reverse step :math:`z_s = c_z z_t + c_{\mathrm{pred}} \widehat{\mathrm{pred}} + \mathrm{std}\cdot n`."""

    c_z: float
    c_pred: float
    std: float

    def __call__(self, z_t: torch.Tensor, pred: torch.Tensor,
                 noise: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Apply the step; ``noise()`` is drawn only when ``std > 0``. Shapes: ``z_t, pred [N, ...]``."""
        z_s = self.c_z * z_t + self.c_pred * pred
        return z_s + self.std * noise() if self.std > 0 else z_s


def _check(sampler: str, prediction: str, variance: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction '{prediction}' (choose from {', '.join(PREDICTIONS)})")
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance '{variance}' (choose from {', '.join(VARIANCES)})")


def transition(alpha_bar_t: float, alpha_bar_s: float, sampler: str = "ancestral", prediction: str = "eps",
               variance: str = "small", eta: float = 0.0) -> Transition:
    r"""The coefficients of one reverse step from level ``t`` to a less noisy ``s`` (see the module docstring).

    Args:
        alpha_bar_t: :math:`\bar\alpha_t` in ``(0, 1)``.
        alpha_bar_s: :math:`\bar\alpha_s` in ``(alpha_bar_t, 1]``; 1 is the step to the data.
        sampler: ``ancestral`` | ``ddim``.
        prediction: what the network predicts, ``eps`` | ``x0``.
        variance: the ancestral sampler's step variance, ``small`` | ``large`` (ignored by ``ddim``).
        eta: DDIM's noise scale (ignored by ``ancestral``).
    """
    _check(sampler, prediction, variance)
    if not 0.0 < alpha_bar_t < alpha_bar_s <= 1.0:
        raise ValueError(f"need 0 < alpha_bar_t < alpha_bar_s <= 1, got {alpha_bar_t}, {alpha_bar_s}")
    a_t, a_s = math.sqrt(alpha_bar_t), math.sqrt(alpha_bar_s)
    var_t, var_s = 1.0 - alpha_bar_t, 1.0 - alpha_bar_s                           # sigma_t^2, sigma_s^2
    s_t = math.sqrt(var_t)
    var_ts = -math.expm1(math.log(alpha_bar_t) - math.log(alpha_bar_s))           # sigma_{t|s}^2
    small = math.sqrt(var_ts * var_s / var_t)                                    # sigma_{t|s} sigma_s / sigma_t
    if sampler == "ddim":
        std = eta * small
        c_eps = math.sqrt(max(var_s - std ** 2, 0.0))                             # z_s = a_s x + c_eps eps + std n
        if prediction == "eps":                                                   # x = (z_t - s_t eps) / a_t
            return Transition(a_s / a_t, c_eps - a_s * s_t / a_t, std)
        return Transition(c_eps / s_t, a_s - c_eps * a_t / s_t, std)             # eps = (z_t - a_t x) / s_t
    a_ts = a_t / a_s
    std = 0.0 if alpha_bar_s == 1.0 else (small if variance == "small" else math.sqrt(var_ts))
    if prediction == "eps":
        return Transition(1.0 / a_ts, -var_ts / (a_ts * s_t), std)
    return Transition(a_ts * var_s / var_t, a_s * var_ts / var_t, std)


def level_grid(num_levels: int, n: int) -> list[int]:
    """``n`` evenly spaced levels from ``num_levels - 1`` down to 0, rounded to the nearest level (EDM's grid:
    ``np.round`` of a float64 ``linspace``); repeats are dropped, so ``n > num_levels`` gives every level once,
    and ``n = 1`` gives the noisiest level only."""
    if n < 1:
        raise ValueError(f"need at least one level, got {n}")
    if n == 1:
        return [num_levels - 1]
    grid = np.unique(np.round(np.linspace(0, num_levels - 1, n)).astype(int))[::-1]
    return [int(v) for v in grid]


@torch.no_grad()
def sample(schedule: NoiseSchedule, predict: Predictor, z: torch.Tensor, levels: Sequence[int],
           sampler: str = "ancestral", prediction: str = "eps", variance: str = "small", eta: float = 0.0,
           to_data: bool = True, generator: torch.Generator | None = None,
           noise: Callable[[], torch.Tensor] | None = None,
           project: Callable[[torch.Tensor], torch.Tensor] | None = None, progress: bool = False) -> torch.Tensor:
    r"""Run the reverse chain from ``z`` at ``levels[0]`` through ``levels`` (strictly decreasing) to the data.

    Args:
        predict: ``(z_t, level) -> prediction`` (noise or data, as ``prediction`` says, in ``z``'s dtype);
            called once per step.
        z: the starting state at ``levels[0]``, ``[N, ...]`` (the prior sample when ``levels[0]`` is the noisiest).
        levels: the noise levels to visit, e.g. :func:`level_grid`.
        sampler, prediction, variance, eta: see :func:`transition`.
        to_data: end with the step from ``levels[-1]`` to the data (else return :math:`z` at ``levels[-1]``).
        generator: RNG of the default noise.
        noise: draws one fresh standard-noise tensor like ``z`` (default: i.i.d. Gaussian on ``generator``'s
            device, moved to ``z``'s); called only on steps with ``std > 0``, in step order.
        project: applied to the state after every step (e.g. removing the centre of mass).

    Returns:
        ``[N, ...]``, the state after the last step.
    """
    _check(sampler, prediction, variance)
    levels = [int(v) for v in levels]
    if not levels or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must be a non-empty strictly decreasing sequence, got {levels}")
    if noise is None:
        shape, dtype, device = z.shape, z.dtype, z.device
        draw_on = generator.device if generator is not None else device

        def noise() -> torch.Tensor:
            return torch.randn(shape, generator=generator, dtype=dtype, device=draw_on).to(device)

    abar = schedule.alpha_bar_table.detach().to("cpu", torch.float64)
    targets: list[int | None] = levels[1:] + ([None] if to_data else [])
    steps = list(zip(levels, targets))
    for t, s in tqdm(steps, desc=f"sampling ({sampler}, {len(steps)} steps)", disable=not progress, leave=False):
        step = transition(float(abar[t]), 1.0 if s is None else float(abar[s]), sampler, prediction, variance, eta)
        z = step(z, predict(z, t), noise)
        if project is not None:
            z = project(z)
    return z
