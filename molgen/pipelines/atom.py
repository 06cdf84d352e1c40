"""The ATOM pipeline: forecast P = 8 future frames of molecular dynamics (ATOM, EGNO, static baseline).

    molgen run pipeline=atom                                       # embedded xTB ethanol subset, CPU minutes
    molgen run pipeline=atom data.molecule=aspirin model=egno      # EGNO baseline, same protocol
    molgen run pipeline=atom data=md17_multitask model=atom_multitask data.holdout=[naphthalene]

Stages:
    featurize  trajectories (embedded / shared xTB / MD17 / rMD17 / TG80 npz, or simulated with GFN2-xTB)
               -> EGNO-protocol windows ``windows.pt`` (split sizes and margins in the report)
    train      molgen.training.fit on the S2T loss (the static baseline writes its checkpoint directly)
    sample     forecast the test split (``predictions.pt``) and write predicted trajectories (PDB + DCD)
    validate   S2S / S2T (x1e-2 A^2) per molecule next to the static baseline, per-frame error curves,
               an overlay picture, and ATOM's measured equivariance error
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from molgen.data import md17
from molgen.errors import CheckpointError, ConfigError, DataError
from molgen.formatting import markdown_table
from molgen.runner import Stage, StageContext, say

PIPELINE = "atom"
WINDOWS = "windows.pt"
PREDICTIONS = "predictions.pt"
MAIN = "main"  # the trajectory id of <molecule>.npz; others are <molecule>_<id>.npz (e.g. s101)
SIMULATED = re.compile(r"sim(\d+)")  # sim<seed>: simulated in featurize (see data.simulate_train)


# ---------------------------------------------------------------------------------------------- data
def repo_data_dir() -> Path:
    """The embedded data folder (``data/md17``, installed as ``molgen.embedded``)."""
    from molgen.data.embedded import embedded_dir

    return embedded_dir("md17")


def shared_data_dir(name: str) -> Path | None:
    """``shared/data/<name>`` next to the checkout (``$MOLGEN_SHARED_DATA`` first), or None."""
    roots = [os.environ.get("MOLGEN_SHARED_DATA")]
    roots += [str(p / "shared" / "data") for p in (Path.cwd(), Path.cwd().parent, Path.cwd().parent.parent)]
    for root in roots:
        if root and (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def _molecule_file(folder: Path, molecule: str, source: str, trajectory: str = MAIN) -> Path:
    if trajectory != MAIN:  # an independent trajectory: <molecule>_<id>.npz, also under independent/
        name = f"{molecule}_{trajectory}.npz"
        for f in (folder / name, folder / "independent" / name):
            if f.is_file():
                return f
        raise DataError(f"data.trajectories: no {name} in {folder} or {folder / 'independent'}")
    names = {"md17": [f"md17_{molecule}.npz", f"{molecule}.npz"],
             "rmd17": [f"rmd17_{molecule}_train_01.npz", f"rmd17_{molecule}.npz", f"{molecule}.npz"],
             "tg80": [f"tg80_{molecule}.npz", f"{molecule}.npz"]}.get(source, [f"{molecule}.npz"])
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise DataError(f"data.molecule={molecule}: no {' or '.join(names)} in {folder}")


def simulation_dir(cfg: DictConfig, workdir: Path) -> Path:
    return Path(str(cfg.simulation_dir)).expanduser() if cfg.get("simulation_dir") else workdir / "simulation"


def load_source(cfg: DictConfig, molecule: str, workdir: Path, trajectory: str = MAIN) -> md17.Trajectory:
    """A trajectory of one molecule from ``data.source`` (see configs/data/md17.yaml): ``trajectory`` is ``main``
    (``<molecule>.npz``), the id of an independent one (``<molecule>_<id>.npz``, e.g. ``s101``) or of one
    simulated by :func:`simulate_trajectories` (``sim<seed>``)."""
    source = cfg.source
    if SIMULATED.fullmatch(trajectory):
        path = simulation_dir(cfg, workdir) / f"{molecule}_{trajectory}" / "trajectory.npz"
        if not path.is_file():
            raise DataError(f"{path}: simulation {trajectory} of {molecule} not found (simulate_trajectories first)")
        return md17.load_xtb_npz(path, name=molecule)
    if source == "simulate":
        if trajectory != MAIN:
            raise ConfigError("data.source=simulate makes one trajectory per molecule; use split_by=window")
        from molgen.data.simulate import simulate_from_config

        return simulate_from_config(cfg, molecule, workdir / "simulation")
    if cfg.path:
        folder = Path(str(cfg.path)).expanduser()
        if folder.is_file():
            return md17.load_trajectory(folder, cfg.layout, name=molecule)
        if not folder.is_dir():
            raise DataError(f"data.path={cfg.path}: folder not found")
    elif source == "embedded":
        folder = repo_data_dir()
    else:
        shared = {"xtb": "md17_xtb", "md17": "md17", "rmd17": "md17/rmd17"}.get(source)
        found = shared_data_dir(shared) if shared else None
        if found is None:
            raise DataError(f"data.source={source}: no data.path given and shared/data/{shared or source} not found "
                            "(set data.path=FOLDER or MOLGEN_SHARED_DATA)")
        folder = found
    layout = cfg.layout if cfg.layout != "auto" else {"embedded": "xtb", "npz": "auto"}.get(source, source)
    return md17.load_trajectory(_molecule_file(folder, molecule, source, trajectory), layout, name=molecule)


def protocol_from(cfg: DictConfig) -> md17.Protocol:
    if cfg.get("hydrogen_inputs", False) and not cfg.heavy_only:
        raise ConfigError("data.hydrogen_inputs=true needs data.heavy_only=true (with heavy_only=false every atom is "
                          "already an input and scored)")
    return md17.Protocol(delta_frame=int(cfg.delta_frame), n_targets=int(cfg.n_targets), margin=int(cfg.margin),
                         fractions=tuple(float(f) for f in cfg.fractions),
                         caps=tuple(int(c) if c is not None else 10**9 for c in cfg.caps),
                         seed=int(cfg.seed), heavy_only=bool(cfg.heavy_only),
                         hydrogen_inputs=bool(cfg.get("hydrogen_inputs", False)),
                         history=int(cfg.get("history_frames", 0) or 0))


def _trajectory_plan(data: DictConfig) -> dict[str, tuple[list[str], int, int | None]]:
    """``{split: (trajectory ids, stride, cap per trajectory)}`` of the trajectory-level protocol; each trajectory
    in one split only."""
    plan = {}
    for i, role in enumerate(("train", "val", "test")):
        ids = [str(t) for t in (data.trajectories.get(role) or [])]
        stride = int(data.strides[i]) if data.get("strides") else 1
        cap = int(data.caps[i]) if data.caps[i] is not None else None
        plan[role] = (ids, stride, cap)
    seen: dict[str, str] = {}
    for role, (ids, _, _) in plan.items():
        for tid in ids:
            if tid in seen:
                raise ConfigError(f"data.trajectories: trajectory {tid} is in both {seen[tid]} and {role}; a "
                                  "trajectory-level split gives each trajectory to one split")
            seen[tid] = role
    if not plan["train"][0] or not plan["test"][0]:
        raise ConfigError("data.trajectories needs at least one train and one test trajectory")
    return plan


def _roles(plan: dict | None, data: DictConfig, molecule: str, holdout: list[str]) -> dict | None:
    """The trajectory-level plan of one molecule: a held-out molecule is test only; ``data.simulate_train`` adds
    simulated training trajectories ``sim1001, sim1002, ...``."""
    if plan is None:
        return None
    if molecule in holdout:
        return {"test": plan["test"]}
    extra = int((data.get("simulate_train") or {}).get(molecule, 0))
    if extra:
        ids, stride, cap = plan["train"]
        return {**plan, "train": (ids + [f"sim{1000 + i}" for i in range(1, extra + 1)], stride, cap)}
    return plan


def simulate_trajectories(data: DictConfig, todo: dict[str, list[str]], workdir: Path) -> None:
    """Simulate (or resume, or reuse) the ``sim<seed>`` trajectories ``{molecule: [ids]}`` by the recipe of
    ``shared/data/md17_xtb``: GFN2-xTB, the main trajectory's time step and temperature, 2,000 Langevin steps from
    seed ``<seed>`` starting at the main trajectory's frame 0, rotation removed, Nose-Hoover chain production."""
    from molgen.data.simulate import SimulationSettings, simulate_many

    jobs = []
    for mol, ids in todo.items():
        main = load_source(data, mol, workdir, MAIN)
        temperature = float(main.extra["temperature_K"]) if "temperature_K" in main.extra else 500.0
        for tid in ids:
            seed = int(SIMULATED.fullmatch(tid).group(1))
            settings = SimulationSettings(temperature_K=temperature, time_step_fs=main.time_step_fs,
                                          n_frames=int(data.get("simulated_frames", 12000)), seed=seed)
            jobs.append({"z": main.atomic_numbers, "positions": main.positions[0].astype(np.float64),
                         "settings": settings, "workdir": simulation_dir(data, workdir) / f"{mol}_{tid}", "name": mol})
    todo = [j for j in jobs if not (j["workdir"] / "trajectory.npz").is_file()]
    if todo:
        say(f"  simulating {len(todo)} GFN2-xTB trajector{'y' if len(todo) == 1 else 'ies'} in "
            f"{simulation_dir(data, workdir)} ({int(data.get('simulation_workers', 2))} at a time, one thread each"
            + (f"; {len(jobs) - len(todo)} finished ones reused)" if len(todo) < len(jobs) else ")"))
        simulate_many(todo, workers=int(data.get("simulation_workers", 2)))


