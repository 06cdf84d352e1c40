"""molgen.load: shipped checkpoints by name, offline; clear errors for what is not a molgen checkpoint."""
import pytest
import torch

import molgen
from molgen.errors import CheckpointError


def test_every_shipped_checkpoint_loads_by_name():
    names = molgen.list_checkpoints()
    assert {"propmolflow-qm9", "atom-md17", "graphmvp-pretrained", "cpdiffusion_ss-cath", "sild-qm9"} <= set(names)
    for name in names:
        assert molgen.load(name) is not None, name


def test_shipped_propmolflow_samples_requested_sizes():
    model = molgen.load("propmolflow-qm9")
    assert model.property_name == "gap"
    mols = model.sample(3, condition={"gap": 6.8}, steps=5, seed=1)
    assert len(mols) == 3 and all(m.GetNumConformers() == 1 for m in mols)


def test_unknown_name_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        molgen.load("no-such-model")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="not a molgen checkpoint"):
        molgen.load(tmp_path / "plain.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only"):
        molgen.load(tmp_path / "junk.ckpt")


def test_pipeline_mismatch_is_refused():
    with pytest.raises(CheckpointError, match="not 'propmolflow'"):
        molgen.load("atom-md17", pipeline="propmolflow")
