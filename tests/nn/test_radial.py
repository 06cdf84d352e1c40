"""GaussianRBF: the plain Gaussian basis (GVP networks) and the variant with a cosine cutoff (Gaunt backbone)."""
import math

import pytest
import torch

from molgen.nn.radial import GaussianRBF


def test_plain_gaussians_peak_at_their_centres_with_the_stated_width():
    rbf = GaussianRBF(8, 1.0, 5.0).double()
    centres = torch.linspace(1.0, 5.0, 8)  # built in float32, then cast with the module
    assert torch.equal(rbf.centers, centres.double())
    centres, sigma = centres.double(), 4.0 / 8
    out = rbf(centres)
    torch.testing.assert_close(out.diagonal(), torch.ones(8, dtype=torch.float64))
    assert torch.equal(out.argmax(-1), torch.arange(8))
    torch.testing.assert_close(rbf(centres + sigma).diagonal(), torch.full((8,), math.exp(-1), dtype=torch.float64))
    d = torch.rand(2, 3, dtype=torch.float64) * 6
    want = torch.exp(-(((d[..., None] - centres) / sigma) ** 2))
    torch.testing.assert_close(rbf(d), want)
    assert rbf(torch.tensor([50.0], dtype=torch.float64)).max() < 1e-12     # no cutoff, but decays
    assert dict(rbf.state_dict()) == {}                                       # centres are a fixed buffer


def test_cosine_cutoff_variant_is_the_plain_basis_times_the_envelope():
    plain = GaussianRBF(16, 0.0, 5.0).double()
    cut = GaussianRBF(16, 0.0, 5.0, cosine_cutoff=True).double()
    d = torch.linspace(0.0, 7.0, 141, dtype=torch.float64)
    envelope = torch.where(d < 5.0, 0.5 * (torch.cos(math.pi * d / 5.0) + 1.0), torch.zeros_like(d))
    torch.testing.assert_close(cut(d), plain(d) * envelope[:, None])
    assert torch.equal(cut(d[d >= 5.0]), torch.zeros(int((d >= 5.0).sum()), 16, dtype=torch.float64))
    torch.testing.assert_close(cut(torch.zeros(1, dtype=torch.float64)), plain(torch.zeros(1, dtype=torch.float64)))
    # smooth at the cutoff: the envelope and its slope vanish there
    eps = torch.tensor([5.0 - 1e-4], dtype=torch.float64)
    assert cut(eps).abs().max() < 1e-7


def test_gaunt_variant_formula_and_persistent_centres():
    # the Gaunt backbone's former definition: exp(-gamma (d - mu)^2) * envelope, gamma = (n / cutoff)^2
    n, cutoff = 16, 5.0
    rbf = GaussianRBF(n, 0.0, cutoff, cosine_cutoff=True, persistent=True).double()
    assert list(rbf.state_dict()) == ["centers"]
    d = torch.rand(40, dtype=torch.float64) * 7
    mu = torch.linspace(0.0, cutoff, n).double()
    env = 0.5 * (torch.cos(math.pi * (d / cutoff).clamp(max=1.0)) + 1.0)
    torch.testing.assert_close(rbf(d), torch.exp(-(n / cutoff) ** 2 * (d[:, None] - mu) ** 2) * env[:, None],
                               atol=1e-15, rtol=1e-13)


def test_models_use_the_intended_variant():
    from molgen.nn.gaunt import GauntBackbone
    from molgen.nn.molecule_net import GVPMoleculeNet

    gaunt = GauntBackbone(4, 4, hidden_channels=4, lmax=1, num_layers=1, cutoff=6.0, num_radial=8)
    assert gaunt.rbf.cosine_cutoff and "rbf.centers" in gaunt.state_dict()
    gvp = GVPMoleculeNet(8, 2, 4, 2, rbf_dim=6, rbf_max=10.0, n_cp_feats=0)
    assert not gvp.rbf.cosine_cutoff and not any(k.startswith("rbf.") for k in gvp.state_dict())


def test_bad_arguments():
    with pytest.raises(ValueError):
        GaussianRBF(0)
    with pytest.raises(ValueError):
        GaussianRBF(4, 3.0, 3.0)
