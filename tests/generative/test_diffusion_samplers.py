"""The one implementation of the diffusion samplers: the step coefficients against independent closed forms,
the equivalence of the parametrisations it unifies, and exact properties of the chains."""
import math

import pytest
import torch
import torch.nn.functional as F

from molgen.generative.diffusion import level_grid, q_sample, sample, transition
from molgen.generative.schedule import NOISE_SCHEDULES, get_noise_schedule

# (alpha_bar_t, alpha_bar_s): adjacent, strided, nearly pure noise, and the step to the data (alpha_bar_s = 1)
PAIRS = [(0.90, 0.91), (0.30, 0.80), (1e-5, 0.2), (0.05, 1.0), (0.999, 1.0)]
CONFIGS = [("ancestral", "small", 0.0), ("ancestral", "large", 0.0), ("ddim", "small", 0.0), ("ddim", "small", 0.3),
           ("ddim", "small", 1.0)]


@pytest.mark.parametrize("ab_t, ab_s", PAIRS)
@pytest.mark.parametrize("sampler, variance, eta", CONFIGS)
def test_eps_and_x0_parametrisations_take_the_same_step(ab_t, ab_s, sampler, variance, eta):
    """z_t = a x + s eps: feeding the eps-form step eps and the x0-form step x gives the same z_s and noise."""
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    z_t = math.sqrt(ab_t) * x + math.sqrt(1 - ab_t) * eps
    by_eps = transition(ab_t, ab_s, sampler, "eps", variance, eta)
    by_x0 = transition(ab_t, ab_s, sampler, "x0", variance, eta)
    n = torch.randn(50, generator=g, dtype=torch.float64)
    torch.testing.assert_close(by_eps(z_t, eps, lambda: n), by_x0(z_t, x, lambda: n), rtol=1e-9, atol=1e-9)
    assert math.isclose(by_eps.std, by_x0.std, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize("ab_t, ab_s", PAIRS)
def test_ancestral_step_is_the_gaussian_posterior(ab_t, ab_s):
    """Bayes on z_s ~ N(a_s x, s_s^2), z_t | z_s ~ N(a_t/a_s z_s, 1 - ab_t/ab_s): posterior mean and variance."""
    x, z_t = 0.7, -1.3
    var_ts = 1 - ab_t / ab_s
    a_ts = math.sqrt(ab_t / ab_s)
    step = transition(ab_t, ab_s, "ancestral", "x0", "small")
    if ab_s == 1.0:                                                         # the step to the data is the prediction
        assert math.isclose(step.c_pred, 1.0) and abs(step.c_z) < 1e-12 and step.std == 0.0
        return
    precision = 1 / (1 - ab_s) + a_ts ** 2 / var_ts
    mean = (math.sqrt(ab_s) * x / (1 - ab_s) + a_ts * z_t / var_ts) / precision
    assert math.isclose(step.c_z * z_t + step.c_pred * x, mean, rel_tol=1e-10)
    assert math.isclose(step.std ** 2, 1 / precision, rel_tol=1e-10)
    large = transition(ab_t, ab_s, "ancestral", "x0", "large")
    assert (large.c_z, large.c_pred) == (step.c_z, step.c_pred)             # same mean, the forward step's variance
    assert math.isclose(large.std ** 2, var_ts, rel_tol=1e-10)


@pytest.mark.parametrize("name", sorted(NOISE_SCHEDULES))
def test_adjacent_ancestral_steps_are_ho_et_al_eq7(name):
    """DDPM's posterior in betas: mean = b sqrt(ab_{k-1})/(1-ab_k) x + sqrt(1-b)(1-ab_{k-1})/(1-ab_k) z, var beta."""
    s = get_noise_schedule(name, 100)
    ab, betas = s.alpha_bar_table.tolist(), s.betas().tolist()
    for k in range(1, s.num_levels, 7):
        step = transition(ab[k], ab[k - 1], "ancestral", "x0", "large")
        b = betas[k]
        assert math.isclose(step.c_pred, b * math.sqrt(ab[k - 1]) / (1 - ab[k]), rel_tol=1e-9)
        assert math.isclose(step.c_z, math.sqrt(1 - b) * (1 - ab[k - 1]) / (1 - ab[k]), rel_tol=1e-9)
        assert math.isclose(step.std ** 2, b, rel_tol=1e-9)


@pytest.mark.parametrize("ab_t, ab_s", PAIRS)
def test_ancestral_step_in_gamma_form_is_edms(ab_t, ab_s):
    """EDM writes the same step with gamma = log(sigma^2/alpha^2):
    sigma^2_{t|s} = -expm1(softplus(g_s) - softplus(g_t)), mu = z / a_{t|s} - sigma^2_{t|s} / (a_{t|s} sigma_t) eps,
    std = sigma_{t|s} sigma_s / sigma_t."""
    gamma = lambda ab: torch.tensor(math.log((1 - ab) / ab), dtype=torch.float64)  # noqa: E731
    step = transition(ab_t, ab_s, "ancestral", "eps", "small")
    if ab_s == 1.0:
        assert step.std == 0.0 and math.isclose(step.c_z, 1 / math.sqrt(ab_t))
        return
    g_t, g_s = gamma(ab_t), gamma(ab_s)
    a_t, s_t = torch.sigmoid(-g_t).sqrt(), torch.sigmoid(g_t).sqrt()
    a_s, s_s = torch.sigmoid(-g_s).sqrt(), torch.sigmoid(g_s).sqrt()
    var_ts = -torch.expm1(F.softplus(g_s) - F.softplus(g_t))
    a_ts = a_t / a_s
    assert math.isclose(step.c_z, float(1 / a_ts), rel_tol=1e-9)
    assert math.isclose(step.c_pred, float(-var_ts / (a_ts * s_t)), rel_tol=1e-9)
    assert math.isclose(step.std, float(var_ts.sqrt() * s_s / s_t), rel_tol=1e-9)


@pytest.mark.parametrize("ab_t, ab_s", PAIRS)
def test_ddim_with_eta_one_is_the_ancestral_sampler(ab_t, ab_s):
    for prediction in ("eps", "x0"):
        a = transition(ab_t, ab_s, "ancestral", prediction, "small")
        d = transition(ab_t, ab_s, "ddim", prediction, eta=1.0)
        for u, v in ((a.c_z, d.c_z), (a.c_pred, d.c_pred), (a.std, d.std)):
            assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12)


