"""Masking CTMC: corruption at the ends and in between, jump probabilities of one sampling step."""
import pytest
import torch

from molgen.generative import MaskingCTMC


def test_corruption_ends_and_rate():
    ctmc = MaskingCTMC(5)
    x1 = torch.randint(0, 5, (200_000,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    assert torch.all(ctmc.corrupt(x1, torch.tensor(0.0), g) == ctmc.mask_index)
    assert torch.equal(ctmc.corrupt(x1, torch.tensor(1.0), g), x1)
    x_t = ctmc.corrupt(x1, torch.tensor(0.3), g)
    revealed = ~ctmc.is_masked(x_t)
    assert abs(revealed.float().mean().item() - 0.3) < 0.005
    assert torch.equal(x_t[revealed], x1[revealed])  # a revealed token always shows its true class
    assert ctmc.one_hot(x_t).shape == (200_000, 6)


def test_step_unmask_and_remask_probabilities():
    ctmc = MaskingCTMC(4)
    n, t, dt, eta = 200_000, 0.4, 0.01, 10.0
    x = torch.cat([torch.full((n,), 4), torch.full((n,), 2)])      # first half masked, second half unmasked
    logits = torch.zeros(2 * n, 4)
    logits[:, 1] = 5.0                                             # the network is sure the answer is class 1
    out = ctmc.step(x, logits, t, dt, stochasticity=eta, temperature=0.05, generator=torch.Generator().manual_seed(0))
    p_unmask = dt * (1 + eta * t) / (1 - t)
    assert abs((out[:n] != 4).float().mean().item() - p_unmask) < 0.003
    assert torch.all(out[:n][out[:n] != 4] == 1)                   # unmasked to the (sharp) prediction
    assert abs((out[n:] == 4).float().mean().item() - dt * eta) < 0.003  # re-masking rate eta
    assert torch.all(out[n:][out[n:] != 4] == 2)                   # otherwise unchanged


def test_last_step_unmasks_everything_and_eta_zero_never_remasks():
    ctmc = MaskingCTMC(3)
    x = torch.tensor([3, 3, 0, 1, 3])
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    last = ctmc.step(x, logits, 0.99, 0.01, last_step=True, generator=torch.Generator().manual_seed(1))
    assert not torch.any(ctmc.is_masked(last)) and torch.equal(last[2:4], x[2:4])
    x = torch.full((10_000,), 2)
    same = ctmc.step(x, torch.zeros(10_000, 3), 0.5, 0.05, stochasticity=0.0, generator=torch.Generator())
    assert torch.equal(same, x)


def test_low_temperature_picks_the_argmax():
    ctmc = MaskingCTMC(3)
    logits = torch.tensor([[0.0, 0.3, 0.1]]).repeat(1000, 1)
    out = ctmc.step(torch.full((1000,), 3), logits, 0.5, 0.5, stochasticity=0.0, temperature=0.01,
                    last_step=True, generator=torch.Generator().manual_seed(0))
    assert torch.all(out == 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_classes"):
        MaskingCTMC(0)


def test_masking_more_walks_back_along_the_same_path():
    """An earlier state drawn from x_t has p_s's masking rate, hides everything x_t hides, and shows true classes."""
    ctmc = MaskingCTMC(5)
    x1 = torch.randint(0, 5, (200_000,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(2)
    x_t = ctmc.corrupt(x1, torch.tensor(0.7), g)
    x_s = ctmc.mask_more(x_t, torch.tensor(0.7), torch.tensor(0.25), g)
    assert abs((~ctmc.is_masked(x_s)).float().mean().item() - 0.25) < 0.005
    assert torch.all(ctmc.is_masked(x_s)[ctmc.is_masked(x_t)])            # nested: masked at t -> masked at s
    shown = ~ctmc.is_masked(x_s)
    assert torch.equal(x_s[shown], x1[shown])
    assert torch.equal(ctmc.mask_more(x_t, torch.tensor(0.7), torch.tensor(0.7), g), x_t)   # s = t: unchanged
    assert torch.all(ctmc.is_masked(ctmc.mask_more(x_t, torch.tensor(0.7), torch.tensor(0.0), g)))
    # per-token times (a batch of molecules at different t and s)
    t, s = torch.full((200_000,), 0.9), torch.linspace(0, 0.9, 200_000)
    x_s = ctmc.mask_more(ctmc.corrupt(x1, t, g), t, s, g)
    shown = (~ctmc.is_masked(x_s)).float()
    assert abs(shown[:100_000].mean().item() - s[:100_000].mean().item()) < 0.006
