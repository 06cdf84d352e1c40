r"""Every schedule of the generative processes, in two families that are different concepts.

**Noise schedules** (:class:`NoiseSchedule`; diffusion: SiLD, CPDiffusion-SS). A variance-preserving Gaussian
corruption of data :math:`x` at ``L`` discrete noise levels ``k = 0 .. L-1`` (level 0 the least noisy):

.. math::
    z_k = \alpha_k\,x + \sigma_k\,\epsilon,\qquad \epsilon \sim \mathcal N(0, I),\qquad
    \alpha_k^2 = \bar\alpha_k,\quad \sigma_k^2 = 1 - \bar\alpha_k,\quad
    \gamma_k = \log\frac{\sigma_k^2}{\alpha_k^2} = -\log \mathrm{SNR}_k,

with :math:`1 > \bar\alpha_0 > \dots > \bar\alpha_{L-1} > 0`; the clean data is the level below 0
(:math:`\bar\alpha = 1`). The single-step view is :math:`\beta_k = 1 - \bar\alpha_k / \bar\alpha_{k-1}`
(:math:`\bar\alpha_{-1} = 1`, Ho et al. 2020). A continuous time ``t`` in ``[0, 1]`` names the level
``round(t (L - 1))`` (:meth:`NoiseSchedule.level`). The variants are instances built by the functions below:
``polynomial_2`` (EDM), ``cosine`` (Nichol & Dhariwal 2021), ``sqrt`` (Diffusion-LM), ``linear`` (DDPM).

**Interpolant schedules** (:class:`InterpolantSchedule`; flow matching: :class:`~molgen.generative.GaussianPath`,
:class:`~molgen.generative.MaskingCTMC`). A mixing fraction :math:`\kappa(t)` on a continuous clock running
from the prior (:math:`\kappa(0) = 0`) to the data (:math:`\kappa(1) = 1`), used as the weight of the data in
:math:`x_t = (1 - \kappa_t) x_0 + \kappa_t x_1` and as the unmasking probability of a token. The processes
need its derivative :math:`\dot\kappa(t)` (velocities and jump rates), and the two Gaussian weights
:math:`1 - \kappa` and :math:`\kappa` add to one instead of their squares: not a noise schedule, and not
interchangeable with one.

Registries: :data:`NOISE_SCHEDULES` / :func:`get_noise_schedule` and :data:`INTERPOLANT_SCHEDULES` /
:func:`get_interpolant_schedule`.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

# ----------------------------------------------------------------------------------------------- noise schedules


class NoiseSchedule(nn.Module):
    r"""A variance-preserving noise schedule on ``L`` discrete levels, stored as :math:`\bar\alpha_k` (float64).

    The table is a non-persistent buffer: it follows the model across devices and is not in ``state_dict()``.
    Every accessor takes levels ``k`` as a long tensor of any shape (or an int) and returns a tensor of that
    shape in the table's dtype (float64; cast to the data's dtype before mixing it with float32 data).

    Args:
        alpha_bar: ``[L]`` values in ``(0, 1)``, strictly decreasing.
        name: shown in ``repr``.
    """

    def __init__(self, alpha_bar: torch.Tensor | np.ndarray, name: str = "custom"):
        super().__init__()
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).detach()
        if ab.dim() != 1 or ab.numel() < 1:
            raise ValueError(f"alpha_bar must be a non-empty 1-d table, got shape {tuple(ab.shape)}")
        if not bool(((ab > 0) & (ab < 1)).all()):
            raise ValueError("alpha_bar must lie in (0, 1) (level 0 must be noisier than the data)")
        if bool((ab.diff() >= 0).any()):
            raise ValueError("alpha_bar must be strictly decreasing (each level noisier than the last)")
        self.name = name
        self.register_buffer("alpha_bar_table", ab.clone(), persistent=False)

    @classmethod
    def from_betas(cls, betas: torch.Tensor | np.ndarray, name: str = "custom") -> "NoiseSchedule":
        r""":math:`\bar\alpha_k = \prod_{j \le k} (1 - \beta_j)` from per-step variances ``betas [L]``."""
        b = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.cumprod(1 - b, 0), name)

    @property
    def num_levels(self) -> int:
        """``L``."""
        return self.alpha_bar_table.shape[0]

    def level(self, t: torch.Tensor) -> torch.Tensor:
        """The level of continuous times ``t`` in ``[0, 1]`` (any shape; clamped): ``round(t (L - 1))``, long."""
        return torch.round(t.clamp(0, 1) * (self.num_levels - 1)).long()

    def time(self, k: torch.Tensor | int) -> torch.Tensor | float:
        """The continuous time ``k / (L - 1)`` of levels ``k`` (inverse of :meth:`level`)."""
        return k / max(self.num_levels - 1, 1)

    def alpha_bar(self, k: torch.Tensor | int) -> torch.Tensor:
        r""":math:`\bar\alpha_k`."""
        return self.alpha_bar_table[k]

    def alpha(self, k: torch.Tensor | int) -> torch.Tensor:
        r""":math:`\alpha_k = \sqrt{\bar\alpha_k}`, the signal scale."""
        return self.alpha_bar_table[k].sqrt()

    def sigma(self, k: torch.Tensor | int) -> torch.Tensor:
        r""":math:`\sigma_k = \sqrt{1 - \bar\alpha_k}`, the noise scale."""
        return (1 - self.alpha_bar_table[k]).sqrt()

    def gamma(self, k: torch.Tensor | int) -> torch.Tensor:
        r""":math:`\gamma_k = \log(\sigma_k^2 / \alpha_k^2)`, the negative log signal-to-noise ratio."""
        ab = self.alpha_bar_table[k]
        return torch.log1p(-ab) - torch.log(ab)

    def betas(self) -> torch.Tensor:
        r"""``[L]`` per-step variances :math:`\beta_k = 1 - \bar\alpha_k / \bar\alpha_{k-1}`, with
        :math:`\bar\alpha_{-1} = 1`."""
        ab = self.alpha_bar_table
        return 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])

    def extra_repr(self) -> str:
        return f"name={self.name!r}, levels={self.num_levels}"


def chain_alpha_bar(values: np.ndarray, max_beta: float = 0.999) -> np.ndarray:
    r"""A discrete chain that follows a decreasing signal fraction ``values`` step by step, with clipped steps.

    .. math::
        \bar\alpha_k = \prod_{j=0}^{k} \mathrm{clip}\!\left(\frac{v_{j+1}}{v_j},\ 1 - \beta_{\max},\ 1\right),
        \qquad k = 0 .. n-2

    i.e. :math:`\bar\alpha_k = v_{k+1} / v_0` while no step is clipped; the clip keeps every
    :math:`\beta_k \le \beta_{\max}` (Nichol & Dhariwal 2021; EDM clips the same ratio at 0.001).

    Args:
        values: ``[n]`` float64, :math:`v_0` the clean reference.

    Returns:
        ``[n - 1]`` float64.
    """
    values = np.asarray(values, dtype=np.float64)
    ratio = np.clip(values[1:] / values[:-1], 1.0 - max_beta, 1.0)
    return np.cumprod(ratio)


def polynomial_schedule(timesteps: int = 1000, power: float = 2.0, precision: float = 1e-5) -> NoiseSchedule:
    r"""EDM's ``polynomial_<power>`` schedule (Hoogeboom et al. 2022): ``T + 1`` levels at ``t = 0, 1/T, .., 1``.

    :math:`\bar\alpha(t) = (1 - t^{p})^2`, followed step by step with the step ratio clipped at 0.001
    (:func:`chain_alpha_bar` with :math:`v = (1, \bar\alpha(0), \bar\alpha(1/T), .., \bar\alpha(1))`), then
    squeezed into ``[s, 1 - s]`` with :math:`s` = ``precision``: :math:`\bar\alpha \leftarrow (1 - 2s)\bar\alpha + s`.
    Level ``k`` is time ``k / T``; both ends are levels, so ``T`` steps make ``T + 1`` levels.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    t = np.linspace(0.0, 1.0, int(timesteps) + 1)
    alphas2 = chain_alpha_bar(np.concatenate([[1.0], (1.0 - t ** power) ** 2]))
    return NoiseSchedule((1.0 - 2.0 * precision) * alphas2 + precision, f"polynomial_{power:g}")


