"""Noise schedules (one NoiseSchedule, four constructors) and the flow-matching interpolant schedules."""
import math

import numpy as np
import pytest
import torch

from molgen import generative
from molgen.generative.schedule import (INTERPOLANT_SCHEDULES, NOISE_SCHEDULES, NoiseSchedule, chain_alpha_bar,
                                        get_interpolant_schedule, get_noise_schedule, polynomial_schedule)

ALL = [(name, T) for name in NOISE_SCHEDULES for T in ((21 if name == "linear" else 1), 50, 500)]


@pytest.mark.parametrize("name, T", ALL)
def test_every_noise_schedule_is_a_valid_variance_preserving_table(name, T):
    s = get_noise_schedule(name, T)
    k = torch.arange(s.num_levels)
    ab = s.alpha_bar(k)
    assert ((ab > 0) & (ab < 1)).all() and (ab.diff() < 0).all()
    torch.testing.assert_close(s.alpha(k) ** 2 + s.sigma(k) ** 2, torch.ones_like(ab))
    assert (s.gamma(k).diff() > 0).all()                             # the log-SNR falls monotonically
    betas = s.betas()
    assert (betas > 0).all() and (betas <= 0.999 + 1e-12).all()      # every step clipped at beta_max
    # the per-step and cumulative views are the same table
    torch.testing.assert_close(NoiseSchedule.from_betas(betas).alpha_bar_table, s.alpha_bar_table, rtol=1e-12, atol=0)
    # continuous time names a level, and back
    assert int(s.level(torch.tensor(0.0))) == 0 and int(s.level(torch.tensor(1.0))) == s.num_levels - 1
    assert torch.equal(s.level(s.time(k.double())), k)
    # EDM's grid has both ends (T + 1 levels), DDPM's T levels
    assert s.num_levels == (T + 1 if name.startswith("polynomial") else T)


def test_polynomial_endpoints_are_the_precision_floor():
    """alpha^2(0) = 1 - s exactly; alpha^2(1) = s up to the clipped last step (ratio 0.001 instead of 0)."""
    for p in (1e-5, 1e-3):
        ab = polynomial_schedule(100, 2.0, p).alpha_bar_table
        assert math.isclose(float(ab[0]), 1 - p, rel_tol=1e-12)
        assert p < float(ab[-1]) < p + 1e-6 and bool((ab >= p).all())


@pytest.mark.parametrize("name, f", [
    ("sqrt", lambda s: 1 - np.sqrt(s + 1e-4)),
    ("cosine", lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2)])
def test_ddpm_schedules_follow_their_function_until_clipped(name, f):
    """Level i sits at f((i+1)/T) / f(0) while no step ratio is below 1 - beta_max."""
    T = 500
    ab = get_noise_schedule(name, T).alpha_bar_table.numpy()
    closed = f(np.arange(1, T + 1) / T) / f(0.0)
    ratio = f(np.arange(1, T + 1) / T) / f(np.arange(T) / T)
    free = np.cumprod(ratio >= 1 - 0.999).astype(bool)                 # before the first clipped step
    assert free.sum() > T - 5
    np.testing.assert_allclose(ab[free], closed[free], rtol=1e-10)


def test_sqrt_schedule_clips_its_last_step():
    """Diffusion-LM's sqrt function goes negative at t = 1; the chain clips that step at beta = 0.999."""
    s = get_noise_schedule("sqrt", 50)
    assert math.isclose(float(s.betas()[-1]), 0.999, rel_tol=1e-9)
    assert float(s.betas()[-2]) < 0.999


def test_linear_schedule_has_ho_et_al_betas():
    for T in (1000, 200):
        betas = get_noise_schedule("linear", T).betas()
        scale = 1000 / T
        torch.testing.assert_close(betas, torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64),
                                   rtol=1e-9, atol=1e-12)


def test_chain_alpha_bar_clips_each_step_ratio():
    v = np.array([1.0, 0.5, 0.4, 1e-6, 1e-7])
    np.testing.assert_allclose(chain_alpha_bar(v, max_beta=0.999), np.cumprod([0.5, 0.8, 1e-3, 0.1]))


def test_the_table_is_a_non_persistent_buffer():
    """Checkpoints never hold the table: it is rebuilt from the hyperparameters, and follows .to()."""
    s = get_noise_schedule("sqrt", 20)
    assert s.state_dict() == {} and "alpha_bar_table" in dict(s.named_buffers())
    wrapper = torch.nn.Module()
    wrapper.schedule = s
    assert list(wrapper.state_dict()) == []


def test_bad_tables_and_names_are_refused():
    with pytest.raises(ValueError, match="decreasing"):
        NoiseSchedule(torch.tensor([0.9, 0.9, 0.1]))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        NoiseSchedule(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        get_noise_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="steps"):
        get_noise_schedule("sqrt", 0)
    with pytest.raises(ValueError, match="steps > 20"):
        get_noise_schedule("linear", 10)     # Ho et al.'s betas scaled by 1000 / T reach 1 at T = 20


@pytest.mark.parametrize("name", sorted(INTERPOLANT_SCHEDULES))
def test_interpolant_schedules_run_from_prior_to_data_with_their_derivative(name):
    s = get_interpolant_schedule(name)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    kappa = s.kappa(t)
    assert float(kappa[0]) == 0.0 and abs(float(kappa[-1]) - 1.0) < 1e-12 and (kappa.diff() > 0).all()
    h = 1e-6
    mid = t[1:-1]
    numeric = (s.kappa(mid + h) - s.kappa(mid - h)) / (2 * h)
    torch.testing.assert_close(s.d_kappa(mid), numeric, rtol=1e-6, atol=1e-8)


def test_interpolant_registry():
    assert generative.get_schedule is get_interpolant_schedule       # the name the flow models call
    with pytest.raises(ValueError, match="unknown schedule 'sqrt'"):
        get_interpolant_schedule("sqrt")
