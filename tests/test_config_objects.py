"""Every option of every config group that builds an object composes, passes the schema and instantiates: models
(with their injected backbone / encoder / network), regressors and Trainers, as the pipelines build them."""
import pytest
import torch

from molgen.config import compose, group_options, pipelines, plain
from molgen.errors import ConfigError
from molgen.spec import build, target

#: keys of a model group that configure its training, not the model's constructor
NOT_CONSTRUCTOR = {"name", "epochs", "batch_size", "batch_size_diffusion", "oracle", "crop", "init_from"}


def _compose(*overrides):
    for p in pipelines():
        try:
            return compose([f"pipeline={p}", *overrides])
        except ConfigError:
            continue
    pytest.fail(f"{overrides} compose under no pipeline")


def _model_spec(cfg) -> dict:
    if cfg.pipeline.name == "atom":          # the pipeline adds the protocol (frames, history) and the prior's size
        from molgen.pipelines.atom import model_args_from

        meta = {"protocol": {"n_targets": 8, "delta_frame": 3000, "heavy_only": True, "history": 375},
                "time_step_fs": 0.5, "molecules": ["aspirin", "ethanol"],
                "info": {"aspirin": {"atoms": 21, "predicted_atoms": 13}, "ethanol": {"atoms": 9, "predicted_atoms": 3}}}
        return model_args_from(cfg, meta)
    spec = {k: v for k, v in plain(cfg.model).items() if k not in NOT_CONSTRUCTOR}
    if cfg.pipeline.name == "cpdiffusion_ss":  # no ESM2 weights here: the in-project language model
        spec.update(esm_model=None, pos_scale=10.0)
    return spec


@pytest.mark.parametrize("option", group_options("model"))
def test_every_model_option_instantiates(option):
    method = target(_compose(f"model={option}").model).split(".")[2]   # molgen.models.<method>....
    cfg = compose([f"pipeline={method}", f"model={option}"])            # composed as its own pipeline does
    model = build(_model_spec(cfg))
    assert type(model).__module__ + "." + type(model).__qualname__ == target(cfg.model)
    fitted_not_trained = option == "mean_structure" and model.prior is not None   # closed-form buffers only
    assert sum(p.numel() for p in model.parameters()) > 0 or option == "static" or fitted_not_trained


@pytest.mark.parametrize("group, pipeline", [("model/backbone", "propmolflow"), ("model/encoder", "sild")])
def test_every_injected_part_instantiates_inside_its_model(group, pipeline):
    from molgen.config import config_dir

    options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    assert len(options) >= 2
    for option in options:
        cfg = compose([f"pipeline={pipeline}", f"{group}={option}"])
        model = build(_model_spec(cfg))
        part = model.net if pipeline == "propmolflow" else model.encoder
        node = cfg.model.backbone if pipeline == "propmolflow" else cfg.model.encoder
        assert type(part).__module__ + "." + type(part).__qualname__ == target(node), option


@pytest.mark.parametrize("option", group_options("regressor"))
def test_every_regressor_option_instantiates(option):
    cfg = compose(["pipeline=propmolflow", f"regressor={option}"])
    spec = {k: v for k, v in plain(cfg.regressor).items() if k not in ("name", "trainer")}
    assert isinstance(build(spec), torch.nn.Module)


@pytest.mark.parametrize("option", group_options("trainer"))
def test_every_trainer_option_builds_a_trainer(option, tmp_path):
    from molgen.training import build_trainer

    cfg = _compose(f"trainer={option}")
    trainer_cfg = plain(cfg.trainer)
    for phase in ("autoencoder", "diffusion"):     # SiLD's phases: base keys + the phase's own
        if isinstance(trainer_cfg.get(phase), dict):
            trainer_cfg = {**{k: v for k, v in trainer_cfg.items() if k not in ("autoencoder", "diffusion")},
                           **trainer_cfg[phase]}
    if trainer_cfg.get("accelerator") == "gpu" and not torch.cuda.is_available():
        trainer_cfg["accelerator"] = "cpu"
    trainer = build_trainer(trainer_cfg, tmp_path, [], has_val=True)
    assert trainer.max_epochs == trainer_cfg.get("max_epochs", 1)