def featurize(cfg: DictConfig, ctx: StageContext) -> dict:
    data = cfg.data
    molecules = list(data.molecules) if data.molecules else [str(data.molecule)]
    holdout = [str(m) for m in (data.holdout or [])]
    unknown = [m for m in holdout if m not in molecules]
    if unknown:
        raise ConfigError(f"data.holdout={unknown}: not in data.molecules ({', '.join(molecules)})")
    if len(holdout) == len(molecules):
        raise ConfigError("data.holdout holds every molecule: nothing left to train on")
    protocol = protocol_from(data)
    by_trajectory = str(data.get("split_by", "window")) == "trajectory"
    if str(data.get("split_by", "window")) not in ("window", "trajectory"):
        raise ConfigError(f"data.split_by={data.split_by}: choose window (the paper's) or trajectory")
    plan = _trajectory_plan(data) if by_trajectory else None
    extra = dict(data.get("simulate_train") or {})
    if extra and not by_trajectory:
        raise ConfigError("data.simulate_train adds training trajectories: it needs data.split_by=trajectory")
    if [m for m in extra if m not in molecules]:
        raise ConfigError(f"data.simulate_train: {[m for m in extra if m not in molecules]} not in data.molecules "
                          f"({', '.join(molecules)})")
    roles_of = {mol: _roles(plan, data, mol, holdout) for mol in molecules}
    simulate_trajectories(data, {mol: sorted({t for ids, _, _ in roles.values() for t in ids if SIMULATED.fullmatch(t)})
                                 for mol, roles in roles_of.items() if roles}, ctx.dir)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    info: dict[str, dict] = {}
    reference: dict[str, torch.Tensor] = {}
    time_step = None
    for k, mol in enumerate(molecules):
        roles = roles_of[mol]
        trajectories = {tid for ids, _, _ in roles.values() for tid in ids} if roles else {MAIN}
        trajs = {tid: load_source(data, mol, ctx.dir, tid) for tid in sorted(trajectories)}
        for tid, traj in trajs.items():
            if not traj.time_ordered:
                raise DataError(f"{mol}: {data.source} frames are not time-ordered; use md17/xtb/tg80 trajectories")
            time_step = time_step or traj.time_step_fs
            if abs(traj.time_step_fs - time_step) > 1e-6:
                raise DataError(f"{mol} ({tid}): time step {traj.time_step_fs} fs differs from {time_step} fs of "
                                f"{molecules[0]}")
        if roles:  # trajectory-level: every (strided) window of a trajectory goes to that trajectory's split
            split, cand = {}, 0
            for role, (ids, stride, cap) in roles.items():
                parts = []
                for j, tid in enumerate(ids):
                    starts = md17.strided_starts(trajs[tid], protocol, stride, cap)
                    cand += len(md17.candidate_starts(trajs[tid], protocol))
                    if len(starts):  # each window knows its trajectory: the unit of evidence in model choices
                        parts.append({**md17.make_windows(trajs[tid], starts, protocol),
                                      "trajectory": np.full(len(starts), j, dtype=np.int64)})
                if parts:
                    split[role] = md17.concat_windows(parts)
            n = {role: len(split[role]["start_frames"]) if role in split else 0 for role in ("train", "val", "test")}
            if not any(n.values()):
                raise DataError(f"{mol}: no start frame fits any trajectory (margin {protocol.margin}, dT "
                                f"{protocol.delta_frame})")
            for role, w in split.items():
                splits[role].append((w, k))
        else:
            traj = trajs[MAIN]
            cand = md17.candidate_starts(traj, protocol)
            if len(cand) == 0:
                raise DataError(f"{mol}: no start frame fits (source frames {traj.n_source_frames}, margin "
                                f"{protocol.margin}, dT {protocol.delta_frame})")
            starts = md17.egno_split(cand, protocol)
            if mol in holdout:  # zero-shot: every drawn start of the held-out molecule goes to test
                starts = {"train": starts["train"][:0], "val": starts["val"][:0],
                          "test": np.concatenate([starts["test"], starts["val"]])[:protocol.caps[2]]}
            for name, st in starts.items():
                if len(st):
                    splits[name].append((md17.make_windows(traj, st, protocol), k))
            n = {name: int(len(st)) for name, st in starts.items()}
            cand = len(cand)
        first = next(iter(trajs.values()))
        sub = first.select_atoms(first.heavy_mask) if protocol.heavy_only else first
        inputs = first if protocol.hydrogen_inputs else sub
        reference[mol] = torch.tensor(inputs.positions[0])
        info[mol] = {"source_frames": int(sum(t.n_source_frames for t in trajs.values())),
                     "stored_frames": int(sum(t.n_frames for t in trajs.values())),
                     "atoms": first.n_atoms, "predicted_atoms": sub.n_atoms, "candidate_starts": int(cand),
                     **{f"n_{s}": int(v) for s, v in n.items()}, "holdout": mol in holdout}
        if roles:
            info[mol]["trajectories"] = {role: list(ids) for role, (ids, _, _) in roles.items()}
        say(f"  {mol}: {info[mol]['stored_frames']} frames in {len(trajs)} trajector{'y' if len(trajs) == 1 else 'ies'}, "
            f"{sub.n_atoms} predicted atoms, train/val/test starts {n['train']}/{n['val']}/{n['test']}")
    tensors = {name: md17.pad_windows([w for w, _ in parts], [k for _, k in parts]) if parts else None
               for name, parts in splits.items()}
    if tensors["train"] is None or tensors["test"] is None:
        raise DataError("the protocol left no train or no test windows; lower data.margin or data.delta_frame")
    n_max = max(t["x0"].shape[1] for t in tensors.values() if t is not None)
    for t in tensors.values():  # one common padding width across splits
        if t is not None and t["x0"].shape[1] < n_max:
            pad = n_max - t["x0"].shape[1]
            for key in ("x0", "v0", "z", "mask", "scored", "x_hist"):
                if key in t:
                    t[key] = torch.nn.functional.pad(t[key], (0, 0, 0, pad) if t[key].ndim == 3 else (0, pad))
            t["targets"] = torch.nn.functional.pad(t["targets"], (0, 0, 0, pad))
    meta = {"molecules": molecules, "holdout": holdout, "protocol": protocol.as_dict(), "time_step_fs": time_step,
            "source": str(data.source), "info": info, "split_by": "trajectory" if by_trajectory else "window"}
    if plan:
        meta["trajectories"] = {role: {"ids": ids, "stride": stride, "cap": cap} for role, (ids, stride, cap) in plan.items()}
    torch.save({**{k: v for k, v in tensors.items() if v is not None}, "meta": meta, "reference": reference},
               ctx.dir / WINDOWS)
    (ctx.dir / "protocol.json").write_text(json.dumps(meta, indent=2))
    rows = [[f"{m} (held out)" if i["holdout"] else m, i["source_frames"], i["predicted_atoms"], i["candidate_starts"],
             i["n_train"], i["n_val"], i["n_test"]] for m, i in info.items()]
    if plan:
        how = ("Trajectory-level protocol: "
               + "; ".join(f"{role} on {', '.join(ids)} (every {stride}th start frame"
                           + (f", at most {cap} per trajectory)" if cap else ")") for role, (ids, stride, cap) in plan.items())
               + "; no trajectory is in two splits, so test windows share no frame with training. ")
        if extra:
            how += ("More training trajectories simulated with GFN2-xTB by the recipe of the shared files (from the "
                    "main trajectory's frame 0, new seeds): "
                    + ", ".join(f"{n} of {m}" for m, n in extra.items() if m not in holdout) + ". ")
    else:
        how = "EGNO protocol (train, val and test windows drawn from one trajectory per molecule). "
    (ctx.dir / "report.md").write_text("\n".join([
        how + f"On `{data.source}` trajectories ({'xTB dynamics, not DFT' if data.source in ('embedded', 'xtb') else data.source}): "
        f"dT = {protocol.delta_frame} frames ({protocol.delta_frame * time_step / 1000:g} ps), P = {protocol.n_targets}, "
        f"margin {protocol.margin} frames at both ends, "
        f"{('heavy atoms scored, hydrogens as inputs' if protocol.hydrogen_inputs else 'heavy atoms') if protocol.heavy_only else 'all atoms'}"
        + ("." if plan else f", seed {protocol.seed}, fractions {list(protocol.fractions)}, caps {list(protocol.caps)}."), "",
        markdown_table(["molecule", "source frames", "atoms", "candidate starts", "train", "val", "test"], rows)]))
    return {"molecules": len(molecules), "margin": protocol.margin, "delta_frame": protocol.delta_frame,
            **{f"n_{s}": int(t["x0"].shape[0]) if t is not None else 0 for s, t in tensors.items()}}


