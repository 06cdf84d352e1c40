r"""The continuous path for atom positions: a centred Gaussian prior, aligned to the data, and a straight line.

.. math::
    x_0 \sim \mathcal N(0, I) \text{ with zero centre of mass},\qquad
    x_t = (1-\kappa_t)\,x_0 + \kappa_t\,x_1,\qquad
    u_t(x_t \mid \hat x_1) = \frac{\dot\kappa_t}{1-\kappa_t}\,(\hat x_1 - x_t)

(conditional flow matching, Lipman et al. 2023, https://arxiv.org/abs/2210.02747; endpoint parameterisation as in
FlowMol, https://arxiv.org/abs/2404.19739). During training PropMolFlow pairs each prior sample with its molecule
by a Hungarian permutation of the prior points followed by a Kabsch rotation (an equivariant optimal-transport
coupling; Klein et al. 2023, https://arxiv.org/abs/2306.15030); both leave the prior distribution unchanged
because it is permutation and rotation invariant.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from molgen.generative.schedule import InterpolantSchedule, LinearInterpolant
from molgen.nn.geometry import kabsch_rotation


def remove_mean(x: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Subtract each molecule's centre (``x [n, 3]``, ``batch [n]``) -> ``[n, 3]``."""
    b = int(num_graphs if num_graphs is not None else (int(batch.max()) + 1 if batch.numel() else 0))
    total = x.new_zeros(b, x.shape[-1]).index_add_(0, batch, x)
    count = torch.bincount(batch, minlength=b).clamp(min=1).to(x.dtype).unsqueeze(-1)
    return x - (total / count)[batch]


def centred_gaussian(batch: torch.Tensor, generator: torch.Generator | None = None, num_graphs: int | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Prior sample: isotropic unit Gaussian per atom, centre of mass removed per molecule. ``[n, 3]``."""
    x = torch.randn(batch.shape[0], 3, generator=generator, dtype=dtype)
    return remove_mean(x.to(batch.device), batch, num_graphs)


def centred_noise(batch: torch.Tensor, num_graphs: int, k: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard noise of a point cloud with features: centred Gaussian positions ``[n, 3]`` and Gaussian features
    ``[n, k]`` (the prior of SiLD's diffusion and flow)."""
    x = centred_gaussian(batch, generator, num_graphs)
    h = torch.randn(batch.shape[0], k, generator=generator).to(batch.device)
    return x, h


def molecule_mean(err: torch.Tensor, batch: torch.Tensor, num_graphs: int, dims: int = 1) -> torch.Tensor:
    """Per-atom errors ``err [n]`` -> their mean per molecule and per coordinate, ``[B]`` (``dims`` coordinates
    per atom, e.g. ``3 + k`` for positions and ``k`` features)."""
    total = err.new_zeros(num_graphs).index_add_(0, batch, err)
    n_atoms = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(err.dtype)
    return total / (n_atoms * dims)


def align_prior(x0: torch.Tensor, x1: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Per molecule: permute the prior points to the data atoms (Hungarian on squared distances), then rotate
    them onto the data (Kabsch). ``x0, x1 [n, 3]`` centred per molecule -> aligned ``x0 [n, 3]``."""
    out = torch.empty_like(x0)
    counts = torch.bincount(batch).tolist()
    start = 0
    for n in counts:
        p, q = x0[start:start + n], x1[start:start + n]
        cost = torch.cdist(q, p).pow(2).detach().cpu().numpy()
        _, col = linear_sum_assignment(cost)                        # data atom i <- prior point col[i]
        p = p[torch.as_tensor(np.asarray(col), device=p.device)]
        out[start:start + n] = p @ kabsch_rotation(p, q).T
        start += n
    return out


@dataclass
class PathSample:
    """A point on the path. ``x0, x1, x_t [n, 3]``; ``t [n]`` (per atom, copied from its molecule)."""

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor


class GaussianPath:
    """Straight-line (affine) path between the centred Gaussian prior and the data.

    Args:
        schedule: the interpolant ``kappa_t`` (default linear, ``kappa_t = t``).
    """

    def __init__(self, schedule: InterpolantSchedule | None = None):
        self.schedule = schedule or LinearInterpolant()

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """``x_t = (1 - kappa_t) x0 + kappa_t x1`` with ``t [n]`` per atom."""
        a = self.schedule.kappa(t).unsqueeze(-1)                        # [n, 1]
        return PathSample(x0, x1, t, (1 - a) * x0 + a * x1)

    def velocity(self, x_t: torch.Tensor, x1_hat: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The marginal velocity from the predicted endpoint (undefined at ``kappa_t = 1``). ``[n, 3]``."""
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        a, da = self.schedule.kappa(t), self.schedule.d_kappa(t)
        scale = da / (1 - a)
        if scale.dim():
            scale = scale.unsqueeze(-1)
        return scale * (x1_hat - x_t)
