"""Generative processes: the Gaussian position path, the masking CTMC for categorical features, ODE solvers.

Variants are picked by name from the registries below (``SOLVERS["heun"]()``), never by if/elif in a model.
"""
from molgen.generative.gaussian_path import (GaussianPath, PathSample, align_prior, centred_gaussian, kabsch_rotation,
                                             remove_mean)
from molgen.generative.masking_ctmc import MaskingCTMC
from molgen.generative.schedule import CosineSchedule, LinearSchedule, Schedule
from molgen.generative.solvers import EulerSolver, HeunSolver, Solver, time_grid

SCHEDULES: dict[str, type] = {"linear": LinearSchedule, "cosine": CosineSchedule}
SOLVERS: dict[str, type] = {"euler": EulerSolver, "heun": HeunSolver}


def get_solver(name: str) -> Solver:
    """A solver by name, or ValueError naming the choices."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}' (choose from {', '.join(SOLVERS)})")
    return SOLVERS[name]()


def get_schedule(name: str) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule '{name}' (choose from {', '.join(SCHEDULES)})")
    return SCHEDULES[name]()


__all__ = ["GaussianPath", "PathSample", "align_prior", "centred_gaussian", "kabsch_rotation", "remove_mean",
           "MaskingCTMC", "LinearSchedule", "CosineSchedule", "Schedule", "EulerSolver", "HeunSolver", "Solver",
           "time_grid", "SCHEDULES", "SOLVERS", "get_solver", "get_schedule"]