def _from_function(f: Callable[[np.ndarray], np.ndarray], steps: int, name: str,
                   max_beta: float = 0.999) -> NoiseSchedule:
    """DDPM convention: ``steps`` levels, level ``i`` following ``f((i + 1) / T) / f(0)`` (clipped steps)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    s = np.arange(int(steps) + 1) / int(steps)
    return NoiseSchedule(chain_alpha_bar(f(s), max_beta), name)


def cosine_schedule(steps: int) -> NoiseSchedule:
    r"""Nichol & Dhariwal's cosine schedule: :math:`f(s) = \cos^2\!\big(\tfrac{s + 0.008}{1.008}\tfrac{\pi}{2}\big)`
    on ``steps`` levels, level ``i`` at :math:`f((i+1)/T) / f(0)` (steps clipped at :math:`\beta \le 0.999`)."""
    return _from_function(lambda s: np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2, steps, "cosine")


def sqrt_schedule(steps: int) -> NoiseSchedule:
    r"""Diffusion-LM's sqrt schedule (Li et al. 2022): :math:`f(s) = 1 - \sqrt{s + 10^{-4}}` on ``steps`` levels,
    level ``i`` at :math:`f((i+1)/T) / f(0)` (steps clipped at :math:`\beta \le 0.999`; the last one is)."""
    return _from_function(lambda s: 1 - np.sqrt(s + 1e-4), steps, "sqrt")


def linear_schedule(steps: int) -> NoiseSchedule:
    r"""Ho et al.'s linear betas, :math:`\beta` from ``1e-4`` to ``0.02`` at ``T = 1000``, scaled by ``1000 / T``."""
    if steps <= 20:
        raise ValueError(f"the linear schedule needs steps > 20 (its last beta, 20 / steps, must be < 1), got {steps}")
    scale = 1000 / steps
    return NoiseSchedule.from_betas(torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64), "linear")


