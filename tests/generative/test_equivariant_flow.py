"""EquivariantFlow (SiLD's flow prior): exact transport with an exact endpoint, zero-mean positions, a rotation-
invariant loss with an equivariant predictor, and the OT pairing that shortens the paths."""
import torch

from molgen.generative.equivariant_flow import EquivariantFlow
from molgen.generative.gaussian_path import remove_mean
from molgen.testing import random_orthogonal


def _cloud(seed=0, sizes=(5, 7)):
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = remove_mean(torch.randn(len(batch), 3, generator=g) * 1.5, batch, len(sizes))
    h = torch.randn(len(batch), 2, generator=g)
    return x, h, batch, len(sizes)


def test_an_exact_endpoint_is_reached_from_any_prior_sample_and_the_loss_is_zero_there():
    x, h, batch, B = _cloud()
    flow = EquivariantFlow()

    def exact(x_t, h_t, t, b, nb, c):
        return x, h

    for solver in ("euler", "heun"):
        zx, zh = flow.sample(exact, batch, B, 2, steps=7, solver=solver, time_power=2.0,
                             generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(zx, x)
        torch.testing.assert_close(zh, h)
    assert flow.loss(exact, x, h, batch, B).abs().max() == 0


def test_loss_is_invariant_to_rotating_the_data_with_an_equivariant_predictor():
    """Rotating a molecule together with its prior draw (the prior is rotation invariant, so this is the same
    distribution) leaves every molecule's loss unchanged with an equivariant predictor, through the OT pairing
    (permutation + Kabsch): the learned density is invariant."""
    x, h, batch, B = _cloud(1)
    flow = EquivariantFlow()
    noise = flow.noise(batch, B, 2, torch.Generator().manual_seed(5))
    t = torch.tensor([0.3, 0.7])

    def predictor(x_t, h_t, t_, b, nb, c):    # equivariant in x, invariant in h: a smooth non-trivial map
        r2 = (x_t ** 2).sum(-1, keepdim=True)
        return x_t * torch.tanh(r2) + 0.1 * x_t, h_t * torch.sigmoid(r2)

    R = random_orthogonal(9, dtype=torch.float32)
    a = flow.loss(predictor, x, h, batch, B, t=t, noise=noise)
    b = flow.loss(predictor, x @ R.T, h, batch, B, t=t, noise=(noise[0] @ R.T, noise[1]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_samples_stay_centred_and_ot_pairing_shortens_paths():
    x, h, batch, B = _cloud(2)
    flow = EquivariantFlow()

    def shrink(x_t, h_t, t, b, nb, c):
        return x_t * 0.5 + 0.3, h_t                  # not centred on purpose: the sampler projects
    zx, _ = flow.sample(shrink, batch, B, 2, steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(remove_mean(zx, batch, B), zx)
    # aligned prior points are closer to the data than unaligned ones (on average over draws)
    from molgen.generative.gaussian_path import align_prior

    g = torch.Generator().manual_seed(4)
    d_raw = d_ot = 0.0
    for _ in range(20):
        x0, _ = flow.noise(batch, B, 2, g)
        d_raw += float(((x0 - x) ** 2).sum())
        d_ot += float(((align_prior(x0, x, batch) - x) ** 2).sum())
    assert d_ot < 0.7 * d_raw


def test_pair_features_flow_with_the_atoms():
    """Edge features (SiLD's bond latents) ride along: an exact endpoint reaches nodes and pairs from any prior
    draw with either solver, the loss is zero there and positive elsewhere, per molecule."""
    x, h, batch, B = _cloud(3)
    edge_batch = torch.tensor([0] * 10 + [1] * 21)                 # 5 and 7 atoms: 10 and 21 pairs
    e = torch.randn(len(edge_batch), 2, generator=torch.Generator().manual_seed(1))
    flow = EquivariantFlow()

    def exact(x_t, h_t, t, b, nb, c, e_t):
        return x, h, e

    for solver in ("euler", "heun"):
        zx, zh, ze = flow.sample(exact, batch, B, 2, steps=5, solver=solver, edge_batch=edge_batch, edge_dim=2,
                                 generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close((zx, zh, ze), (x, h, e))
    assert flow.loss(exact, x, h, batch, B, e=e, edge_batch=edge_batch).abs().max() == 0

    def off_on_pairs(x_t, h_t, t, b, nb, c, e_t):
        return x, h, e + (edge_batch == 1).float().unsqueeze(-1)   # wrong on the second molecule's pairs only
    loss = flow.loss(off_on_pairs, x, h, batch, B, e=e, edge_batch=edge_batch)
    assert loss[0] == 0 and torch.isclose(loss[1], torch.tensor(1.0))
