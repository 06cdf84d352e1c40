"""Sinusoidal embeddings: the three layouts against their formulas, their relations, and the reference
implementations each layout reproduces bit for bit (the shipped cpdiffusion_ss-cath checkpoint depends on it)."""
import math

import pytest
import torch

from molgen.nn.embeddings import LAYOUTS, SinusoidalPositions, sinusoidal_embedding


def expected(p: torch.Tensor, dim: int, layout: str, period: float = 10000.0) -> torch.Tensor:
    """Float64 reference from the formula: w_k = period^(-2k/dim)."""
    k = torch.arange((dim + 1) // 2, dtype=torch.float64)
    a = p.double()[..., None] * period ** (-2 * k / dim)
    if layout == "sin_cos":
        return torch.cat([a.sin(), a.cos()], -1)[..., :dim]
    if layout == "cos_sin":
        return torch.cat([a.cos(), a.sin()], -1)[..., :dim]
    return torch.stack([a.sin(), a.cos()], -1).flatten(-2)[..., :dim]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dim", [1, 7, 16, 96])
def test_layouts_follow_their_formula(layout, dim):
    p = torch.tensor([[0, 1, 2], [17, 250, 999]])
    out = sinusoidal_embedding(p, dim, layout)
    assert out.shape == (2, 3, dim) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected(p, dim, layout), atol=2e-4, rtol=0)  # float32 phases
    torch.testing.assert_close(sinusoidal_embedding(torch.tensor([0]), dim, layout).double(),
                               expected(torch.tensor([0]), dim, layout), atol=0, rtol=0)  # sin 0 = 0, cos 0 = 1


def test_layouts_are_channel_permutations_of_each_other():
    p, dim = torch.arange(50), 32
    sc, cs, il = (sinusoidal_embedding(p, dim, layout) for layout in ("sin_cos", "cos_sin", "interleaved"))
    assert torch.equal(cs, torch.cat([sc[:, dim // 2:], sc[:, : dim // 2]], -1))
    interleave = torch.stack([torch.arange(dim // 2), torch.arange(dim // 2) + dim // 2], -1).flatten()
    torch.testing.assert_close(il, sc[:, interleave], atol=1e-4, rtol=0)  # same frequencies up to float32 rounding


def test_max_period_and_real_positions():
    t = torch.tensor([0.25, 3.5])
    out = sinusoidal_embedding(t, 8, "sin_cos", max_period=100.0)
    torch.testing.assert_close(out.double(), expected(t, 8, "sin_cos", 100.0), atol=1e-6, rtol=0)
    assert sinusoidal_embedding(t, 8, "sin_cos")[:, 0].tolist() == pytest.approx([math.sin(0.25), math.sin(3.5)])


@pytest.mark.parametrize("dim", [16, 96, 128, 640])
def test_cos_sin_is_adm_timestep_embedding_bit_for_bit(dim):
    t = torch.tensor([0, 1, 7, 499, 999])
    half = dim // 2  # ADM / guided-diffusion's timestep_embedding (even dim)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    assert torch.equal(sinusoidal_embedding(t, dim, "cos_sin"), torch.cat([torch.cos(args), torch.sin(args)], -1))


@pytest.mark.parametrize("dim", [15, 16, 96, 128])
def test_interleaved_is_the_transformer_positional_encoding_bit_for_bit(dim):
    pos = torch.arange(4096).unsqueeze(1)  # the Transformer reference code's PositionalEncoding
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(4096, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    assert torch.equal(SinusoidalPositions(dim).pe, pe)
    assert torch.equal(sinusoidal_embedding(torch.arange(4096), dim, "interleaved"), pe)


def test_sinusoidal_positions_module():
    enc = SinusoidalPositions(8, max_len=32)
    x = torch.randn(2, 5, 8)
    assert torch.equal(enc(x), x + sinusoidal_embedding(torch.arange(5), 8, "interleaved"))
    assert dict(enc.state_dict()) == {}  # a fixed, non-persistent buffer
    other = SinusoidalPositions(8, max_len=32, layout="sin_cos")
    assert torch.equal(other.pe, sinusoidal_embedding(torch.arange(32), 8, "sin_cos"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_embedding(torch.arange(3), 8, "cos_then_sin")
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(torch.arange(3), 0)
