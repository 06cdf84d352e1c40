"""The configuration schema: types, ranges and choices, checked when a command starts (before any stage runs).

Three sources, in this order of precedence:

1. **Declared rules** (:data:`RULES`): a range, a set of choices, or a type for a dotted key pattern (``*``
   matches one key, e.g. ``*.batch_size`` matches ``trainer.batch_size`` and ``sample.batch_size``).
2. **Trainer groups** (``trainer``, ``regressor.trainer``, ``trainer.<phase>``): every key is either an argument
   of :class:`pytorch_lightning.Trainer` (checked against its type annotation, so the Trainer's own signature is
   the schema and any new Lightning argument works as ``trainer.<arg>=...``) or one of molgen's training
   options (:data:`TRAINING_OPTIONS`); anything else is an unknown key.
3. **The shipped defaults**: the YAML files of each config group are the schema's defaults, and a key's type is
   the type of its default (an integer key takes integers, a float key numbers, a list key lists...; a ``null``
   default takes any type unless a rule says otherwise).

:data:`VERSION` versions the schema for the run cache: :data:`ADDED` lists the keys added after version 1 with
the value that reproduces the earlier behaviour; while a key holds that value it is left out of the stage keys,
so adding an option never invalidates finished stages (see :func:`molgen.runner.stage_key`).

A violation raises :class:`~molgen.errors.ConfigError` with one line naming the key, the value and what is
allowed; ``molgen run`` prints it and exits with status 2 before anything runs.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Iterable

from molgen.errors import ConfigError

VERSION = 3

#: keys added after schema version 1 -> (version, the value that reproduces the earlier behaviour, or a
#: ``{pipeline: value}`` mapping where the pipelines' defaults differ). Keys are looked up in the version-2
#: layout of :func:`canonical`.
ADDED: dict[str, tuple[int, Any]] = {
    "model.backbone": (2, "gvp"),
    "model.gaunt_lmax": (2, 2),
    "model.gaunt_hidden": (2, 32),
    "model.gaunt_layers": (2, {"propmolflow": 3, "sild": 2}),
    "model.gaunt_correlation": (2, 2),
    "model._target_": (3, {"propmolflow": "molgen.models.propmolflow.model.PropMolFlow",
                           "atom": "molgen.models.atom.forecaster.TrajectoryForecaster",
                           "sild": "molgen.models.sild.model.SiLD",
                           "graphmvp": "molgen.models.graphmvp.pretrainer.GraphMVPPretrainer",
                           "cpdiffusion_ss": "molgen.models.cpdiffusion_ss.model.CPDiffusionSS"}),
    "regressor._target_": (3, "molgen.models.regressor.GVPRegressor"),
    "regressor.lr_schedule": (3, "plateau"),            # cosine for a fixed budget of epochs (plateau only before)
    "model.self_condition": (3, {"propmolflow": False, "sild": False}),
    "model.init_from": (3, {"propmolflow": None, "graphmvp": None}),
    "validate.require_neutral": (3, None),
    "sample.length_range": (3, {"cpdiffusion_ss": None}),
    "chain": (3, {"cpdiffusion_ss": None}),
    "validate.depictions": (3, 48),   # presentation only (report.html): the verdicts are unchanged
    "validate.viewer": (3, 6),
    "model.prior": (3, {"sild": "diffusion"}),                # SiLD's latent prior (GeoLDM's diffusion before)
    "model.property_dropout": (3, {"propmolflow": 0.0, "sild": 0.0}),   # classifier-free guidance (none before)
    "model.self_condition_lag": (3, {"propmolflow": 0.0}),    # lagged self-conditioning for few-step sampling
    "model.reference": (3, {"atom": False}),                  # ATOM/EGNO/static: mean-structure prior (none before)
    "model.reference_conformers": (3, {"atom": 4}),
    "model.tumbling": (3, {"atom": False}),                   # extrapolate the overall rotation seen since t - history
    "data.history_frames": (3, {"atom": 0}),
    "sample.guidance": (3, {"propmolflow": 1.0, "sild": 1.0}),
    "sample.grid_power": (3, {"propmolflow": 1.0, "sild": 1.0}),          # few-step sampling settings (fixed before)
    "sample.stochasticity": (3, {"propmolflow": None}),
    "sample.rerank": (3, {"propmolflow": 1, "sild": 1}),       # candidates per target, best by the predictor
    "sample.predictor": (3, {"propmolflow": None, "sild": None}),
    "sample.ood": (3, {"sild": False}),                       # SiLD's out-of-distribution task (PropMolFlow's)
    "sample.valence_decode": (3, {"propmolflow": False}),     # the last step's tokens decided jointly under valence
    "sample.net_charge": (3, {"propmolflow": 0}),             # ... and net charge (no effect without the decoding)
    "model.residue_encoder": (3, {"cpdiffusion_ss": "lm"}),    # CPDiffusion-SS residue representation
    "model.feature_dim": (3, {"cpdiffusion_ss": 128}),
    "model.plan_decoder": (3, {"cpdiffusion_ss": False}),
    "data.simulate_train": (3, {"atom": None}),       # extra simulated training trajectories (none before)
    "data.simulated_frames": (3, {"atom": 12000}),
    "data.simulation_dir": (3, {"atom": None}),
    "data.simulation_workers": (3, {"atom": 2}),
    "finetune.rf_trees": (3, {"graphmvp": 500}),      # the ECFP4 + random forest baseline (finetune.init=ecfp_rf)
    "model.edge_latent_dim": (3, {"sild": 0}),           # SiLD: bonds in the latent, GVP flow prior (none before)
    "model.latent_noise": (3, {"sild": 0.0}),
    "model.raw_bonds": (3, {"sild": False}),             # SiLD's raw ablation with bonds in the flow (none before)
    "model.denoiser": (3, {"sild": "egnn"}),
    "model.denoiser_v_dim": (3, {"sild": 8}),
    "model.prior_lr_schedule": (3, {"sild": "constant"}),    # SiLD's prior phase: a decaying lr (constant before)
    "model.prior_lr_decay": (3, {"sild": 0.2}),
    "model.prior_latents": (3, {"sild": "sample"}),          # SiLD's prior on posterior draws (GeoLDM) or means
    "model.denoiser_edge_dim": (3, {"sild": 32}),
}

#: ATOM-pipeline network classes by ``model.name`` (version 2 chose the class by name)
_ATOM_NETWORKS = {"atom": "molgen.models.atom.network.ATOM", "egno": "molgen.models.atom.egno.EGNO",
                  "static": "molgen.models.atom.egno.StaticBaseline"}

_PROPMOLFLOW_NETS = {"molgen.models.propmolflow.net.EndpointNet": ("gvp", {}),
                     "molgen.models.propmolflow.net.GauntEndpointNet": (
                         "gaunt", {"lmax": "gaunt_lmax", "hidden": "gaunt_hidden", "n_layers": "gaunt_layers",
                                   "correlation": "gaunt_correlation"})}


_SILD_ENCODERS = {"molgen.models.sild.nets.LatentEncoder": ("egnn", {"n_layers": "encoder_layers", "hidden": None}),
                  "molgen.models.sild.nets.GauntLatentEncoder": (
                      "gaunt", {"lmax": "gaunt_lmax", "hidden": "gaunt_hidden", "n_layers": "gaunt_layers",
                                "correlation": "gaunt_correlation"})}


def _canonical_sild(model: dict[str, Any]) -> dict[str, Any]:
    model = dict(model)
    spec = model.pop("encoder")
    if spec is None:
        return {**model, "encoder": "none", "encoder_layers": 1}
    spec = dict(spec)
    target = str(spec.pop("_target_", ""))
    if target not in _SILD_ENCODERS:
        return {**model, "encoder": {"_target_": target, **spec}}
    name, renamed = _SILD_ENCODERS[target]
    model.update(encoder=name, encoder_layers=1)
    model.update({renamed[k]: v for k, v in spec.items() if renamed.get(k, k) is not None})
    return model


def canonical(config: dict[str, Any], pipeline: str) -> dict[str, Any]:
    """A stage's hashed config slice in the layout of schema version 2, where version 3 moved things (the
    PropMolFlow backbone and the SiLD encoder became injected specs, ``model/backbone`` and ``model/encoder``;
    the ATOM pipeline's network class moved
    from ``model.name`` into ``model.network_args._target_``): finished stages keep their keys."""
    model = config.get("model")
    if pipeline == "sild" and isinstance(model, dict) and "encoder" in model and not isinstance(model["encoder"], str):
        return {**config, "model": _canonical_sild(model)}
    if pipeline == "atom" and isinstance(model, dict) and isinstance(model.get("network_args"), dict):
        net = dict(model["network_args"])
        if net.get("_target_") == _ATOM_NETWORKS.get(str(model.get("name"))):
            net.pop("_target_")
        return {**config, "model": {**model, "network_args": net}}
    if pipeline != "propmolflow" or not isinstance(model, dict) or not isinstance(model.get("backbone"), dict):
        return config
    model = dict(model)
    spec = dict(model.pop("backbone"))
    target = str(spec.pop("_target_", ""))
    if target not in _PROPMOLFLOW_NETS:
        model["backbone"] = {"_target_": target, **spec}
        return {**config, "model": model}
    name, renamed = _PROPMOLFLOW_NETS[target]
    model["backbone"] = name
    model.update({renamed.get(k, k): v for k, v in spec.items()})
    return {**config, "model": model}

#: molgen's own training options, accepted beside the Trainer's arguments in a trainer group
TRAINING_OPTIONS = {"batch_size", "lr", "ema_decay", "num_workers", "val_every_n_epochs", "checkpoint_every_n_steps",
                    "seed", "optimizer", "weight_decay", "autoencoder", "diffusion"}


# ---------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """What a key accepts: ``kind`` (int, float, str, bool), a range ``[lo, hi]`` (``lo_open`` for ``lo <``),
    a set of choices, and whether ``null`` is allowed."""

    kind: type | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | None = None
    nullable: bool = True

    def check(self, key: str, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else f"{key}=null: a value is required"
        if self.choices is not None:
            return None if value in self.choices else \
                f"{key}={value}: choose from {', '.join('null' if c is None else str(c) for c in self.choices)}"
        if self.kind is not None and not _is_kind(value, self.kind):
            return f"{key}={value}: expected {_kind_name(self.kind)}"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"{key}={value}: must be {'>' if self.lo_open else '>='} {self.lo:g}" + \
                (f" and <= {self.hi:g}" if self.hi is not None else "")
        if self.hi is not None and value > self.hi:
            return f"{key}={value}: must be <= {self.hi:g}"
        return None


def _count(lo: int = 0, nullable: bool = True) -> Rule:
    return Rule(int, lo=lo, nullable=nullable)


def _positive(nullable: bool = True) -> Rule:
    return Rule(float, lo=0.0, lo_open=True, nullable=nullable)


RULES: dict[str, Rule] = {
    "seed": _count(0, nullable=False),
    "*.seed": _count(0),
    "stage": Rule(str, nullable=False),
    "out": Rule(str, nullable=False),
    "run": Rule(str, nullable=False),
    "trainer.max_epochs": _count(-1),
    "*.trainer.max_epochs": _count(-1),
    "trainer.*.max_epochs": _count(-1),
    "trainer.max_steps": _count(-1, nullable=False),
    "trainer.devices": Rule(None, nullable=False),
    "trainer.num_nodes": _count(1, nullable=False),
    "trainer.log_every_n_steps": _count(1),
    "trainer.val_every_n_epochs": _count(1),
    "trainer.checkpoint_every_n_steps": _count(1),
    "trainer.accelerator": Rule(str, choices=("cpu", "gpu", "cuda", "mps", "tpu", "auto"), nullable=False),
    "trainer.ema_decay": Rule(float, lo=0.0, hi=1.0),
    "trainer.*.ema_decay": Rule(float, lo=0.0, hi=1.0),
    "*.batch_size": _count(1),
    "*.*.batch_size": _count(1),
    "*.num_workers": _count(0),
    "*.lr": Rule(float, lo=0.0),      # 0: nothing to train (model=static)
    "*.*.lr": Rule(float, lo=0.0),
    "*.epochs": _count(0),
    "*.*.epochs": _count(0),
    "*.max_molecules": _count(1),
    "sample.n": _count(1, nullable=False),
    "sample.steps": _count(1),
    "sample.n_write": _count(0),
    "sample.solver": Rule(str, choices=("euler", "heun")),
    "sample.grid_power": _positive(),
    "sample.stochasticity": Rule(float, lo=0.0),
    "sample.sampler": Rule(str, choices=("ddpm", "ddim", "ancestral", "euler", "heun")),
    "model.prior": Rule(str, choices=("diffusion", "flow")),
    "regressor.lr_schedule": Rule(str, choices=("plateau", "cosine")),
    "predictor.lr_schedule": Rule(str, choices=("plateau", "cosine")),
    "model.prior_lr_schedule": Rule(str, choices=("constant", "cosine", "wsd")),
    "model.prior_lr_decay": Rule(float, lo=0.0, hi=1.0, lo_open=True),
    "model.prior_latents": Rule(str, choices=("sample", "mean")),
    "sample.rerank": _count(1),
    "sample.valence_decode": Rule(bool),
    "sample.net_charge": Rule(int),
    "model.self_condition_lag": Rule(float, lo=0.0, hi=1.0),
    "model.reference": Rule(bool),
    "model.reference_conformers": Rule(int, lo=1, hi=16),
    "model.tumbling": Rule(bool),
    "data.history_frames": Rule(int, lo=0),
    "model.denoiser": Rule(str, choices=("egnn", "gvp")),
    "model.edge_latent_dim": _count(0),
    "model.latent_noise": Rule(float, lo=0.0),
    "model.raw_bonds": Rule(bool),
    "model.residue_encoder": Rule(str, choices=("auto", "lm", "proteinmpnn")),
    "pretrain.data": Rule(None, nullable=False),   # one source or a list of them (checked by the featurize stage)
    "finetune.task": Rule(None, nullable=False),   # a set, a list of sets or `all` (checked by the finetune stage)
    "finetune.init": Rule(None, nullable=False),   # one init or a list (checked by the finetune stage)
    "finetune.rf_trees": _count(1),
    "pretrain.workers": _count(1),
    "condition.property": Rule(str, choices=(None, "alpha", "gap", "homo", "lumo", "mu", "Cv")),
    "condition.embedding": Rule(str, choices=("concatenate", "sum", "multiply", "concatenate_sum",
                                              "concatenate_multiply")),
    "model.encoder": Rule(str),
    "model.init_from": Rule(str),
    "validate.require_neutral": Rule(bool),
    "chain": Rule(str),
    "validate.depictions": _count(0),
    "validate.viewer": _count(0),
    "validate.workers": _count(1),
    "validate.posebusters": Rule(choices=(True, False, "fast", "full", "off")),   # "fast": without the energy ratio
    "validate.timeout": _positive(),
    "*.n_layers": _count(1),
    "*.num_layers": _count(1),
}


def _rule_for(key: str) -> Rule | None:
    if key in RULES:
        return RULES[key]
    depth = key.count(".")
    for pattern, rule in RULES.items():
        if "*" in pattern and pattern.count(".") == depth and fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


# ---------------------------------------------------------------------------------------------- types
def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)  # 123 is a fine name
    return isinstance(value, kind)


def _kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
            dict: "a mapping"}.get(kind, kind.__name__)


def _fits_annotation(value: Any, ann: Any) -> bool | None:
    """Whether ``value`` (a plain config value) fits a type annotation; None when it cannot be told."""
    if ann is inspect.Parameter.empty or ann is Any:
        return None
    origin = typing.get_origin(ann)
    if origin is typing.Union:
        verdicts = [_fits_annotation(value, a) for a in typing.get_args(ann)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if origin is typing.Literal:
        return value in typing.get_args(ann)
    if ann is type(None):
        return value is None
    if ann in (int, float, str, bool):
        return _is_kind(value, ann) and not (ann is str and not isinstance(value, str))
    if origin in (list, tuple) or ann in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or ann is dict:
        return isinstance(value, dict)
    if ann is _dt.timedelta:
        return False
    return None  # a class (Accelerator, Logger, ...): a config value is not one of those


def _describe(ann: Any) -> str:
    literals = _literals(ann)
    if literals is not None:
        return "one of " + ", ".join("null" if v is None else repr(v) for v in literals)
    text = str(ann).replace("typing.", "").replace("NoneType", "null")
    for mod in ("pytorch_lightning.accelerators.accelerator.", "pytorch_lightning.strategies.strategy.",
                "datetime.", "pathlib."):
        text = text.replace(mod, "")
    return text


def _literals(ann: Any) -> list | None:
    """The allowed values of a Literal (or a Union of Literals and None), else None."""
    if typing.get_origin(ann) is typing.Literal:
        return list(typing.get_args(ann))
    if typing.get_origin(ann) is typing.Union:
        out = []
        for a in typing.get_args(ann):
            if a is type(None):
                out.append(None)
                continue
            sub = _literals(a)
            if sub is None:
                return None
            out += sub
        return out
    return None


def trainer_arguments() -> dict[str, Any]:
    """``name -> annotation`` of :class:`pytorch_lightning.Trainer`'s arguments."""
    import pytorch_lightning as pl

    params = inspect.signature(pl.Trainer.__init__).parameters
    return {n: p.annotation for n, p in params.items() if n != "self"}


