"""The stage runner: run folders, caching by content hash, resume, and the run report.

A pipeline is a list of :class:`Stage` objects (``pipelines/<name>.py`` exports ``STAGES``). Each stage is a
pure function ``fn(cfg, ctx) -> metrics`` of its slice of the configuration and its upstream artifacts; it
writes files into ``ctx.dir`` and returns a flat dict of metrics. The runner owns everything else:

* **Run folder** ``<out>/<run>/<stage>/`` (``run`` defaults to ``<pipeline>-<data>``).
* **Caching.** A stage's key hashes the config groups it reads (``Stage.groups``), the keys of the stages it
  reads and the content of files (and folders) named in its configuration (``Stage.file_keys``). A finished
  stage with the same key is reused and the runner says so. Options added to the schema after a stage was made
  (:data:`molgen.config_schema.ADDED`) are hashed only when they differ from the value that reproduces the
  earlier behaviour, so finished stages stay valid when molgen grows.
* **Nothing finished is destroyed.** When the key changed, the previous artifact is moved aside to
  ``<stage>@<key8>`` and restored, instead of recomputed, if that key comes back (an interrupted one then
  resumes where it stopped).
* **Resume.** A stage that started with the same key but did not finish is called again with
  ``ctx.resuming = True`` (training picks up ``last.ckpt``).
* **One writer.** A stage folder is locked (:class:`filelock.FileLock`) while a process runs it.
* **Distributed training.** Under DDP (Lightning's launcher, ``torchrun`` or SLURM) the processes of global
  rank > 0 re-run the same command; :func:`run_stages` makes them *followers*: they write nothing, wait for
  rank 0 to reach a stage that trains with several processes (a ``_ddp.json`` marker left by
  :func:`molgen.training.fit`) and join that training; rank 0 alone writes state, artifacts and the report.
* **Library warnings** (Python warnings, RDKit and Lightning log lines) raised while a stage runs are counted in
  the stage's state and report section instead of being printed (``MOLGEN_DEBUG=1`` prints them).
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

from molgen.config_schema import ADDED, canonical, neutral_keys
from molgen.console import capture_library_output
from molgen.errors import ConfigError, MolgenError
from molgen.formatting import fmt, jsonable
from molgen.settings import torch_threads

STATE_FILE = "_stage.json"
REPORT_SECTION = "report.md"  # a stage's own Markdown section, inlined in the run report


def launch_rank() -> int:
    """This process's global rank in a distributed launch (0 when not distributed), from the variables that
    Lightning's launcher (``NODE_RANK``, ``LOCAL_RANK``), ``torchrun`` (``RANK``) and SLURM (``SLURM_PROCID``)
    set. Any non-zero one makes the process a follower."""
    for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        value = os.environ.get(key, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def say(msg: str) -> None:
    """Print a progress line for the user (stdout, flushed); silent on distributed followers."""
    if launch_rank() == 0:
        print(msg, flush=True)


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    Args:
        name: stage name used on the command line (``stage=<name>``) and as the folder name.
        fn: ``fn(cfg, ctx) -> dict`` doing the work; returns metrics (JSON-serialisable scalars or dicts).
        groups: the config groups the stage reads (``model``, ``trainer``, ``seed``...); all of it is hashed into
            its cache key. Name a sub-node (``condition.property``) only where the rest of a group cannot change
            the stage's output (the sampling target does not change a training).
        needs: upstream stages whose artifacts the stage reads (``ctx.input(name)``).
        file_keys: dotted config keys holding file paths whose content is part of the key (e.g. ``ckpt``).
        replaced_by: ``{upstream: config_key}``: when ``config_key`` is set, ``upstream`` is not needed
            (``ckpt=...`` replaces training).
        description: one line for ``molgen run --help``.
        ignore_keys: dotted keys inside ``groups`` that do not change the output (worker counts, ...)
            and so stay out of the cache key.
        check: ``check(cfg)`` raising a MolgenError when the stage cannot run here (a missing optional
            package or weights, a bad option); called for every planned stage before the first one starts, so
            a user learns it before an upstream training runs.
        needs_when: ``{upstream: predicate(cfg)}``: upstream stages of ``needs`` read only when the predicate
            holds (PropMolFlow's sample stage reads the predictor only for ``sample.rerank > 1``); otherwise they
            are neither run for this stage nor part of its key.
    """

    name: str
    fn: Callable[[DictConfig, "StageContext"], dict]
    groups: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    file_keys: tuple[str, ...] = ()
    replaced_by: dict[str, str] = field(default_factory=dict)
    description: str = ""
    ignore_keys: tuple[str, ...] = ()
    check: Callable[[DictConfig], None] | None = None
    needs_when: dict[str, Callable[[DictConfig], bool]] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage function gets besides the config."""

    stage: Stage
    dir: Path
    run_dir: Path
    inputs: dict[str, Path]
    resuming: bool = False
    follower: bool = False

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
    """sha256 of a file's content (streamed); for a folder, of every file's relative path and content."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path).as_posix()}\0{file_digest(p)}\0".encode())
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


