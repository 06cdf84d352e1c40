"""EDM variational diffusion on point clouds (EquivariantDiffusion): the polynomial_2 schedule, the epsilon loss,
and both samplers against closed forms."""
import numpy as np
import pytest
import torch

from molgen.generative.diffusion import level_grid
from molgen.generative.equivariant_diffusion import EquivariantDiffusion
from molgen.generative.schedule import polynomial_schedule


def test_polynomial_schedule_is_variance_preserving_and_monotone():
    s = polynomial_schedule(1000, power=2.0, precision=1e-5)
    t = torch.linspace(0, 1, 1001)
    k = s.level(t)
    g = s.gamma(k)
    a, sig = s.alpha(k), s.sigma(k)
    torch.testing.assert_close(a ** 2 + sig ** 2, torch.ones_like(a))
    # the gamma parametrisation of the same table (EDM / VDM): alpha^2 = sigmoid(-gamma), sigma^2 = sigmoid(gamma)
    torch.testing.assert_close(a, torch.sqrt(torch.sigmoid(-g)))
    torch.testing.assert_close(sig, torch.sqrt(torch.sigmoid(g)))
    assert (a.diff() < 0).all() and (sig.diff() > 0).all() and (g.diff() > 0).all()
    # the end points are the precision floor: alpha^2(0) = 1 - s, alpha^2(1) = s
    assert abs(float(a[0] ** 2) - (1 - 1e-5)) < 1e-6 and abs(float(a[-1] ** 2) - 1e-5) < 1e-6


def test_polynomial_schedule_matches_closed_form_where_unclipped():
    a2 = polynomial_schedule(1000, 2.0, 1e-5).alpha_bar_table.numpy()
    t = np.linspace(0, 1, 1001)
    closed = (1 - 2e-5) * (1 - t ** 2) ** 2 + 1e-5
    # the 0.001 clip of the step ratio only acts in the last few steps
    np.testing.assert_allclose(a2[:990], closed[:990], rtol=1e-9)
    assert a2[-1] < closed[-2]


def test_time_grid_and_bad_arguments():
    d = EquivariantDiffusion(100)
    # `steps` denoising steps visit steps + 1 evenly spaced levels of the T + 1
    assert level_grid(d.schedule.num_levels, 4 + 1) == [100, 75, 50, 25, 0]
    assert level_grid(d.schedule.num_levels, 100 + 1) == list(range(100, -1, -1))
    with pytest.raises(ValueError, match="level"):
        level_grid(d.schedule.num_levels, 0)
    for steps in (-1, 101):
        with pytest.raises(ValueError, match="steps"):
            d.sample(lambda *a: a[:2], torch.zeros(3, dtype=torch.long), 1, 2, steps=steps)
    with pytest.raises(ValueError, match="sampler"):
        d.sample(lambda *a: a[:2], torch.zeros(3, dtype=torch.long), 1, 2, sampler="euler")
    with pytest.raises(ValueError, match="timesteps"):
        polynomial_schedule(0)


def _point_mass(d: EquivariantDiffusion, x0: torch.Tensor, h0: torch.Tensor):
    """The exact noise predictor when the data distribution is the single point (x0, h0)."""
    def denoiser(x_t, h_t, t, batch, num_graphs, context):
        k = d.schedule.level(t)[batch]
        a, s = (v.to(x_t.dtype).unsqueeze(-1) for v in (d.schedule.alpha(k), d.schedule.sigma(k)))
        return (x_t - a * x0) / s, (h_t - a * h0) / s
    return denoiser


def _two_molecules():
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(7, 3, generator=g)
    x0[:3] -= x0[:3].mean(0)
    x0[3:] -= x0[3:].mean(0)
    return x0, torch.randn(7, 2, generator=g), batch


def test_loss_vanishes_for_the_exact_denoiser_and_noise_is_centred():
    d = EquivariantDiffusion(1000)
    x0, h0, batch = _two_molecules()
    loss = d.loss(_point_mass(d, x0, h0), x0, h0, batch, 2, t=torch.tensor([0.3, 0.9]))
    assert loss.shape == (2,) and float(loss.max()) < 1e-8
    eps_x, eps_h = d.noise(batch, 2, 2, torch.Generator().manual_seed(1))
    assert eps_x[:3].mean(0).abs().max() < 1e-6 and eps_x[3:].mean(0).abs().max() < 1e-6
    wrong = d.loss(lambda *a: (torch.zeros(7, 3), torch.zeros(7, 2)), x0, h0, batch, 2)
    assert float(wrong.mean()) > 0.1


@pytest.mark.parametrize("sampler, steps", [("ancestral", 1000), ("ancestral", 20), ("ddim", 1000), ("ddim", 10)])
def test_samplers_recover_a_point_mass(sampler, steps):
    d = EquivariantDiffusion(1000)
    x0, h0, batch = _two_molecules()
    x, h = d.sample(_point_mass(d, x0, h0), batch, 2, 2, steps=steps, sampler=sampler,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x0, atol=1e-3, rtol=0)
    torch.testing.assert_close(h, h0, atol=1e-3, rtol=0)


def test_ancestral_sampler_reproduces_a_gaussian():
    """For data ~ N(0, I) on h the exact predictor is eps = sigma_t z_t; samples must have unit variance."""
    d = EquivariantDiffusion(1000)
    batch = torch.zeros(4000, dtype=torch.long)

    def denoiser(x_t, h_t, t, b, nb, c):
        s = d.schedule.sigma(d.schedule.level(t)).to(h_t.dtype)[b].unsqueeze(-1)
        return s * x_t, s * h_t

    for sampler in ("ancestral", "ddim"):
        _, h = d.sample(denoiser, batch, 1, 3, steps=50, sampler=sampler, generator=torch.Generator().manual_seed(2))
        assert abs(float(h.std()) - 1.0) < 0.05 and abs(float(h.mean())) < 0.05
