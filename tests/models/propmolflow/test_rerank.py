"""Best-of-K sampling (``rerank``): K candidates per (N, target), the one a property predictor puts closest to the
target is kept; the pipeline reads a predictor stage only when it reranks."""
import numpy as np
import pytest
import torch

from molgen.errors import ConfigError
from molgen.models.propmolflow.model import PropMolFlow
from molgen.models.regressor import GVPRegressor
from tests.models.propmolflow.test_model import TINY

SMALL_REGRESSOR = dict(s_dim=16, v_dim=4, edge_dim=8, n_layers=2, rbf_dim=8)


def _predictor(prop="gap", seed=3):
    torch.manual_seed(seed)
    reg = GVPRegressor(property_name=prop, property_mean=6.0, property_std=1.5, **SMALL_REGRESSOR)
    with torch.no_grad():                       # spread the untrained predictions so candidates differ
        reg.readout[-1].weight.mul_(50.0)
    return reg.eval()


def test_rerank_keeps_the_candidate_predicted_closest_to_each_target():
    torch.manual_seed(0)
    model = PropMolFlow(**TINY, property_name="gap", property_mean=6.0)
    predictor = _predictor()
    sizes, values, k = [5, 8, 6], [4.5, 6.0, 8.5], 4
    kw = dict(steps=3, seed=11, progress=False)
    chosen = model.sample_molecules(sizes, values, rerank=k, predictor=predictor, **kw)
    # the candidates, drawn as rerank draws them: each (N, target) repeated k times, consecutively, same seed
    cands = model.sample_molecules([n for n in sizes for _ in range(k)], [v for v in values for _ in range(k)], **kw)
    pred = predictor.predict(cands).reshape(len(sizes), k)
    assert np.isfinite(pred).all() and np.ptp(pred, axis=1).min() > 0           # a real choice in every group
    for i, (n, v) in enumerate(zip(sizes, values)):
        best = cands[i * k + int(np.argmin(np.abs(pred[i] - v)))]
        assert chosen[i].num_atoms == n
        assert torch.equal(torch.as_tensor(chosen[i].positions), torch.as_tensor(best.positions))
        assert abs(predictor.predict([chosen[i]])[0] - v) == pytest.approx(np.abs(pred[i] - v).min())
    # rerank=1 is the plain sampler
    plain = model.sample_molecules(sizes, values, **kw)
    assert all(torch.equal(torch.as_tensor(a.positions), torch.as_tensor(b.positions))
               for a, b in zip(plain, model.sample_molecules(sizes, values, rerank=1, predictor=predictor, **kw)))


def test_rerank_refuses_a_missing_or_mismatched_predictor_and_an_unconditional_model():
    model = PropMolFlow(**TINY, property_name="gap", property_mean=6.0)
    kw = dict(steps=2, progress=False, rerank=2)
    with pytest.raises(ConfigError, match="needs a predictor of 'gap'"):
        model.sample_molecules([4], [6.0], **kw)
    with pytest.raises(ConfigError, match="predicts 'mu'"):
        model.sample_molecules([4], [6.0], predictor=_predictor("mu"), **kw)
    with pytest.raises(ConfigError, match="conditional model"):
        PropMolFlow(**TINY).sample_molecules([4], None, predictor=_predictor(), **kw)


def test_the_sample_stage_reads_the_predictor_stage_only_when_it_reranks():
    from molgen.config import compose
    from molgen.pipelines.propmolflow import STAGES, check_sample
    from molgen.runner import active_needs, plan

    sample = {s.name: s for s in STAGES}["sample"]
    plain = compose(["pipeline=propmolflow"])
    assert active_needs(sample, plain) == ("train",)                  # keys of existing sample stages unchanged
    assert "predictor" not in [s.name for s in plan(STAGES, "sample", plain)]
    best_of = compose(["pipeline=propmolflow", "sample.rerank=4", "predictor=gvp_small"])
    assert active_needs(sample, best_of) == ("train", "predictor")
    assert [s.name for s in plan(STAGES, "sample", best_of)][-2:] == ["predictor", "sample"]
    check_sample(best_of)
    given = compose(["pipeline=propmolflow", "sample.rerank=4", "sample.predictor=some.ckpt"])
    assert active_needs(sample, given) == ("train",)
    with pytest.raises(ConfigError, match="needs a property predictor: predictor=gvp_small"):
        check_sample(compose(["pipeline=propmolflow", "sample.rerank=4"]))
    with pytest.raises(ConfigError, match="needs a conditional model"):
        check_sample(compose(["pipeline=propmolflow", "sample.rerank=4", "condition=none", "predictor=gvp_small"]))


def test_shipped_gap_predictor_reads_qm9_molecules_it_never_saw():
    """`propmolflow-qm9-gap-predictor` trained on full QM9's generator half Da only: on embedded QM9 molecules of
    the other half Db and of the test split it is far better than the molecule's size alone."""
    import molgen
    from molgen.data.qm9 import load_qm9
    from molgen.models.regressor import per_atom_count_baseline

    predictor = molgen.load("propmolflow-qm9-gap-predictor")
    assert predictor.property_name == "gap"
    data = load_qm9({"source": "embedded", "max_molecules": 600}, progress=False)
    unseen = data.splits["regressor"] + data.splits["test"]
    seen = data.splits["generator"]
    assert len(unseen) > 200
    y = np.array([m.properties["gap"] for m in unseen])
    mae = np.abs(predictor.predict(unseen) - y).mean()
    size_only = per_atom_count_baseline(np.array([m.num_atoms for m in seen]),
                                        np.array([m.properties["gap"] for m in seen]),
                                        np.array([m.num_atoms for m in unseen]))
    assert mae < 0.6 * np.abs(size_only - y).mean()