def stage_key(stage: Stage, cfg: DictConfig, upstream: dict[str, str],
              added: dict[str, tuple[int, Any]] | None = None) -> tuple[str, dict]:
    """The cache key of ``stage`` under ``cfg`` given its upstream keys; returns (hex digest, what was hashed).

    ``added`` (default :data:`molgen.config_schema.ADDED`): options added after schema version 1, left out while
    they hold the value that reproduces the earlier behaviour."""
    pipeline = str(_select(cfg, "pipeline.name") or "")
    config = canonical({k: _select(cfg, k) for k in stage.groups}, pipeline)
    neutral = neutral_keys(config, pipeline, ADDED if added is None else added)
    for dotted in (*stage.ignore_keys, *neutral):  # e.g. data.perception_processes: how, not what
        _drop(config, dotted)
    material: dict[str, Any] = {"stage": stage.name, "config": config, "upstream": upstream, "files": {}}
    for key in stage.file_keys:
        value = _select(cfg, key)
        if value:
            p = Path(str(value)).expanduser()
            if not p.exists():
                from molgen.checkpoint import checkpoints_dir
                shipped = checkpoints_dir() / f"{value}.ckpt"   # a shipped checkpoint by name
                if not shipped.is_file():
                    raise ConfigError(f"{key}={value}: file not found")
                p = shipped
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


def _claim(run_dir: Path, stage: str):
    """Lock ``<run>/.<stage>.lock`` for this process (a real file lock, released by the OS if the process dies);
    refuse with one line when another process holds it."""
    from molgen.files import claim

    return claim(run_dir, stage, str(run_dir / stage))


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
    return tuple(d for d in stage.needs if not (d in stage.replaced_by and _select(cfg, stage.replaced_by[d]))
                 and (d not in stage.needs_when or stage.needs_when[d](cfg)))


def run_stages(stages: list[Stage], cfg: DictConfig, run_dir: Path, target: str = "all",
               added: dict[str, tuple[int, Any]] | None = None) -> dict[str, dict]:
    """Execute the plan for ``target`` in ``run_dir``; returns ``{stage: state}`` for the stages executed.

    On a distributed follower (:func:`launch_rank` > 0) this joins rank 0's trainings instead
    (:func:`follow_stages`) and returns ``{}``."""
    todo = plan(stages, target, cfg)
    for stage in todo:
        if stage.check is not None:
            stage.check(cfg)
    keys: dict[str, str] = {}
    planned = []
    for stage in todo:
        needs = active_needs(stage, cfg)
        key, material = stage_key(stage, cfg, {d: keys[d] for d in needs}, added)
        keys[stage.name] = key
        planned.append((stage, needs, key, material))
    if launch_rank() != 0:
        follow_stages(planned, cfg, run_dir)
        return {}
    run_dir.mkdir(parents=True, exist_ok=True)
    states: dict[str, dict] = {}
    for i, (stage, needs, key, material) in enumerate(planned, 1):
        sdir = run_dir / stage.name
        lock = _claim(run_dir, stage.name)
        try:
            states[stage.name] = _run_one(stage, cfg, run_dir, sdir, key, material, needs,
                                          f"[{i}/{len(planned)}] {stage.name}")
        finally:
            lock.release()
    return states


#: how long a follower waits for rank 0 to reach the stage it trains (seconds; MOLGEN_FOLLOW_TIMEOUT)
FOLLOW_TIMEOUT = 24 * 3600.0
DDP_MARKER = "_ddp.json"


