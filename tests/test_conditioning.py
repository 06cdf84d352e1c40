"""Property conditioning: Gaussian expansion, the five embedding methods, the (N, value) sampler."""
import pytest
import torch

from molgen.conditioning import (COMBINERS, HARTREE_EV, PROPERTIES, ConcatenateMultiply, GaussianExpansion, Multiply,
                                 PropertyEmbedding, PropertySampler)


def test_properties_and_ranges_in_user_units():
    assert set(PROPERTIES) == {"alpha", "gap", "homo", "lumo", "mu", "Cv"}
    assert PROPERTIES["gap"].unit == "eV" and PROPERTIES["gap"].gaussian_max == pytest.approx(0.6221 * HARTREE_EV)
    assert PROPERTIES["homo"].gaussian_min == pytest.approx(-11.663, abs=1e-3)
    assert PROPERTIES["alpha"].unit == "Bohr^3" and PROPERTIES["Cv"].gaussian_min == 6.002


def test_gaussian_expansion_peaks_at_its_centres():
    ge = GaussianExpansion(0.0, 4.0, 5)
    out = ge(torch.tensor([0.0, 1.0, 4.0, 2.5]))
    assert out.shape == (4, 5)
    assert out[0].argmax() == 0 and out[1].argmax() == 1 and out[2].argmax() == 4
    assert out[1, 1] == pytest.approx(1.0) and out[1, 0] == pytest.approx(torch.exp(torch.tensor(-0.5)).item())


@pytest.mark.parametrize("method", sorted(COMBINERS))
@pytest.mark.parametrize("ge", [False, True])
def test_every_method_embeds_into_node_scalars(method, ge):
    torch.manual_seed(0)
    emb = PropertyEmbedding("gap", 16, method, ge, mean=6.8, std=1.3)
    h0, batch = torch.randn(7, 16), torch.tensor([0, 0, 0, 1, 1, 2, 2])
    h = emb(h0, torch.tensor([5.0, 7.0, 9.0]), batch)
    assert h.shape == (7, 16) and torch.isfinite(h).all()
    # atoms of one molecule see the same property, different molecules a different one
    h_other = emb(h0, torch.tensor([5.0, 7.0, 3.0]), batch)
    assert torch.allclose(h[:5], h_other[:5]) and not torch.allclose(h[5:], h_other[5:])


def test_multiply_gate_range_and_intended_concatenate_multiply():
    torch.manual_seed(0)
    h0, p = torch.randn(50, 8), 100 * torch.randn(50, 8)
    ratio = Multiply(8)(h0, p) / h0
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.5 + 1e-6
    cm = ConcatenateMultiply(8)
    out = cm(h0, p)
    assert not torch.allclose(out, Multiply(8)(h0, p))       # the MLP W is used (unlike the reference code)
    out.sum().backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in cm.w.parameters())
    r = out.detach() / h0
    assert r.min() >= 0.5 - 1e-6 and r.max() <= 1.5 + 1e-6


def test_bad_embedding_arguments():
    with pytest.raises(ValueError, match="unknown property 'logP'"):
        PropertyEmbedding("logP", 8)
    with pytest.raises(ValueError, match="unknown embedding method 'add'"):
        PropertyEmbedding("gap", 8, "add")


def _toy_data():
    # 3-atom molecules have values in [0, 1], 5-atom molecules in [10, 11]; 3 atoms twice as often
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([3] * 2000 + [5] * 1000)
    v = torch.cat([torch.rand(2000, generator=g), 10 + torch.rand(1000, generator=g)])
    return n, v


def test_sampler_draws_value_jointly_with_atom_count():
    n, v = _toy_data()
    s = PropertySampler(max_atoms=29, n_bins=100, conditional=True).fit(n, v)
    sizes, values = s.sample(3000, torch.Generator().manual_seed(1))
    sizes, values = torch.tensor(sizes), torch.tensor(values)
    assert abs((sizes == 3).float().mean().item() - 2 / 3) < 0.03
    assert torch.all((values[sizes == 3] >= 0) & (values[sizes == 3] <= 1))
    assert torch.all((values[sizes == 5] >= 10) & (values[sizes == 5] <= 11))
    assert abs(values[sizes == 3].mean().item() - 0.5) < 0.03       # uniform within bins
    again = s.sample(3000, torch.Generator().manual_seed(1))
    assert again[0] == sizes.tolist()                                # seeded


def test_sampler_ood_task_and_checkpoint_round_trip():
    n, v = _toy_data()
    s = PropertySampler(29, 100, True).fit(n, v)
    sizes, values = s.sample_ood(500, torch.Generator().manual_seed(2))
    assert values == pytest.approx([float(torch.quantile(v.double(), 0.99))] * 500)
    assert set(sizes) == {5}                       # only molecules above the 97th percentile are 5-atom ones
    s2 = PropertySampler(29, 100, True)
    s2.load_state_dict(s.state_dict())
    assert s2.sample(10, torch.Generator().manual_seed(3)) == s.sample(10, torch.Generator().manual_seed(3))


def test_sampler_draw_is_the_generators_protocol():
    """draw(): a fixed target gives N from the molecules near it (the 10-ish values are all 5-atom molecules), the
    OOD task and in-distribution pairs are the dedicated methods' draws for the same seed; unconditional: N only."""
    n, v = _toy_data()
    s = PropertySampler(29, 100, True).fit(n, v)
    sizes, values = s.draw(200, 10.5, torch.Generator().manual_seed(4))
    assert set(sizes) == {5} and values == [10.5] * 200
    assert s.draw(50, None, torch.Generator().manual_seed(5)) == s.sample(50, torch.Generator().manual_seed(5))
    assert s.draw(50, 0.5, torch.Generator().manual_seed(6), ood=True) == s.sample_ood(50, torch.Generator().manual_seed(6))
    plain = PropertySampler(29, 10, conditional=False).fit(n)
    assert plain.draw(20, None, torch.Generator().manual_seed(7)) == (
        plain.sample_n_atoms(20, torch.Generator().manual_seed(7)), None)
    with pytest.raises(RuntimeError, match="unconditional"):
        plain.draw(5, 1.0)


def test_sampler_errors():
    s = PropertySampler(29, 10, conditional=False)
    with pytest.raises(RuntimeError, match="call fit"):
        s.sample_n_atoms(3)
    s.fit(torch.tensor([4, 5, 6]))
    assert set(s.sample_n_atoms(50, torch.Generator().manual_seed(0))) <= {4, 5, 6}
    with pytest.raises(RuntimeError, match="unconditional"):
        s.sample(3)
    with pytest.raises(ValueError, match="1..29"):
        s.fit(torch.tensor([30]))
