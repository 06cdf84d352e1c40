"""Per-step learning-rate schedules (molgen.nn.lr_schedules) under a real Lightning Trainer: the decay
follows the run's steps, and a run stopped and resumed from its checkpoint continues the same schedule."""
import pytest
import pytorch_lightning as pl
import torch

from molgen.nn.lr_schedules import lr_schedule


class _Tiny(pl.LightningModule):
    def __init__(self, schedule: str, decay: float = 0.4):
        super().__init__()
        self.schedule, self.decay = schedule, decay
        self.layer = torch.nn.Linear(3, 1)
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.5)
        return lr_schedule(opt, self.schedule, self.trainer, self.decay)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2)


class _StopAt(pl.Callback):
    """Stops the run after ``n`` steps, as ``max_time`` does: the run's step budget (the schedule) is unchanged."""

    def __init__(self, n: int):
        self.n = n

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.n:
            trainer.should_stop = True


def _fit(module, max_steps, tmp_path, ckpt_path=None, stop_at=None):
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=100, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[_StopAt(stop_at)] if stop_at else [])
    trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    return trainer


def test_wsd_holds_then_decays_linearly_to_zero_and_resumes(tmp_path):
    full = _Tiny("wsd")
    _fit(full, 10, tmp_path)
    assert full.lrs[:6] == [0.5] * 6                                 # constant for the first 60 % of 10 steps
    assert full.lrs[6:] == pytest.approx([0.5 * (10 - s) / 4 for s in range(6, 10)])
    first = _Tiny("wsd")
    trainer = _fit(first, 10, tmp_path, stop_at=5)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    second = _Tiny("wsd")
    _fit(second, 10, tmp_path, ckpt_path=str(tmp_path / "half.ckpt"))
    assert len(first.lrs) == 5 and first.lrs + second.lrs == pytest.approx(full.lrs)           # the stopped run continues the schedule


def test_cosine_and_constant(tmp_path):
    cos, const = _Tiny("cosine"), _Tiny("constant")
    _fit(cos, 8, tmp_path)
    _fit(const, 8, tmp_path)
    assert cos.lrs[0] == 0.5 and all(a > b for a, b in zip(cos.lrs, cos.lrs[1:])) and cos.lrs[-1] < 0.05
    assert const.lrs == [0.5] * 8


def test_bad_schedules_are_refused(tmp_path):
    with pytest.raises(ValueError, match="expected one of constant, cosine, wsd"):
        lr_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), "step", None)
    with pytest.raises(ValueError, match="needs a finite trainer max_epochs or max_steps"):
        lr_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), "wsd", None)


def test_sild_prior_phase_takes_the_schedule_and_its_autoencoder_does_not():
    from molgen.config import compose
    from molgen.errors import ConfigError
    from molgen.models.sild.model import SiLD

    model = SiLD(ae_hidden=16, decoder_layers=1, bond_hidden=16, denoiser_hidden=16, denoiser_layers=1,
                 timesteps=10, prior_lr_schedule="wsd", prior_lr_decay=0.5)
    assert isinstance(model.configure_optimizers(), torch.optim.Optimizer)        # autoencoder phase: constant
    model.set_phase("diffusion")
    with pytest.raises(ValueError, match="model.prior_lr_schedule=wsd needs a finite"):
        model.configure_optimizers()                                            # no trainer, no step budget
    with pytest.raises(ConfigError, match="model.prior_lr_schedule"):
        compose(["pipeline=sild", "model.prior_lr_schedule=linear"])