def follow_stages(planned: list[tuple[Stage, tuple[str, ...], str, dict]], cfg: DictConfig, run_dir: Path) -> None:
    """A distributed follower: wait for rank 0 to finish each stage, and join every stage training with several
    processes (a :data:`DDP_MARKER` in its folder) by running it with ``ctx.follower = True``; the trainings raise
    :class:`molgen.training.FollowerFinished` on this rank when done, so nothing is written here.

    A process spawned by Lightning's launcher for one training (``MOLGEN_DDP_FIT`` set by rank 0) joins that one
    training and returns; a process started by the user's launcher (``torchrun``, ``srun``) follows the whole
    plan."""
    from molgen.training import FollowerFinished

    spawned_for = os.environ.get("MOLGEN_DDP_FIT")
    timeout = float(os.environ.get("MOLGEN_FOLLOW_TIMEOUT", FOLLOW_TIMEOUT))
    for stage, needs, key, _ in planned:
        sdir = run_dir / stage.name
        deadline = time.time() + timeout
        joined: set[str] = set()
        while True:
            state = read_state(sdir) if sdir.exists() else None
            if state and state.get("key") == key and state.get("status") == "complete":
                break
            markers = [m for m in sdir.rglob(DDP_MARKER) if str(m.parent) not in joined] if sdir.exists() else []
            if spawned_for and not markers and Path(spawned_for).is_relative_to(sdir):
                markers = [Path(spawned_for) / DDP_MARKER]
            if state and state.get("key") == key and state.get("status") == "running" and markers:
                ctx = StageContext(stage, sdir, run_dir, {d: run_dir / d for d in needs}, resuming=True,
                                   follower=True)
                try:
                    with capture_library_output(), torch_threads(cpu_threads()):
                        stage.fn(cfg, ctx)
                except FollowerFinished:
                    pass
                if spawned_for:
                    return
                joined.update(str(m.parent) for m in markers)
                continue
            if time.time() > deadline:
                raise MolgenError(f"distributed follower (rank {launch_rank()}): rank 0 did not reach {sdir} "
                                  f"within {timeout:.0f} s")
            time.sleep(1.0)


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
    if archived_state and archived_state.get("key") == key:
        archived.rename(sdir)
        if archived_state.get("status") == "complete":
            say(f"{prefix}: restored the finished artifact for this config from {archived}")
            return archived_state
        # an interrupted stage set aside when the config changed: it resumes where it stopped
        say(f"{prefix}: restored the interrupted artifact for this config from {archived}")
        state, resuming = archived_state, True
    sdir.mkdir(parents=True, exist_ok=True)
    state = {"stage": stage.name, "key": key, "status": "running", "started": _now(),
             "hashed": material, "attempts": (state or {}).get("attempts", 0) + 1}
    _write_state(sdir, state)
    say(f"{prefix}: {'resuming' if resuming else 'running'} -> {sdir}")
    ctx = StageContext(stage, sdir, run_dir, {d: run_dir / d for d in needs}, resuming)
    t0 = time.time()
    with capture_library_output() as captured, torch_threads(cpu_threads()):
        metrics = stage.fn(cfg, ctx) or {}
    state.update(status="complete", finished=_now(), seconds=round(time.time() - t0, 2), metrics=jsonable(metrics))
    if captured.total:
        state["library_messages"] = captured.summary()
    _write_state(sdir, state)
    return state


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
        messages = state.get("library_messages")
        if messages:
            lines += [_messages_line(messages), ""]
        section = sdir / REPORT_SECTION
        if section.exists():
            text = section.read_text()
            # stage sections refer to their own files; make links relative to the run folder
            text = text.replace("](./", f"]({stage.name}/")
            lines += [text.strip(), ""]
        elif state.get("metrics"):
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in state["metrics"].items() if not isinstance(v, (dict, list))]
            lines.append("")
    lines += ["## Configuration", "", "```yaml", OmegaConf.to_yaml(cfg, resolve=True).strip(), "```", ""]
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _messages_line(messages: dict) -> str:
    """One line on the library warnings a stage raised (counted, not printed)."""
    parts = ", ".join(f"{n} from {src}" for src, n in sorted(messages.get("by_source", {}).items()))
    examples = "; ".join(f"`{e}`" for e in messages.get("examples", [])[:3])
    return (f"Library messages while this stage ran: {messages.get('total', 0)} ({parts}; shown with "
            f"`MOLGEN_DEBUG=1`). Examples: {examples}")


def cpu_threads() -> int:
    """Threads a stage runs torch with (the runner sets them around each stage and restores the caller's count
    after): ``OMP_NUM_THREADS`` when set to a positive integer, else every core (an empty or malformed value, which
    OpenMP itself ignores, is treated as unset)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)
