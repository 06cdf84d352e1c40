"""The GVP property regressor: learns on real molecules, predicts in user units, rejects unknown elements."""
import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from molgen.models.propmolflow.model import WithProperty
from molgen.models.regressor import GVPRegressor, per_atom_count_baseline
from molgen.testing import assert_invariant


def test_regressor_fits_and_predicts_in_user_units(real_graphs, real_molecules):
    torch.manual_seed(0)
    y = real_graphs.properties()[:, 0]
    reg = GVPRegressor(property_name="gap", property_mean=float(y.mean()), property_std=float(y.std()), s_dim=32,
                       v_dim=4, edge_dim=16, rbf_dim=8, n_layers=2, message_norm=10.0)
    batch = next(iter(DataLoader(WithProperty(real_graphs, "gap"), batch_size=8)))
    opt = torch.optim.Adam(reg.parameters(), lr=1e-2)
    baseline = np.abs(y.numpy() - y.mean().item()).mean()       # MAE of predicting the mean
    # trained until the MAE is below 0.4x the baseline, checked every 10 steps, within a generous cap (a fixed 80
    # steps reached 0.38-0.39x for some seeds, so the thread count decided the outcome)
    for step in range(1, 601):
        loss = torch.nn.functional.mse_loss(reg(batch), reg._z(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and np.abs(reg.predict(real_molecules) - y.numpy()).mean() < 0.4 * baseline:
            break
    pred = reg.predict(real_molecules)
    assert pred.shape == (8,) and np.abs(pred - y.numpy()).mean() < 0.4 * baseline, step
    assert np.allclose(reg.predict_dataset(WithProperty(real_graphs, "gap")), pred, atol=1e-4)
    # invariance: a rotated, mirrored or moved molecule gets the same prediction
    m = real_molecules[3]
    assert_invariant(lambda pos: reg.predict([type(m)(pos, m.atomic_numbers, m.formal_charges, m.bonds,
                                                      m.bond_orders)]), m.positions, "position",
                     permute=False, atol=1e-4, rtol=0)


def test_regressor_marks_molecules_outside_the_vocabulary(real_molecules):
    from molgen.data.molecule import Molecule

    reg = GVPRegressor(property_name="mu", s_dim=16, v_dim=4, edge_dim=8, rbf_dim=8, n_layers=1)
    chloro = Molecule(np.zeros((2, 3)) + [[0, 0, 0], [1.8, 0, 0]], [6, 17])
    pred = reg.predict([real_molecules[0], chloro])
    assert np.isfinite(pred[0]) and np.isnan(pred[1])


def test_atoms_only_baseline_is_the_per_count_median():
    n = np.array([3, 3, 3, 5, 5])
    y = np.array([1.0, 2.0, 10.0, 7.0, 9.0])
    assert per_atom_count_baseline(n, y, np.array([3, 5, 4])).tolist() == [2.0, 8.0, 7.0]


def test_cosine_schedule_decays_to_zero_over_the_epoch_budget(tmp_path, real_graphs):
    import pytorch_lightning as pl

    y = real_graphs.properties()[:, 0]
    reg = GVPRegressor(property_name="gap", property_mean=float(y.mean()), property_std=float(y.std()), s_dim=16,
                       v_dim=4, edge_dim=8, rbf_dim=8, n_layers=1, lr=1e-2, lr_schedule="cosine")
    loader = DataLoader(WithProperty(real_graphs, "gap"), batch_size=2)      # 4 steps per epoch
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[Record()], default_root_dir=tmp_path).fit(reg, loader)
    assert len(lrs) == 12 and lrs[0] == 1e-2
    assert all(a > b for a, b in zip(lrs, lrs[1:]))                  # per step, not per epoch
    assert lrs[6] == pytest.approx(0.5e-2)                              # half-way through the 12 steps: cos(pi/2)
    assert lrs[-1] < 0.03e-2


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        GVPRegressor(property_name="gap", lr_schedule="step")