#: noise schedule constructors by name, each ``(steps) -> NoiseSchedule``
NOISE_SCHEDULES: dict[str, Callable[[int], NoiseSchedule]] = {
    "polynomial_2": polynomial_schedule, "cosine": cosine_schedule, "sqrt": sqrt_schedule, "linear": linear_schedule}


def get_noise_schedule(name: str, steps: int) -> NoiseSchedule:
    """A noise schedule by name (``steps`` = T), or ValueError naming the choices."""
    if name not in NOISE_SCHEDULES:
        raise ValueError(f"unknown noise schedule '{name}' (choose from {', '.join(NOISE_SCHEDULES)})")
    return NOISE_SCHEDULES[name](steps)


# ----------------------------------------------------------------------------------------- interpolant schedules


class InterpolantSchedule(Protocol):
    r""":math:`\kappa(t)` in ``[0, 1]`` with :math:`\kappa(0) = 0`, :math:`\kappa(1) = 1`, and its derivative.

    Both take ``t`` of any shape (or a 0-d tensor) and return that shape.
    """

    def kappa(self, t: torch.Tensor) -> torch.Tensor: ...

    def d_kappa(self, t: torch.Tensor) -> torch.Tensor: ...


class LinearInterpolant:
    r""":math:`\kappa_t = t` (PropMolFlow/FlowMol2 use it for every modality)."""

    def kappa(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def d_kappa(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return "LinearInterpolant()"


class CosineInterpolant:
    r""":math:`\kappa_t = \sin^2(\pi t / 2)` (FlowMol's configurable but unused alternative)."""

    def kappa(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(0.5 * math.pi * t) ** 2

    def d_kappa(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * torch.sin(math.pi * t)

    def __repr__(self) -> str:
        return "CosineInterpolant()"


#: interpolant schedules by name
INTERPOLANT_SCHEDULES: dict[str, type] = {"linear": LinearInterpolant, "cosine": CosineInterpolant}


def get_interpolant_schedule(name: str) -> InterpolantSchedule:
    """An interpolant schedule by name, or ValueError naming the choices."""
    if name not in INTERPOLANT_SCHEDULES:
        raise ValueError(f"unknown schedule '{name}' (choose from {', '.join(INTERPOLANT_SCHEDULES)})")
    return INTERPOLANT_SCHEDULES[name]()
