"""Solvers against the closed form: with the true endpoint, the flow follows the straight line exactly."""
import pytest
import torch

from molgen.generative import SOLVERS, GaussianPath, get_solver, time_grid


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_oracle_endpoint_follows_the_line(name):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    path, solver = GaussianPath(), get_solver(name)
    calls = []

    def predict(x, t):
        calls.append(t)
        return x1, None

    x, grid = x0, time_grid(10)
    for t, s in zip(grid[:-1], grid[1:]):
        x, _ = solver.step(predict, path, x, t, s)
        assert torch.allclose(x, (1 - s) * x0 + s * x1, atol=1e-12)
    assert torch.allclose(x, x1)
    assert len(calls) == 10 * solver.evaluations_per_step - (solver.evaluations_per_step - 1)


def test_heun_is_second_order_on_a_curved_field():
    # endpoint predictor x1_hat = x - (1-t) x: velocity (x1_hat - x)/(1-t) = -x; exact x(0.5) = exp(-0.5) x0
    path = GaussianPath()
    x0 = torch.ones(1, 3, dtype=torch.float64)
    errs = {}
    for name in ("euler", "heun"):
        for n in (20, 40):
            x, grid = x0, time_grid(n)
            for t, s in zip(grid[:-1], grid[1:]):
                if s > 0.5:
                    break
                x, _ = get_solver(name).step(lambda y, tt: (y - (1 - tt) * y, None), path, x, t, s)
            errs[name, n] = float((x - torch.exp(torch.tensor(-0.5))).abs().max())
    assert errs["euler", 20] / errs["euler", 40] < 2.5
    assert errs["heun", 20] / errs["heun", 40] > 3.5


def test_unknown_solver_and_bad_grid():
    with pytest.raises(ValueError, match="unknown solver 'rk9'"):
        get_solver("rk9")
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)


def test_time_grid_power_refines_towards_the_end():
    uniform, late = time_grid(20), time_grid(20, power=2.0)
    for grid in (uniform, late):
        assert len(grid) == 21 and grid[0] == 0.0 and abs(grid[-1] - 1.0) < 1e-15
        assert all(b > a for a, b in zip(grid, grid[1:]))
    steps = [b - a for a, b in zip(late, late[1:])]
    assert all(b < a for a, b in zip(steps, steps[1:]))               # every step smaller than the one before
    assert abs(steps[-1] - 1 / 400) < 1e-12 and abs(steps[0] - 39 / 400) < 1e-12
    assert max(abs(b - a - 0.05) for a, b in zip(uniform, uniform[1:])) < 1e-12
    with pytest.raises(ValueError):
        time_grid(10, power=0.0)
