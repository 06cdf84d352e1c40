"""The position path: centred prior, ends of the interpolant, velocity round trip, prior alignment."""
import torch

from molgen.generative import GaussianPath, align_prior, centred_gaussian, kabsch_rotation, remove_mean
from molgen.generative.schedule import CosineInterpolant
from molgen.testing import random_orthogonal


def _batch():
    return torch.tensor([0] * 5 + [1] * 9 + [2] * 3)


def _centred_mean(x, batch):
    return torch.zeros(3, 3, dtype=x.dtype).index_add_(0, batch, x) / torch.bincount(batch).unsqueeze(-1)


def test_prior_has_zero_centre_of_mass_and_is_seeded():
    batch = _batch()
    x0 = centred_gaussian(batch, torch.Generator().manual_seed(0))
    assert torch.allclose(_centred_mean(x0, batch), torch.zeros(3, 3), atol=1e-6)
    assert torch.equal(x0, centred_gaussian(batch, torch.Generator().manual_seed(0)))


def test_interpolant_ends_and_velocity_round_trip():
    batch = _batch()
    g = torch.Generator().manual_seed(1)
    x0, x1 = centred_gaussian(batch, g), remove_mean(torch.randn(17, 3, generator=g), batch)
    for path in (GaussianPath(), GaussianPath(CosineInterpolant())):
        assert torch.allclose(path.sample(x0, x1, torch.zeros(17)).x_t, x0)
        assert torch.allclose(path.sample(x0, x1, torch.ones(17)).x_t, x1)
        t = torch.rand(17, generator=g) * 0.9
        x_t = path.sample(x0, x1, t).x_t
        # the endpoint velocity is dkappa/(1-kappa) (x1 - x_t); integrating it to kappa=1 recovers x1
        a = path.schedule.kappa(t).unsqueeze(-1)
        da = path.schedule.d_kappa(t).unsqueeze(-1)
        v = torch.stack([path.velocity(x_t[k], x1[k], t[k]) for k in range(17)])
        assert torch.allclose(x_t + v * (1 - a) / da, x1, atol=1e-5)


def test_kabsch_recovers_a_rotation():
    g = torch.Generator().manual_seed(2)
    p = torch.randn(12, 3, generator=g, dtype=torch.float64)
    p = p - p.mean(0)
    R = random_orthogonal(2)
    assert torch.allclose(kabsch_rotation(p, p @ R.T), R, atol=1e-8)


def test_align_prior_is_a_permutation_and_rotation_that_brings_the_prior_closer():
    batch = _batch()
    g = torch.Generator().manual_seed(3)
    x0 = centred_gaussian(batch, g, dtype=torch.float64)
    x1 = remove_mean(2 * torch.randn(17, 3, generator=g, dtype=torch.float64), batch)
    aligned = align_prior(x0, x1, batch)
    for m in range(3):
        sel = batch == m
        a, b = x0[sel], aligned[sel]
        # same point cloud up to permutation and rotation: sorted pairwise distances agree, centre stays zero
        assert torch.allclose(torch.pdist(a).sort().values, torch.pdist(b).sort().values, atol=1e-8)
        assert torch.allclose(b.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
        assert ((b - x1[sel]) ** 2).sum() <= ((a - x1[sel]) ** 2).sum() + 1e-9