# ---------------------------------------------------------------------------------------------- train
def read_windows(folder: Path) -> dict:
    path = folder / WINDOWS
    if not path.is_file():
        raise DataError(f"{path}: not found (run stage=featurize)")
    return torch.load(path, weights_only=True)


def model_args_from(cfg: DictConfig, meta: dict) -> dict:
    m = cfg.model
    net_args = OmegaConf.to_container(m.network_args, resolve=True) or {}
    net_args["n_targets"] = int(meta["protocol"]["n_targets"])
    return {"_target_": str(m.get("_target_", "molgen.models.atom.forecaster.TrajectoryForecaster")),
            "network": str(m.name), "network_args": net_args, "optimizer": str(m.optimizer), "lr": float(m.lr),
            "weight_decay": float(m.weight_decay), "step_lr_every": int(m.step_lr_every),
            "center": bool(m.get("center", False)), "augment_rotations": bool(m.get("augment_rotations", False)),
            **({"reference": reference_args(m, meta)} if m.get("reference", False) else {}),
            "protocol": {"delta_frame": int(meta["protocol"]["delta_frame"]),
                         "n_targets": int(meta["protocol"]["n_targets"]),
                         "heavy_only": bool(meta["protocol"]["heavy_only"]),
                         "hydrogen_inputs": bool(meta["protocol"].get("hydrogen_inputs", False)),
                         **({"history": int(meta["protocol"]["history"])} if m.get("tumbling", False) else {}),
                         "time_step_fs": float(meta["time_step_fs"])}}


