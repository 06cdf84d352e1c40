"""Tiny PropMolFlow settings shared by the pipeline tests (seconds per stage on one CPU core)."""
import pytest

TINY_PROPMOLFLOW = (  # from scratch (the default run fine-tunes the shipped checkpoint, of another size)
    "model.init_from=null", "model.s_dim=16", "model.backbone.v_dim=4", "model.edge_dim=8", "model.backbone.n_layers=2", "model.rbf_dim=8",
    "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.batch_size=4", "trainer.val_every_n_epochs=1",
    "regressor.s_dim=16", "regressor.v_dim=4", "regressor.edge_dim=8", "regressor.n_layers=1",
    "regressor.rbf_dim=8", "regressor.trainer.max_steps=2", "regressor.trainer.batch_size=4",
    "sample.n=5", "sample.steps=3", "sample.batch_size=3")


@pytest.fixture(scope="session")
def tiny_propmolflow():
    return list(TINY_PROPMOLFLOW)
