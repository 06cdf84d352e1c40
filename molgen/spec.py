"""Objects from config: a *spec* is a plain mapping ``{"_target_": "package.module.Class", **arguments}``.

Models receive their swappable parts (a backbone, an encoder, a network) as specs and build them with
:func:`build`, adding the sizes only the model knows (vocabulary sizes, shared widths): the choice of class
lives in the config (``molgen/configs/model/<method>/...yaml``) and in the checkpoint's ``model_args`` (plain
strings and numbers, so weights-only loading rebuilds the same object), never in an if/else inside the model.
Building goes through :func:`hydra.utils.instantiate`, as everywhere else in molgen (models, the Trainer).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from molgen.errors import ConfigError


def target(spec: Mapping[str, Any]) -> str:
    """The dotted class path of a spec (ConfigError if it has none)."""
    name = spec.get("_target_") if isinstance(spec, Mapping) else None
    if not name:
        raise ConfigError(f"{dict(spec) if isinstance(spec, Mapping) else spec!r}: not an object spec "
                          "(a mapping with a _target_ class path)")
    return str(name)


def build(spec: Mapping[str, Any], /, **kwargs: Any) -> Any:
    """Instantiate ``spec`` with the extra keyword arguments ``kwargs`` (objects allowed, e.g. a module).

    Nested specs are passed to the object as plain mappings (``_recursive_=False``), for it to build with the
    sizes it knows; every config container arrives as a plain dict or list (``_convert_="all"``), so what the
    object records of its arguments stays weights-only serialisable.

    Raises:
        ConfigError: one line naming the target when it cannot be imported or rejects its arguments.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    name = target(spec)
    try:
        return instantiate(dict(spec), _recursive_=False, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):
            raise cause from None
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ConfigError(f"{name}: {first[:200]}") from None
