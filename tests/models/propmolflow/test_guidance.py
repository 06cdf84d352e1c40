"""Classifier-free guidance for PropMolFlow: the null property embedding, property dropout in training, and the
guided sampler's algebra (w = 1: the conditional model; w = 0: the unconditional one), on small real molecules."""
import pytest
import torch
from torch_geometric.loader import DataLoader

from molgen.conditioning import PropertyEmbedding
from molgen.errors import ConfigError
from molgen.models.propmolflow.model import PropMolFlow, WithProperty
from tests.models.propmolflow.test_model import TINY


def _same(mols_a, mols_b) -> bool:
    return all(torch.equal(torch.as_tensor(m.positions), torch.as_tensor(n.positions))
               and torch.equal(torch.as_tensor(m.bond_orders), torch.as_tensor(n.bond_orders))
               and torch.equal(torch.as_tensor(m.atomic_numbers), torch.as_tensor(n.atomic_numbers))
               for m, n in zip(mols_a, mols_b))


def test_a_nan_value_selects_the_learned_null_embedding():
    torch.manual_seed(0)
    emb = PropertyEmbedding("gap", 8, null_token=True, mean=6.0)
    with torch.no_grad():
        emb.null.copy_(torch.arange(8.0))
    p = emb.embed_value(torch.tensor([5.0, float("nan"), 7.0]))
    assert torch.equal(p[1], torch.arange(8.0))
    torch.testing.assert_close(p[[0, 2]], emb.embed_value(torch.tensor([5.0, 7.0])))
    with pytest.raises(ValueError, match="no null token"):
        PropertyEmbedding("gap", 8).embed_value(torch.tensor([float("nan")]))


def test_property_dropout_trains_the_null_embedding(real_graphs):
    torch.manual_seed(1)
    model = PropMolFlow(**TINY, property_name="gap", property_mean=6.0, property_dropout=0.5)
    batch = next(iter(DataLoader(WithProperty(real_graphs, "gap"), batch_size=16)))
    model(batch)["loss"].backward()
    null = model.net.property_embedding.null
    assert null.grad is not None and null.grad.abs().sum() > 0          # some molecules trained unconditionally
    plain = PropMolFlow(**TINY, property_name="gap", property_mean=6.0)
    assert plain.net.property_embedding.null is None                    # old checkpoints keep their layout
    with pytest.raises(ConfigError, match="property_dropout"):
        PropMolFlow(**TINY, property_name="gap", property_dropout=1.0)


@pytest.mark.parametrize("self_condition", [False, True])
def test_guided_sampling_interpolates_between_the_unconditional_and_conditional_models(real_graphs, self_condition):
    torch.manual_seed(2)
    model = PropMolFlow(**TINY, property_name="gap", property_mean=6.0, property_dropout=0.2,
                        self_condition=self_condition)
    with torch.no_grad():
        model.net.property_embedding.null.normal_()                     # an untrained null would equal mean-gap
    sizes, values = [4, 7, 9], [4.0, 6.0, 9.0]
    kw = dict(steps=4, seed=5, progress=False)
    cond = model.sample_molecules(sizes, values, **kw)
    assert _same(model.sample_molecules(sizes, values, guidance=1.0, **kw), cond)
    uncond = model.sample_molecules(sizes, [float("nan")] * 3, **kw)     # the null embedding alone
    assert _same(model.sample_molecules(sizes, values, guidance=0.0, **kw), uncond)
    assert not _same(uncond, cond)
    strong = model.sample_molecules(sizes, values, guidance=3.0, **kw)
    assert [m.num_atoms for m in strong] == sizes and not _same(strong, cond)
    with pytest.raises(ConfigError, match="not trained with property dropout"):
        PropMolFlow(**TINY, property_name="gap").sample_molecules(sizes, values, guidance=2.0, **kw)
