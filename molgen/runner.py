"""The stage runner: run folders, caching by content hash, resume, and the run report.

A pipeline is a list of :class:`Stage` objects (``pipelines/<name>.py`` exports ``STAGES``). Each stage is a
pure function ``fn(cfg, ctx) -> metrics`` of its slice of the configuration and its upstream artifacts; it
writes files into ``ctx.dir`` and returns a flat dict of metrics. The runner owns everything else:

* **Run folder** ``<out>/<run>/<stage>/`` (``run`` defaults to ``<pipeline>-<data>``).
* **Caching.** A stage's key hashes its configuration slice (``Stage.config_keys``), the keys of the stages
  it reads and the content of files named in its configuration (``Stage.file_keys``). A finished stage with
  the same key is reused and the runner says so.
* **Nothing finished is destroyed.** When the key changed, the previous artifact is moved aside to
  ``<stage>@<key8>`` and restored, instead of recomputed, if that key comes back.
* **Resume.** A stage that started with the same key but did not finish is called again with
  ``ctx.resuming = True`` (training picks up ``last.ckpt``).
* **Report.** ``<run>/report.md`` and ``<run>/metrics.json`` gather every stage's metrics and report section;
  the CLI prints ``report: <path>`` as its last line.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from molgen.errors import ConfigError, MolgenError

STATE_FILE = "_stage.json"
REPORT_SECTION = "report.md"  # a stage's own Markdown section, inlined in the run report


def say(msg: str) -> None:
    """Print a progress line for the user (stdout, flushed)."""
    print(msg, flush=True)


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    Args:
        name: stage name used on the command line (``stage=<name>``) and as the folder name.
        fn: ``fn(cfg, ctx) -> dict`` doing the work; returns metrics (JSON-serialisable scalars or dicts).
        config_keys: dotted config keys whose values define the stage's output (its cache key).
        needs: upstream stages whose artifacts the stage reads (``ctx.input(name)``).
        file_keys: dotted config keys holding file paths whose content is part of the key (e.g. ``ckpt``).
        replaced_by: ``{upstream: config_key}``: when ``config_key`` is set, ``upstream`` is not needed
            (``ckpt=...`` replaces training).
        description: one line for ``molgen run --help``.
        ignore_keys: dotted keys inside ``config_keys`` that do not change the output (worker counts, ...)
            and so stay out of the cache key.
        neutral_defaults: ``{dotted key: value}`` for options added after artifacts were made, whose value
            here reproduces the earlier behaviour; the key is hashed only when it holds another value, so adding
            an option does not invalidate finished trainings.
        check: ``check(cfg)`` raising a MolgenError when the stage cannot run here (a missing optional
            package or weights, a bad option); called for every planned stage before the first one starts, so
            a user learns it before an upstream training runs.
    """

    name: str
    fn: Callable[[DictConfig, "StageContext"], dict]
    config_keys: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    file_keys: tuple[str, ...] = ()
    replaced_by: dict[str, str] = field(default_factory=dict)
    description: str = ""
    ignore_keys: tuple[str, ...] = ()
    neutral_defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[[DictConfig], None] | None = None


@dataclass
class StageContext:
    """What a stage function gets besides the config."""

    stage: Stage
    dir: Path
    run_dir: Path
    inputs: dict[str, Path]
    resuming: bool = False

    def input(self, name: str) -> Path:
        """Folder of an upstream stage's artifacts (or raise if the stage was replaced by an override)."""
        if name not in self.inputs:
            raise MolgenError(f"stage '{self.stage.name}' has no input from stage '{name}'")
        return self.inputs[name]

    def has_input(self, name: str) -> bool:
        return name in self.inputs


# ---------------------------------------------------------------------------------------------- hashing
def _select(cfg: DictConfig, dotted: str) -> Any:
    node = OmegaConf.select(cfg, dotted, throw_on_missing=False)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig,)) or OmegaConf.is_list(node) else node