def _perfect(schedule, x0, prediction):
    """The exact predictor when the data is the single point x0."""
    def predict(z, k):
        if prediction == "x0":
            return x0.expand_as(z)
        return (z - float(schedule.alpha(k)) * x0) / float(schedule.sigma(k))
    return predict


@pytest.mark.parametrize("name", sorted(NOISE_SCHEDULES))
@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("sampler, eta, n", [("ddim", 0.0, 10), ("ddim", 0.0, 100), ("ddim", 0.5, 17),
                                             ("ancestral", 0.0, 100), ("ancestral", 0.0, 9)])
def test_a_perfect_predictor_returns_its_point(name, prediction, sampler, eta, n):
    s = get_noise_schedule(name, 100)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, generator=g)
    z = torch.randn(6, 4, generator=g)
    for variance in ("small", "large"):
        out = sample(s, _perfect(s, x0, prediction), z, level_grid(s.num_levels, n), sampler, prediction, variance,
                     eta, generator=g)
        torch.testing.assert_close(out, x0.expand_as(out), atol=1e-5 if sampler == "ddim" else 1e-3, rtol=0)


@pytest.mark.parametrize("sampler, eta", [("ancestral", 0.0), ("ddim", 0.0), ("ddim", 0.6)])
@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_chain_marginal_is_the_forward_marginal(sampler, eta, prediction):
    """With the exact predictor of a point mass, starting from q(z_T | x0), every level the chain reaches is
    distributed as q(z_k | x0) = N(alpha_k x0, sigma_k^2), for any striding (posterior variance)."""
    s = get_noise_schedule("cosine", 200)
    g = torch.Generator().manual_seed(2)
    x0 = torch.tensor([[1.5, -0.5, 0.0]], dtype=torch.float64)
    N = 20000
    top = s.num_levels - 1
    z = q_sample(s, x0.expand(N, 3), torch.full((N,), top), torch.randn(N, 3, generator=g, dtype=torch.float64))
    for stop in (150, 60):
        levels = [top, 170, 120, stop] if stop < 120 else [top, 170, stop]
        out = sample(s, _perfect(s, x0, prediction), z, levels, sampler, prediction, "small", eta, to_data=False,
                     generator=g)
        a, sig = float(s.alpha(stop)), float(s.sigma(stop))
        se = sig / math.sqrt(N)
        assert (out.mean(0) - a * x0[0]).abs().max() < 5 * se
        assert (out.std(0) / sig - 1).abs().max() < 5 / math.sqrt(2 * N)


def test_the_large_variance_overshoots_the_forward_marginal():
    """Ho et al.'s fixed-large variance is an upper bound: one step from q(z_t | x0) lands wider than q(z_s | x0)."""
    s = get_noise_schedule("sqrt", 100)
    ab_t, ab_s = float(s.alpha_bar(80)), float(s.alpha_bar(40))
    step = transition(ab_t, ab_s, "ancestral", "x0", "large")
    var = step.c_z ** 2 * (1 - ab_t) + step.std ** 2                     # x0 is known: only z_t and n are random
    assert var > (1 - ab_s) * 1.01


def test_noise_and_projection_calls():
    """Noise is drawn once per stochastic step (never on the step to the data, never by eta = 0 DDIM); the
    projection follows every step."""
    s = get_noise_schedule("sqrt", 30)
    levels = level_grid(s.num_levels, 8)
    calls = {"noise": 0, "project": 0}

    def noise():
        calls["noise"] += 1
        return torch.zeros(2, 3)

    def project(z):
        calls["project"] += 1
        return z

    for sampler, expect in (("ancestral", len(levels) - 1), ("ddim", 0)):
        calls.update(noise=0, project=0)
        sample(s, lambda z, k: z, torch.ones(2, 3), levels, sampler, "x0", noise=noise, project=project)
        assert calls == {"noise": expect, "project": len(levels)}


def test_level_grid_and_bad_arguments():
    for L, n in ((500, 50), (101, 5), (10, 40), (7, 1)):
        grid = level_grid(L, n)
        assert grid[0] == L - 1 and all(b < a for a, b in zip(grid, grid[1:])) and len(grid) == min(n, L)
        assert n == 1 or grid[-1] == 0
    s = get_noise_schedule("sqrt", 10)
    z = torch.zeros(1, 2)
    for kw, msg in (({"sampler": "euler"}, "sampler"), ({"prediction": "v"}, "prediction"),
                    ({"variance": "medium"}, "variance")):
        with pytest.raises(ValueError, match=msg):
            sample(s, lambda z, k: z, z, [9, 0], **kw)
    with pytest.raises(ValueError, match="decreasing"):
        sample(s, lambda z, k: z, z, [0, 9])
    with pytest.raises(ValueError, match="alpha_bar"):
        transition(0.5, 0.4)