# ---------------------------------------------------------------------------------------------- checking
def _leaves(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def _lookup(tree: Any, key: str) -> tuple[bool, Any]:
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _trainer_nodes(cfg: dict) -> list[str]:
    nodes = []
    if isinstance(cfg.get("trainer"), dict):
        nodes.append("trainer")
        nodes += [f"trainer.{p}" for p in ("autoencoder", "diffusion") if isinstance(cfg["trainer"].get(p), dict)]
    for group in ("regressor", "predictor"):
        if isinstance(cfg.get(group), dict) and isinstance(cfg[group].get("trainer"), dict):
            nodes.append(f"{group}.trainer")
    return nodes


def check(cfg: dict, defaults: dict, trainer_args: dict[str, Any] | None = None) -> None:
    """Raise :class:`ConfigError` (one line) for the first key of ``cfg`` that breaks the schema.

    Args:
        cfg: the composed configuration as plain containers (resolved).
        defaults: the same configuration composed without the user's value overrides (same group choices):
            the shipped defaults whose types the values must keep.
        trainer_args: the Trainer's argument annotations (default: :func:`trainer_arguments`).
    """
    trainer_args = trainer_arguments() if trainer_args is None else trainer_args
    problems: list[str] = []
    trainer_nodes = _trainer_nodes(cfg)
    for node in trainer_nodes:
        for key, value in cfg_node(cfg, node).items():
            if key in TRAINING_OPTIONS or (node == "trainer" and key in ("autoencoder", "diffusion")):
                continue
            if key not in trainer_args:
                problems.append(f"{node}.{key}={value}: unknown trainer key (a pytorch_lightning.Trainer argument "
                                f"or one of {', '.join(sorted(TRAINING_OPTIONS))})")
            elif _rule_for(f"{node}.{key}") is None and _fits_annotation(value, trainer_args[key]) is False:
                problems.append(f"{node}.{key}={value}: expected {_describe(trainer_args[key])} "
                                f"(pytorch_lightning.Trainer's {key})")
    for key, value in _leaves(cfg):
        node, _, leaf = key.rpartition(".")
        if node in trainer_nodes and leaf in trainer_args and _rule_for(key) is None:
            continue  # checked above against the Trainer's own signature
        rule = _rule_for(key)
        if rule is not None:
            msg = rule.check(key, value)
        else:
            msg = _check_against_default(key, value, defaults)
        if msg:
            problems.append(msg)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def cfg_node(cfg: dict, dotted: str) -> dict:
    found, node = _lookup(cfg, dotted)
    return node if found and isinstance(node, dict) else {}


def _check_against_default(key: str, value: Any, defaults: dict) -> str | None:
    found, default = _lookup(defaults, key)
    if not found or default is None or value is None:
        return None
    kind = next(k for k in (bool, int, float, str, list, dict, object) if isinstance(default, k))
    if kind is object:
        return None
    if kind is dict and isinstance(value, str) and "_target_" in default:
        return (f"{key}={value}: {key} is a config group; choose it with {key.replace('.', '/')}={value}")
    ok = isinstance(value, (list, tuple)) if kind is list else _is_kind(value, kind)
    return None if ok else f"{key}={value}: expected {_kind_name(kind)} (default {default})"


def neutral_keys(config: dict[str, Any], pipeline: str, added: dict[str, tuple[int, Any]] | None = None
                 ) -> list[str]:
    """Dotted keys in a stage's hashed config slice that hold the neutral value of an option added after schema
    version 1 (``added``, default :data:`ADDED`): they are left out of the stage key, so finished stages stay
    valid when an option is added."""
    out = []
    for key, (_, neutral) in (ADDED if added is None else added).items():
        if isinstance(neutral, dict):
            if pipeline not in neutral:
                continue
            neutral = neutral[pipeline]
        found, value = _lookup_dotted(config, key)
        if found and value == neutral:
            out.append(key)
    return out


def _lookup_dotted(config: dict[str, Any], key: str) -> tuple[bool, Any]:
    """Find ``key`` in a stage slice whose top-level keys are themselves dotted paths (``model``, ``seed``...)."""
    if key in config:
        return True, config[key]
    for top in sorted(config, key=len, reverse=True):
        if key.startswith(top + "."):
            return _lookup(config[top], key[len(top) + 1:])
    return False, None