def file_digest(path: Path) -> str:
    """sha256 of a file (streamed); for a folder, of its files' names and sizes."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path)}:{p.stat().st_size}".encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _drop(config: dict, dotted: str) -> None:
    """Remove ``dotted`` from ``config`` (whose top-level keys are dotted config keys such as ``model``)."""
    if dotted in config:
        config.pop(dotted)
        return
    for top in sorted(config, key=len, reverse=True):
        if dotted.startswith(top + "."):
            node, parts = config[top], dotted[len(top) + 1:].split(".")
            while isinstance(node, dict) and len(parts) > 1:
                node = node.get(parts.pop(0))
            if isinstance(node, dict):
                node.pop(parts[0], None)
            return


def stage_key(stage: Stage, cfg: DictConfig, upstream: dict[str, str]) -> tuple[str, dict]:
    """The cache key of ``stage`` under ``cfg`` given its upstream keys; returns (hex digest, what was hashed)."""
    config = {k: _select(cfg, k) for k in stage.config_keys}
    neutral = [k for k, v in stage.neutral_defaults.items() if _select(cfg, k) == v]
    for dotted in (*stage.ignore_keys, *neutral):  # e.g. data.perception_processes: how, not what
        _drop(config, dotted)
    material: dict[str, Any] = {"stage": stage.name, "config": config, "upstream": upstream, "files": {}}
    for key in stage.file_keys:
        value = _select(cfg, key)
        if value:
            p = Path(str(value)).expanduser()
            if not p.exists():
                raise ConfigError(f"{key}={value}: file not found")
            material["files"][key] = file_digest(p)
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    return digest, material


# ---------------------------------------------------------------------------------------------- state
def read_state(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_state(stage_dir: Path, state: dict) -> None:
    tmp = stage_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(stage_dir / STATE_FILE)


def _set_aside(stage_dir: Path, state: dict | None) -> Path:
    """Move a stage folder aside to ``<stage>@<key8>`` (never overwriting anything)."""
    tag = (state or {}).get("key", "unknown")[:8]
    target = stage_dir.with_name(f"{stage_dir.name}@{tag}")
    n = 1
    while target.exists():
        n += 1
        target = stage_dir.with_name(f"{stage_dir.name}@{tag}-{n}")
    stage_dir.rename(target)
    return target


def _claim(run_dir: Path, stage: str) -> Path:
    """Refuse to run a stage that another live process is running in the same run folder (a lock file)."""
    lock = run_dir / f".{stage}.lock"
    try:
        pid = int(lock.read_text())
        os.kill(pid, 0)
        if pid != os.getpid():
            raise MolgenError(f"{run_dir / stage} is being written by another molgen process (pid {pid}); "
                              "wait for it or stop it first")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass  # no lock, a garbled one, or its process is gone: take it
    except PermissionError:
        raise MolgenError(f"{run_dir / stage} is locked by another user's process") from None
    lock.write_text(str(os.getpid()))
    return lock


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- running
def plan(stages: list[Stage], target: str, cfg: DictConfig) -> list[Stage]:
    """Stages to execute (in order) for ``stage=target``: the target and what it needs, transitively."""
    by_name = {s.name: s for s in stages}
    if target == "all":
        wanted = [s.name for s in stages]
    elif target in by_name:
        wanted = [target]
    else:
        raise ConfigError(f"stage={target}: unknown stage (choose from all, {', '.join(by_name)})")
    needed: set[str] = set()

    def visit(name: str) -> None:
        if name in needed:
            return
        needed.add(name)
        for dep in active_needs(by_name[name], cfg):
            visit(dep)

    for name in wanted:
        visit(name)
    return [s for s in stages if s.name in needed]


def active_needs(stage: Stage, cfg: DictConfig) -> tuple[str, ...]:
    return tuple(d for d in stage.needs if not (d in stage.replaced_by and _select(cfg, stage.replaced_by[d])))


def run_stages(stages: list[Stage], cfg: DictConfig, run_dir: Path, target: str = "all") -> dict[str, dict]:
    """Execute the plan for ``target`` in ``run_dir``; returns ``{stage: state}`` for the stages executed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    todo = plan(stages, target, cfg)
    for stage in todo:
        if stage.check is not None:
            stage.check(cfg)
    keys: dict[str, str] = {}
    states: dict[str, dict] = {}
    for i, stage in enumerate(todo, 1):
        needs = active_needs(stage, cfg)
        key, material = stage_key(stage, cfg, {d: keys[d] for d in needs})
        keys[stage.name] = key
        sdir = run_dir / stage.name
        lock = _claim(run_dir, stage.name)
        try:
            states[stage.name] = _run_one(stage, cfg, run_dir, sdir, key, material, needs, f"[{i}/{len(todo)}] {stage.name}")
        finally:
            lock.unlink(missing_ok=True)
    return states


