"""Generative processes: flow matching (the Gaussian position path, the masking CTMC for categorical features, ODE
solvers) and variance-preserving diffusion (noise schedules, the DDPM-ancestral and DDIM samplers, and the two
front ends for point clouds and latent vectors).

Module map:

* :mod:`~molgen.generative.schedule`: every schedule, noise schedules (diffusion) and interpolant schedules
  (flow matching), with their registries.
* :mod:`~molgen.generative.diffusion`: the forward process (``q_sample``) and the one implementation of both
  samplers (``transition``, ``sample``, ``level_grid``).
* :mod:`~molgen.generative.equivariant_diffusion` (EDM on ``(x, h)`` point clouds; SiLD) and
  :mod:`~molgen.generative.latent_diffusion` (x0-prediction on vectors, DDPM conventions; CPDiffusion-SS).
* :mod:`~molgen.generative.gaussian_path`, :mod:`~molgen.generative.masking_ctmc`,
  :mod:`~molgen.generative.solvers`: flow matching.

Variants are picked by name from the registries (``SOLVERS["heun"]()``, ``get_noise_schedule("sqrt", 500)``),
never by if/elif in a model.
"""
from molgen.generative.equivariant_diffusion import EquivariantDiffusion
from molgen.generative.gaussian_path import (GaussianPath, PathSample, align_prior, centred_gaussian, kabsch_rotation,
                                             remove_mean)
from molgen.generative.latent_diffusion import LatentDiffusion
from molgen.generative.masking_ctmc import MaskingCTMC
from molgen.generative.schedule import (INTERPOLANT_SCHEDULES, NOISE_SCHEDULES, CosineInterpolant, InterpolantSchedule,
                                        LinearInterpolant, NoiseSchedule, cosine_schedule, get_interpolant_schedule,
                                        get_noise_schedule, linear_schedule, polynomial_schedule, sqrt_schedule)
from molgen.generative.solvers import SOLVERS, EulerSolver, HeunSolver, Solver, get_solver, time_grid


#: the name :mod:`molgen.models.propmolflow` calls; an interpolant schedule, see :func:`get_interpolant_schedule`
get_schedule = get_interpolant_schedule

__all__ = ["GaussianPath", "PathSample", "align_prior", "centred_gaussian", "kabsch_rotation", "remove_mean",
           "MaskingCTMC", "EulerSolver", "HeunSolver", "Solver", "time_grid", "SOLVERS", "get_solver",
           "NoiseSchedule", "polynomial_schedule", "cosine_schedule", "sqrt_schedule", "linear_schedule",
           "NOISE_SCHEDULES", "get_noise_schedule", "InterpolantSchedule", "LinearInterpolant", "CosineInterpolant",
           "INTERPOLANT_SCHEDULES", "get_interpolant_schedule", "get_schedule", "EquivariantDiffusion",
           "LatentDiffusion"]