def reference_args(m: DictConfig, meta: dict) -> dict:
    """The forecaster's ``reference`` argument: slots for the mean structures (molecules x conformer families),
    the largest molecule, and with ``model.tumbling`` each frame's horizon over the history span."""
    out = {"slots": len(meta["molecules"]) * int(m.get("reference_conformers", 4)),
           "atoms": max(int(i["atoms"] if meta["protocol"].get("hydrogen_inputs") else i["predicted_atoms"])
                        for i in meta["info"].values())}
    if m.get("tumbling", False):  # data.history_frames > 0 checked before any stage (check_prior)
        history = int(meta["protocol"]["history"])
        p = meta["protocol"]
        out["tumbling_scale"] = [p["delta_frame"] * i // p["n_targets"] / history for i in range(1, p["n_targets"] + 1)]
    return out


def check_prior(cfg: DictConfig) -> None:
    """One line before anything runs: tumbling needs the mean-structure prior and an earlier input frame."""
    if cfg.model.get("tumbling", False):
        if not cfg.model.get("reference", False):
            raise ConfigError("model.tumbling=true needs model.reference=true (its rate is fitted per molecule)")
        if not int(cfg.data.get("history_frames", 0) or 0):
            raise ConfigError("model.tumbling=true extrapolates the rotation seen since an earlier frame: it needs "
                              "data.history_frames > 0 (e.g. 375, as in data=md17_trajectories)")


def train(cfg: DictConfig, ctx: StageContext) -> dict:
    from torch.utils.data import DataLoader, default_collate

    from molgen.checkpoint import metadata, save
    from molgen.spec import build
    from molgen.training import fit

    windows = read_windows(ctx.input("featurize"))
    meta = windows["meta"]
    spec = model_args_from(cfg, meta)
    extra = {"molecules": meta["molecules"], "holdout": meta["holdout"], "data": str(cfg.data.name)}
    module = build(spec)                                  # the model group's _target_ with these arguments
    args = {k: v for k, v in spec.items() if k != "_target_"}
    from molgen.models.atom.egno import StaticBaseline

    fixed = isinstance(module.net, StaticBaseline)        # static / mean_structure: nothing to train by SGD
    init = cfg.model.get("init_from")
    if init and not ctx.resuming:  # a fine-tune / longer run that starts from a checkpoint's weights
        from molgen.checkpoint import warm_start

        warm = warm_start(module, str(init), pipeline=PIPELINE)
        say(f"  initialised from {warm['source']} ({warm['loaded']} tensors)")
        extra["initialised_from"] = str(init)
    if module.prior is not None:  # mean structures of training windows (families chosen on validation; test unseen)
        from molgen.models.atom.reference import choose_structures

        entries, used = choose_structures(windows["train"], windows.get("val"), len(meta["molecules"]),
                                          max_conformers=int(cfg.model.get("reference_conformers", 4)))
        module.prior.set_structures([(mu, z, radius) for _, mu, z, radius in entries])
        families = ", ".join(f"{meta['molecules'][k]} {used[k]}" for k in sorted(used))
        if not ctx.resuming:
            calibrate_prior(module, windows, meta, entries, families, network=bool(init) and not fixed)
    if fixed:  # nothing to train: a checkpoint that load() can rebuild
        ckpt = {"state_dict": module.state_dict(), "molgen": metadata(PIPELINE, module, args, **extra)}
        for name in ("last.ckpt", "best.ckpt"):
            save(ckpt, ctx.dir / name)
        return {"parameters": 0, "epochs": 0}
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if args["optimizer"] == "muon":
        tcfg["gradient_clip_val"] = None  # clipped inside the manual optimisation step
    bs = int(tcfg.get("batch_size", 100))
    workers = int(tcfg.get("num_workers", 0))
    collate = lambda items: md17.trim_padding(default_collate(items))  # noqa: E731
    train_set = md17.WindowDataset(windows["train"])
    if len(meta["molecules"]) > 1:  # multitask: one molecule per batch, padding trimmed
        sampler = md17.MoleculeBatchSampler(windows["train"]["molecule"].numpy(), bs, int(tcfg.get("seed", 0)))
        train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    else:
        train_loader = DataLoader(train_set, batch_size=bs, shuffle=True, num_workers=workers)
    val_loader = None
    if "val" in windows:
        val_set = md17.WindowDataset(windows["val"])
        val_loader = DataLoader(val_set, batch_sampler=md17.MoleculeBatchSampler(
            windows["val"]["molecule"].numpy(), max(bs, 256), 0, shuffle=False), collate_fn=collate)
    say(f"  training {args['network']} ({sum(p.numel() for p in module.parameters()):,} parameters) on "
        f"{len(train_loader.dataset)} windows")
    result = fit(module, train_loader, val_loader, tcfg, ctx.dir, pipeline=PIPELINE, model_args=args,
                 extra_metadata=extra, resume=ctx.resuming)
    chosen = next((ctx.dir / n for n in ("best.ckpt", "last.ckpt") if (ctx.dir / n).is_file()), None)
    if module.prior is not None and chosen is not None:  # the prior recalibrated for the trained network
        from molgen.checkpoint import read

        ckpt = read(chosen)
        module.load_state_dict(ckpt["state_dict"])
        say(f"  recalibrating the mean-structure prior for the trained network ({chosen.name})")
        result.update(calibrate_prior(module, windows, meta, entries, families, network=True))
        ckpt["state_dict"] = module.state_dict()
        save(ckpt, chosen)
    return result


def calibrate_prior(module, windows: dict, meta: dict, entries: list, families: str, network: bool) -> dict:
    """Fit the mean-structure prior of ``module`` in closed form: gates on the training windows; per molecule, on the
    validation windows, relaxation alone, network + relaxation or the network alone (a more complex choice only
    when it is better by more than one standard error, over the validation trajectories when there are three or
    more), and the tumbling rate kept only where it helps there.

    ``network``: the module's network forecasts something worth keeping (a warm start or a trained model); else the
    gates are fitted on x_t alone. Returns summary metrics; says what it chose."""
    from molgen.models.atom.reference import trajectory_groups

    prior, names = module.prior, meta["molecules"]
    t, v = windows["train"], windows.get("val")
    prior.gates.zero_()
    prior.use_net.fill_(True)
    if prior.spin is not None:
        prior.spin.zero_()
    alone = prior.fit_gates(t["x0"], t["z"], t["mask"], t["targets"])
    chosen = alone
    how = ["relaxation alone"] * len(entries)
    if network:  # per molecule on the validation windows: network + relaxation, the network alone, relaxation alone
        residual = module.forecast(t["x0"], t["v0"], t["z"], t["mask"]) - t["x0"][:, None]
        on_net = prior.fit_gates(t["x0"], t["z"], t["mask"], t["targets"], residual=residual)
        options = [(alone, False, "relaxation alone"), (on_net, True, "network + relaxation"),
                   (torch.zeros_like(alone), True, "network alone")]           # simplest first (one-SE rule)
        pick = torch.ones(len(alone), dtype=torch.long)                        # no validation: network + relaxation
        if v is not None:
            forecasts = []
            for gates, use, _ in options:
                prior.gates.copy_(gates)
                prior.use_net.fill_(use)
                forecasts.append(module.forecast(v["x0"], v["v0"], v["z"], v["mask"]))
            pick = prior.best_of(forecasts, v["x0"], v["z"], v["mask"], v["targets"], trajectory_groups(v))
        chosen = torch.stack([options[int(i)][0][s] for s, i in enumerate(pick)])
        prior.gates.copy_(chosen)
        prior.use_net.copy_(torch.tensor([options[int(i)][1] for i in pick]))
        how = [options[int(i)][2] for i in pick]
    say(f"  mean-structure prior: conformer families {families}; per molecule (chosen on the validation windows"
        f"{'' if network else ', no network'}): " + "; ".join(
            f"{names[k]} {how[s]} (gates {chosen[s, 0, :len(mu)].mean():.2f} .. {chosen[s, -1, :len(mu)].mean():.2f})"
            for s, (k, mu, _, _) in enumerate(entries)))
    out = {"prior": {names[k]: how[s] for s, (k, _, _, _) in enumerate(entries)}}
    if prior.spin is not None:  # the rotation rate on top of the forecast so far (spin 0 here)
        base = module.forecast(t["x0"], t["v0"], t["z"], t["mask"], x_hist=t["x_hist"], has_hist=t["has_hist"])
        spin = prior.fit_spin(base, t["x0"], t["z"], t["mask"], t["targets"], t["x_hist"], t["has_hist"])
        off = []
        if v is not None:
            vbase = module.forecast(v["x0"], v["v0"], v["z"], v["mask"])          # no rotation without x_hist
            off = prior.keep_spin_that_validates(vbase, v["x0"], v["z"], v["mask"], v["targets"], v["x_hist"],
                                                 v["has_hist"], trajectory_groups(v))
        say(f"  tumbling: the rotation since t - {module.protocol['history']} frames extrapolated at rates (frame "
            "1 .. P, fitted on the training windows) " + "; ".join(
                f"{names[k]} {spin[s, 0]:.2f} .. {spin[s, -1]:.2f}"
                + (" (off: not better on the validation windows)" if s in off else "")
                for s, (k, _, _, _) in enumerate(entries)))
        out["tumbling"] = [names[entries[s][0]] for s in range(len(entries)) if s not in off and float(spin[s].abs().sum()) > 0]
    return out


def _checkpoint_path(cfg: DictConfig, ctx: StageContext) -> Path:
    if cfg.ckpt:
        from molgen.checkpoint import resolve

        return resolve(cfg.ckpt)
    folder = ctx.input("train")
    for name in ("best.ckpt", "last.ckpt"):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no best.ckpt or last.ckpt (run stage=train)")


# ---------------------------------------------------------------------------------------------- sample
def sample(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.checkpoint import load_model

    windows = read_windows(ctx.input("featurize"))
    meta, test = windows["meta"], windows["test"]
    path = _checkpoint_path(cfg, ctx)
    model = load_model(path, pipeline=PIPELINE)
    if int(model.protocol["n_targets"]) != test["targets"].shape[1]:
        raise CheckpointError(f"{path}: model predicts {model.protocol['n_targets']} frames, data has "
                              f"{test['targets'].shape[1]}")
    say(f"  forecasting {len(test['x0'])} test windows with {path}")
    history = {}
    if model.history:
        if int(meta["protocol"].get("history", 0)) != model.history:
            raise CheckpointError(f"{path}: this model extrapolates the rotation seen since frame t - {model.history}; "
                                  f"featurize with data.history_frames={model.history}")
        history = {"x_hist": test["x_hist"], "has_hist": test["has_hist"]}
    pred = model.forecast(test["x0"], test["v0"], test["z"], test["mask"], batch_size=int(cfg.sample.batch_size),
                          **history)
    torch.save({"pred": pred, "checkpoint": str(path), "network": model.hparams.network}, ctx.dir / PREDICTIONS)
    written = write_trajectories(ctx.dir, test, pred, meta, windows["reference"], int(cfg.sample.n_write))
    lines = [f"Forecast {len(pred)} test windows with `{path}` ({model.hparams.network}). Predicted trajectories "
             "(input frame + P predicted frames; `true_*` the reference) open in VMD/PyMOL/nglview "
             "(`mdtraj.load('x.dcd', top='x.pdb')`):", ""]
    lines += [f"- `{p}`" for p in written]
    (ctx.dir / "report.md").write_text("\n".join(lines))
    return {"windows": int(len(pred)), "trajectories_written": len(written) // 3}


def write_trajectories(out: Path, test: dict, pred: torch.Tensor, meta: dict, reference: dict, n_write: int) -> list[str]:
    """Write ``pred_<mol>_<start>.{pdb,dcd}`` and ``true_<mol>_<start>.dcd`` for a few test windows."""
    import mdtraj

    written = []
    dt_ps = float(meta["time_step_fs"]) / 1000.0
    for k, mol in enumerate(meta["molecules"]):
        rows = torch.nonzero(test["molecule"] == k).flatten()[:n_write].tolist()
        ref = reference[mol].numpy()
        top = md17.make_topology(test["z"][rows[0]][test["mask"][rows[0]]].numpy(), ref) if rows else None
        for r in rows:
            n = int(test["mask"][r].sum())
            start = int(test["start_frames"][r])
            times = np.concatenate([[start], test["target_frames"][r].numpy()]) * dt_ps
            for tag, frames in (("pred", pred[r, :, :n]), ("true", test["targets"][r, :, :n])):
                xyz = torch.cat([test["x0"][r, None, :n], frames]).numpy() / 10.0
                traj = mdtraj.Trajectory(xyz, top, time=times)
                stem = f"{tag}_{mol}_{start}"
                traj.save_dcd(str(out / f"{stem}.dcd"))
                written.append(f"{stem}.dcd")
                if tag == "pred":
                    traj[0].save_pdb(str(out / f"{stem}.pdb"))
                    written.append(f"{stem}.pdb")
    return written


# ---------------------------------------------------------------------------------------------- validate
def validate(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.models.atom.forecaster import masked_mse
    from molgen.evaluation.trajectories import equivariance_error, plot_error_curves, plot_overlay

    windows = read_windows(ctx.input("featurize"))
    meta, test = windows["meta"], windows["test"]
    pfile = ctx.input("sample") / PREDICTIONS
    if not pfile.is_file():
        raise DataError(f"{pfile}: not found (run stage=sample)")
    preds = torch.load(pfile, weights_only=True)
    pred = preds["pred"]
    static = test["x0"][:, None].expand_as(test["targets"])
    scored = md17.scored_atoms(test)                                                  # input-only hydrogens excluded
    mse = masked_mse(pred, test["targets"], scored) * 100                             # [S, P], x1e-2 A^2
    mse_static = masked_mse(static, test["targets"], scored) * 100
    offsets_ps = (test["target_frames"][0] - test["start_frames"][0]).numpy() * meta["time_step_fs"] / 1000.0
    metrics: dict = {}
    rows = []
    curves = {}
    for k, mol in enumerate(meta["molecules"]):
        sel = test["molecule"] == k
        if not sel.any():
            continue
        m, s = mse[sel], mse_static[sel]
        r = {"s2s": float(m[:, -1].mean()), "s2t": float(m.mean()), "static_s2s": float(s[:, -1].mean()),
             "static_s2t": float(s.mean()), "n_test": int(sel.sum()),
             "s2s_sem": float(m[:, -1].std() / max(1, int(sel.sum())) ** 0.5)}
        r["s2t_ratio"] = r["s2t"] / max(r["static_s2t"], 1e-12)
        metrics[mol] = r
        curves[mol] = (m.mean(0).numpy(), s.mean(0).numpy())
        tag = " (zero-shot)" if mol in meta["holdout"] else ""
        rows.append([f"{mol}{tag}", r["n_test"], f"{r['s2s']:.2f} ± {r['s2s_sem']:.2f}", f"{r['s2t']:.2f}",
                     f"{r['static_s2s']:.2f}", f"{r['static_s2t']:.2f}", f"{r['s2t_ratio']:.2f}"])
    metrics["s2s"] = float(np.mean([v["s2s"] for v in metrics.values()]))
    metrics["s2t"] = float(np.mean([v["s2t"] for k, v in metrics.items() if isinstance(v, dict)]))
    ratios = [v["s2t_ratio"] for v in metrics.values() if isinstance(v, dict)]
    metrics["s2t_ratio_geomean"] = float(np.exp(np.mean(np.log(np.maximum(ratios, 1e-12)))))
    plot_error_curves(curves, offsets_ps, ctx.dir / "error_curves.png", preds.get("network", "model"))
    first = 0
    plot_overlay(test["x0"][first], test["targets"][first], pred[first], test["mask"][first],
                 ctx.dir / "overlay.png", title=f"{meta['molecules'][int(test['molecule'][first])]} "
                                                 f"start {int(test['start_frames'][first])}")
    protocol = ("the trajectory-level protocol (test trajectories " + ", ".join(meta["trajectories"]["test"]["ids"])
                + ", never seen in training)") if meta.get("split_by") == "trajectory" else "the EGNO protocol"
    lines = [f"Test-set errors of `{preds.get('network')}` under {protocol} on {meta['source']} trajectories "
             f"({'xTB dynamics, not MD17 DFT' if meta['source'] in ('embedded', 'xtb') else meta['source']}); MSE over "
             "heavy atoms and x/y/z in 1e-2 A^2; S2S = last frame, S2T = mean over the P frames; static = predict "
             "x_t; ratio = S2T / static S2T (below 1 beats no motion).", "",
             markdown_table(["molecule", "test windows", "S2S", "S2T", "static S2S", "static S2T", "S2T ratio"], rows),
             "", "![per-frame error](./error_curves.png)", "", "![overlay](./overlay.png)"]
    if preds.get("network") in ("atom", "egno"):
        from molgen.checkpoint import load_model

        model = load_model(preds["checkpoint"], pipeline=PIPELINE)
        n = min(64, len(test["x0"]))
        err = equivariance_error(model, test["x0"][:n], test["v0"][:n], test["z"][:n], test["mask"][:n],
                                 n_rotations=int(cfg.validate.n_rotations), seed=int(cfg.seed))
        metrics["equivariance_error"] = err
        lines += ["", f"Measured rotation equivariance error (relative, {cfg.validate.n_rotations} random "
                      f"rotations about the origin, {n} test inputs): {err:.3g}"
                      + (" (ATOM is only quasi-equivariant)" if preds.get("network") == "atom" else "")]
    (ctx.dir / "report.md").write_text("\n".join(lines))
    (ctx.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


STAGES = [
    Stage("featurize", featurize, groups=("data",), ignore_keys=("data.simulation_dir", "data.simulation_workers"),
          description="trajectories -> EGNO-protocol windows (or simulate them with GFN2-xTB)"),
    Stage("train", train, groups=("model", "trainer"), needs=("featurize",), file_keys=("model.init_from",),
          check=check_prior,
          description="train ATOM / EGNO (static baseline: no training)"),
    Stage("sample", sample, groups=("sample", "ckpt"), needs=("featurize", "train"), file_keys=("ckpt",),
          replaced_by={"train": "ckpt"}, description="predict the P future frames of every test window"),
    Stage("validate", validate, groups=("validate", "seed"), needs=("featurize", "sample"),
          description="S2S / S2T vs the static baseline, error curves, overlay, equivariance"),
]