def _run_one(stage: Stage, cfg: DictConfig, run_dir: Path, sdir: Path, key: str, material: dict,
             needs: tuple[str, ...], prefix: str) -> dict:
    """Reuse, restore, resume or run one stage; returns its final state."""
    state = read_state(sdir) if sdir.exists() else None
    if state and state.get("key") == key and state.get("status") == "complete":
        say(f"{prefix}: reusing {sdir} (inputs and config unchanged)")
        return state
    resuming = bool(state and state.get("key") == key)
    if sdir.exists() and not resuming:
        old = _set_aside(sdir, state)
        say(f"{prefix}: config or inputs changed; previous artifact kept in {old}")
    archived = run_dir / f"{stage.name}@{key[:8]}"
    archived_state = read_state(archived) if not resuming and archived.exists() else None
    if archived_state and archived_state.get("key") == key and archived_state.get("status") == "complete":
        archived.rename(sdir)
        say(f"{prefix}: restored the finished artifact for this config from {archived}")
        return archived_state
    sdir.mkdir(parents=True, exist_ok=True)
    state = {"stage": stage.name, "key": key, "status": "running", "started": _now(),
             "hashed": material, "attempts": (state or {}).get("attempts", 0) + 1}
    _write_state(sdir, state)
    say(f"{prefix}: {'resuming' if resuming else 'running'} -> {sdir}")
    ctx = StageContext(stage, sdir, run_dir, {d: run_dir / d for d in needs}, resuming)
    t0 = time.time()
    metrics = stage.fn(cfg, ctx) or {}
    state.update(status="complete", finished=_now(), seconds=round(time.time() - t0, 2), metrics=_jsonable(metrics))
    _write_state(sdir, state)
    return state


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def write_run_report(run_dir: Path, stages: list[Stage], cfg: DictConfig, title: str) -> Path:
    """Gather every finished stage of the run into ``report.md`` + ``metrics.json`` (beside each other)."""
    metrics: dict[str, Any] = {}
    lines = [f"# {title}", "", f"Run folder: `{run_dir}`  ", f"Written: {_now()}", ""]
    for stage in stages:
        sdir = run_dir / stage.name
        state = read_state(sdir)
        if not state or state.get("status") != "complete":
            continue
        metrics[stage.name] = state.get("metrics", {})
        lines += [f"## {stage.name}", "", f"Folder: `{stage.name}/` · {state.get('seconds', 0):.1f} s · "
                  f"finished {state.get('finished')}", ""]
        section = sdir / REPORT_SECTION
        if section.exists():
            text = section.read_text()
            # stage sections refer to their own files; make links relative to the run folder
            text = text.replace("](./", f"]({stage.name}/")
            lines += [text.strip(), ""]
        elif state.get("metrics"):
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in state["metrics"].items() if not isinstance(v, (dict, list))]
            lines.append("")
    lines += ["## Configuration", "", "```yaml", OmegaConf.to_yaml(cfg, resolve=True).strip(), "```", ""]
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def cpu_threads() -> int:
    """Threads to use for torch on this machine (respects OMP_NUM_THREADS)."""
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
