"""The shipped ``sild-qm9`` (gap-conditioned latent flow on full QM9): loads by name offline, samples like
PropMolFlow's API."""
import pytest
import torch
from rdkit import Chem

import molgen
from molgen.errors import ConfigError


@pytest.fixture(scope="module")
def model():
    return molgen.load("sild-qm9")


def test_sild_qm9_is_a_gap_conditioned_flow_prior_on_means(model):
    assert model.conditional and model.hparams.property_name == "gap"
    assert model.hparams.prior == "flow" and model.hparams.prior_latents == "mean"


def test_sild_qm9_samples_by_seed_with_3d_bonded_molecules(model):
    a = model.sample(4, condition={"gap": 6.8}, steps=20, seed=3, progress=False)
    b = model.sample(4, condition={"gap": 6.8}, steps=20, seed=3, progress=False)
    assert len(a) == 4
    for m, n in zip(a, b):
        assert m.GetNumConformers() == 1 and m.GetNumAtoms() == n.GetNumAtoms()
        assert Chem.MolToSmiles(m) == Chem.MolToSmiles(n)
        assert {atom.GetSymbol() for atom in m.GetAtoms()} <= {"H", "C", "N", "O", "F"}
    with pytest.raises(ConfigError, match="conditioned on 'gap'"):
        model.sample(1, condition={"mu": 1.0}, steps=2)
