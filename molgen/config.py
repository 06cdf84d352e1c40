"""Compose molgen's Hydra configuration from the shipped config groups and command-line overrides.

The configs ship inside the package (``molgen.configs``), so composition works from any directory after a
non-editable install. ``configs/molgen.yaml`` is the primary config; ``configs/pipeline/<name>.yaml`` picks
the defaults of every other group (data, model, trainer, sample, validate, condition) for one method.
"""
from __future__ import annotations

import importlib
import importlib.resources
from pathlib import Path

from omegaconf import DictConfig

from molgen.errors import ConfigError

GROUPS = ("pipeline", "data", "model", "trainer", "sample", "validate", "condition", "regressor", "predictor", "pretrain",
          "finetune")


def config_dir() -> Path:
    return Path(str(importlib.resources.files("molgen.configs")))


def group_options(group: str) -> list[str]:
    d = config_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def pipelines() -> list[str]:
    return group_options("pipeline")


def compose(overrides: list[str] | tuple[str, ...] = (), check: bool = True) -> DictConfig:
    """Compose the configuration for ``overrides`` (Hydra syntax) and check it against the schema
    (:mod:`molgen.config_schema`), raising ConfigError with one line."""
    cfg = _compose(overrides)
    if check:
        validate(cfg, overrides)
    return cfg


def _is_group_choice(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key in GROUPS


def validate(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> None:
    """Check a composed configuration against the schema: types of the shipped defaults, the Trainer's
    signature, declared ranges and choices (:func:`molgen.config_schema.check`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from molgen import config_schema

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid configuration: {' '.join(str(e).split())[:300]}") from None
    choices = [o for o in overrides if _is_group_choice(o)]
    defaults = values if len(choices) == len(overrides) else OmegaConf.to_container(_compose(choices), resolve=True)
    config_schema.check(values, defaults)


def _compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"'{o}' is not an override (expected key=value, e.g. pipeline=propmolflow)")
        key, value = o.split("=", 1)
        if key.lstrip("+~") == "pipeline" and value not in pipelines():
            raise ConfigError(f"pipeline={value}: unknown pipeline (choose from {', '.join(pipelines())})")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="molgen"):
            return hydra_compose(config_name="molgen", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        msg = " ".join(str(e).split()).split(" Config search path")[0]
        raise ConfigError(f"invalid override: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def plain(node) -> dict | list | None:
    """A config node as plain (resolved) Python containers; None stays None, plain values pass through."""
    from omegaconf import OmegaConf

    if node is None:
        return None
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def pipeline_module(name: str):
    """Import ``molgen.pipelines.<name>`` (the module that exports ``STAGES``)."""
    try:
        return importlib.import_module(f"molgen.pipelines.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"molgen.pipelines.{name}":
            raise ConfigError(f"pipeline={name}: no pipeline module molgen.pipelines.{name}") from None
        raise
