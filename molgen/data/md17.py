"""Molecular-dynamics trajectories of small molecules (MD17 family) and the EGNO forecasting protocol.

One representation, :class:`Trajectory`: positions ``[T, N, 3]`` in Angstrom, atomic numbers ``[N]``, the
time step between stored frames in fs and, for strided or scattered subsets, the original frame index of
every stored frame. It converts to and from :class:`mdtraj.Trajectory` (nanometres, ps) at the edges.

Loaders (all return a :class:`Trajectory`; :func:`load_trajectory` picks one from the npz keys):

* :func:`load_md17_npz`  the public MD17 layout (sgdml.org / EGNO): ``R`` [T, N, 3] Angstrom, ``z`` [N];
* :func:`load_rmd17_npz` revised MD17 (Christensen & von Lilienfeld 2020): ``coords``, ``nuclear_charges``,
  ``old_indices``; its frames are random draws, **not** time-ordered (``time_ordered=False``). TG80 (ATOM's
  multitask set) mirrors this layout, so :func:`load_tg80_npz` reads it but keeps frames as consecutive;
* :func:`load_xtb_npz`   the GFN2-xTB trajectories of ``shared/data/md17_xtb`` and of
  :mod:`molgen.data.simulate`: ``R``, ``z``, ``dt_fs`` and optionally ``frame_index``.

Two protocols. The trajectory-level one (:func:`strided_starts`) gives each split whole trajectories (train on
some, test on others that share no frame): what a user running the model on their own simulation meets. The
paper's (:func:`egno_split`, :func:`make_windows`) follows EGNO (Xu et al., ICML 2024,
``MinkaiXu/EGNO:md17/dataset.py``) as ATOM (Thompson et al. 2025) reuses it: heavy atoms only; velocity
``v_t = x_{t+1} - x_t`` (Angstrom per frame); start frames drawn from ``[margin, T - margin)`` with
``numpy.random.seed(100)``: 10% train, then 5% val and 5% test from the rest, capped to 500/2000/2000;
``P = 8`` targets at ``t + dT * i // P`` for ``i = 1..P`` with ``dT = 3000`` frames. It draws train, val and
test windows from one trajectory, so a model can learn that trajectory's path rather than the dynamics.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from molgen.data.molecule import ELEMENTS
from molgen.errors import DataError

#: Atomic masses (u) for the elements of the MD17/TG80 molecules; others fall back to 2 * Z.
MASSES = {1: 1.008, 6: 12.011, 7: 14.007, 8: 15.999, 9: 18.998, 15: 30.974, 16: 32.06, 17: 35.45}

#: The eight MD17 molecules (EGNO's names).
MD17_MOLECULES = ("aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic", "toluene", "uracil")
#: composition {atomic number: count} of each MD17 molecule
MD17_FORMULAS = {"aspirin": {6: 9, 1: 8, 8: 4}, "benzene": {6: 6, 1: 6}, "ethanol": {6: 2, 1: 6, 8: 1},
                 "malonaldehyde": {6: 3, 1: 4, 8: 2}, "naphthalene": {6: 10, 1: 8}, "salicylic": {6: 7, 1: 6, 8: 3},
                 "toluene": {6: 7, 1: 8}, "uracil": {6: 4, 1: 4, 7: 2, 8: 2}}


@dataclass
class Trajectory:
    """A molecular-dynamics trajectory of one molecule.

    Attributes:
        positions: ``[T, N, 3]`` float32, Angstrom.
        atomic_numbers: ``[N]`` int64.
        time_step_fs: time between consecutive trajectory frames of the source (fs), e.g. 0.5 for MD17.
        frame_index: ``[T]`` int64, index of each stored frame in the source trajectory (``arange(T)`` for a
            complete trajectory; strided subsets keep their original indices so the protocol stays exact).
        n_source_frames: length of the source trajectory (the protocol's margins refer to it).
        name: molecule name.
        time_ordered: False for randomly drawn frames (rMD17), which must not be used for dynamics.
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    time_step_fs: float = 0.5
    frame_index: np.ndarray | None = None
    n_source_frames: int | None = None
    name: str = ""
    time_ordered: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float32)
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise DataError(f"{self.name or 'trajectory'}: positions must be [T, N, 3], got {self.positions.shape}")
        if self.positions.shape[1] != len(self.atomic_numbers):
            raise DataError(f"{self.name or 'trajectory'}: {self.positions.shape[1]} atoms in positions but "
                            f"{len(self.atomic_numbers)} atomic numbers")
        if self.frame_index is None:
            self.frame_index = np.arange(len(self.positions), dtype=np.int64)
        self.frame_index = np.asarray(self.frame_index, dtype=np.int64)
        if self.n_source_frames is None:
            self.n_source_frames = int(self.frame_index.max()) + 1 if len(self.frame_index) else 0

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def heavy_mask(self) -> np.ndarray:
        return self.atomic_numbers > 1

    def select_atoms(self, mask: np.ndarray) -> "Trajectory":
        """The trajectory restricted to the atoms where ``mask`` is True (e.g. :attr:`heavy_mask`)."""
        return replace(self, positions=self.positions[:, mask], atomic_numbers=self.atomic_numbers[mask])

    def frames_at(self, source_frames: np.ndarray) -> np.ndarray:
        """Positions ``[..., N, 3]`` at source frame indices (raises if a frame is not stored)."""
        lookup = np.full(int(self.n_source_frames) + 1, -1, dtype=np.int64)  # last slot: out of range
        lookup[self.frame_index] = np.arange(self.n_frames)
        src = np.asarray(source_frames)
        rows = lookup[np.where((src >= 0) & (src < self.n_source_frames), src, -1)]
        if (rows < 0).any():
            raise DataError(f"{self.name}: source frame {int(src[rows < 0].flat[0])} is not stored")
        return self.positions[rows]

    # ------------------------------------------------------------------------------------ mdtraj edges
    def topology(self):
        """An :class:`mdtraj.Topology` (one residue ``MOL``) with bonds guessed from frame 0 distances."""
        return make_topology(self.atomic_numbers, self.positions[0] if self.n_frames else None)

    def to_mdtraj(self):
        """The trajectory as :class:`mdtraj.Trajectory` (nm, time in ps from the source frame indices)."""
        import mdtraj

        return mdtraj.Trajectory(self.positions / 10.0, self.topology(),
                                 time=self.frame_index * self.time_step_fs / 1000.0)

    @classmethod
    def from_mdtraj(cls, traj, time_step_fs: float | None = None, name: str = "") -> "Trajectory":
        """Read positions (nm -> Angstrom), elements and the time step from an :class:`mdtraj.Trajectory`."""
        z = np.array([a.element.atomic_number if a.element is not None else 0 for a in traj.topology.atoms])
        if (z <= 0).any():
            raise DataError(f"{name or 'trajectory'}: atom {int(np.argmax(z <= 0))} has no element")
        if time_step_fs is None:
            time_step_fs = float(traj.timestep) * 1000.0 if traj.n_frames > 1 else 0.5
        return cls(np.asarray(traj.xyz) * 10.0, z, time_step_fs=time_step_fs, name=name)

    def save_npz(self, path: str | Path) -> Path:
        """Write the xTB layout (``R``, ``z``, ``dt_fs``, ``frame_index``, ``n_source_frames``)."""
        path = Path(path)
        np.savez_compressed(path, R=self.positions, z=self.atomic_numbers, dt_fs=self.time_step_fs,
                            frame_index=self.frame_index, n_source_frames=self.n_source_frames, name=self.name)
        return path


def make_topology(atomic_numbers: np.ndarray, positions: np.ndarray | None = None):
    """One-residue mdtraj topology; bonds between atoms closer than 1.15 x the sum of covalent radii."""
    import mdtraj
    from rdkit import Chem

    top = mdtraj.Topology()
    res = top.add_residue("MOL", top.add_chain())
    counts: dict[str, int] = {}
    atoms = []
    for z in atomic_numbers:
        sym = ELEMENTS[int(z)]
        counts[sym] = counts.get(sym, 0) + 1
        atoms.append(top.add_atom(f"{sym}{counts[sym]}", mdtraj.element.Element.getByAtomicNumber(int(z)), res))
    if positions is not None:
        pt = Chem.GetPeriodicTable()
        radii = np.array([pt.GetRcovalent(int(z)) for z in atomic_numbers])
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        for i, j in zip(*np.nonzero(np.triu(d < 1.15 * (radii[:, None] + radii[None]), k=1))):
            top.add_bond(atoms[i], atoms[j])
    return top


# ------------------------------------------------------------------------------------------------ loaders
def _open_npz(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 -- zip/format errors differ by numpy version
        raise DataError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from None


def _need(data: dict, keys: tuple[str, ...], path: Path, layout: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{path}: not the {layout} layout (missing key {', '.join(missing)}; has {', '.join(data)})")


def load_md17_npz(path: str | Path, name: str | None = None, time_step_fs: float = 0.5) -> Trajectory:
    """Original MD17 (``R`` [T, N, 3] Angstrom, ``z`` [N]; ``E``/``F`` kept in ``extra``), 0.5 fs per frame."""
    path = Path(path)
    data = _open_npz(path)
    _need(data, ("R", "z"), path, "MD17")
    name = name or path.stem.removeprefix("md17_")
    extra = {k: data[k] for k in ("E", "F") if k in data}
    return Trajectory(data["R"], data["z"], time_step_fs=time_step_fs, name=name, extra=extra)


def load_rmd17_npz(path: str | Path, name: str | None = None) -> Trajectory:
    """Revised MD17 (``coords``, ``nuclear_charges``, ``old_indices``): random frames, ``time_ordered=False``.

    Frames are sorted by their original MD17 index (``frame_index = old_indices``), so a consecutive pair is
    recognisable, but the set is sparse: use it for structures, energies and forces, not for dynamics.
    """
    path = Path(path)
    data = _open_npz(path)
    _need(data, ("coords", "nuclear_charges"), path, "rMD17")
    name = name or path.stem.removeprefix("rmd17_").split("_")[0]
    extra = {k: data[k] for k in ("energies", "forces") if k in data}
    if "old_indices" in data:
        order = np.argsort(data["old_indices"], kind="stable")
        idx = data["old_indices"][order]
        return Trajectory(data["coords"][order], data["nuclear_charges"], time_step_fs=0.5, frame_index=idx,
                          name=name, time_ordered=False, extra={k: v[order] for k, v in extra.items()})
    return Trajectory(data["coords"], data["nuclear_charges"], name=name, time_ordered=False, extra=extra)


def load_tg80_npz(path: str | Path, name: str | None = None, time_step_fs: float = 1.0) -> Trajectory:
    """ATOM's TG80 files (rMD17's keys ``coords``/``nuclear_charges``, but consecutive MD frames)."""
    path = Path(path)
    data = _open_npz(path)
    _need(data, ("coords", "nuclear_charges"), path, "TG80")
    name = name or path.stem.removeprefix("tg80_")
    return Trajectory(data["coords"], data["nuclear_charges"], time_step_fs=time_step_fs, name=name)


def load_xtb_npz(path: str | Path, name: str | None = None) -> Trajectory:
    """The xTB trajectories (``R``, ``z``, ``dt_fs``; strided subsets also ``frame_index``, ``n_source_frames``)."""
    path = Path(path)
    data = _open_npz(path)
    _need(data, ("R", "z"), path, "xTB trajectory")
    name = name or (str(data["name"]) if "name" in data and str(data["name"]) else path.stem)
    dt = float(data["dt_fs"]) if "dt_fs" in data else 0.5
    n_src = int(data["n_source_frames"]) if "n_source_frames" in data else None
    extra = {k: data[k] for k in ("E", "temperature_K") if k in data}
    return Trajectory(data["R"], data["z"], time_step_fs=dt, frame_index=data.get("frame_index"),
                      n_source_frames=n_src, name=name, extra=extra)


def load_trajectory(path: str | Path, layout: str = "auto", name: str | None = None) -> Trajectory:
    """Load any supported npz; ``layout`` is ``auto`` | ``md17`` | ``rmd17`` | ``tg80`` | ``xtb``."""
    path = Path(path)
    if layout == "auto":
        data = _open_npz(path)
        if "coords" in data:
            layout = "rmd17" if "old_indices" in data else "tg80"
        elif "dt_fs" in data or "frame_index" in data:
            layout = "xtb"
        elif "R" in data:
            layout = "md17"
        else:
            raise DataError(f"{path}: unknown trajectory layout (keys: {', '.join(data)}); expected MD17 (R, z), "
                            "rMD17/TG80 (coords, nuclear_charges) or xTB (R, z, dt_fs)")
    loaders = {"md17": load_md17_npz, "rmd17": load_rmd17_npz, "tg80": load_tg80_npz, "xtb": load_xtb_npz}
    if layout not in loaders:
        raise DataError(f"{path}: unknown layout '{layout}' (choose from auto, {', '.join(loaders)})")
    return loaders[layout](path, name=name)


# ------------------------------------------------------------------------------------------------ protocol
@dataclass(frozen=True)
class Protocol:
    """The EGNO/ATOM forecasting protocol (defaults: EGNO's MD17 setting, margin scaled for 60k frames).

    Attributes:
        delta_frame: horizon dT in source frames (3000 = 1.5 ps at 0.5 fs).
        n_targets: P, the number of future frames decoded (``t + dT * i // P``, ``i = 1..P``).
        margin: source frames excluded at both ends before drawing start frames. EGNO uses 10,000 on the
            211k-993k-frame MD17 files; 3000 on a 60k-frame file keeps the same ~5% share and equals dT.
        fractions: train/val/test shares of the candidate start frames (10% / 5% / 5%).
        caps: maximum train/val/test samples (500 / 2000 / 2000).
        seed: NumPy seed of the draw (100).
        heavy_only: forecast and score heavy atoms only.
        hydrogen_inputs: with ``heavy_only``, keep the hydrogens as *inputs* (their positions and velocities show
            the O-H / CH3 rotors that drive a small molecule's reorientation) while predictions are still scored
            on heavy atoms only (the windows' ``scored`` mask).
        history: frames back for a second, earlier input frame ``x_{t-history}`` (0 = none, EGNO's state). Over
            ATOM's 187-fs frame spacing a molecule's overall rotation persists (toluene: successive 187-fs rotations
            correlate 0.82) but one 0.5-fs velocity cannot show it under the vibrations; an earlier frame can.
    """

    delta_frame: int = 3000
    n_targets: int = 8
    margin: int = 3000
    fractions: tuple[float, float, float] = (0.1, 0.05, 0.05)
    caps: tuple[int, int, int] = (500, 2000, 2000)
    seed: int = 100
    heavy_only: bool = True
    hydrogen_inputs: bool = False
    history: int = 0

    def target_offsets(self) -> np.ndarray:
        """Frame offsets ``dT * i // P`` of the P targets, ``[P]``."""
        return np.array([self.delta_frame * i // self.n_targets for i in range(1, self.n_targets + 1)])

    def as_dict(self) -> dict:
        return {"delta_frame": self.delta_frame, "n_targets": self.n_targets, "margin": self.margin,
                "fractions": list(self.fractions), "caps": list(self.caps), "seed": self.seed,
                "heavy_only": self.heavy_only, "hydrogen_inputs": self.hydrogen_inputs,
                **({"history": self.history} if self.history else {})}


def candidate_starts(traj: Trajectory, protocol: Protocol) -> np.ndarray:
    """Source frames ``t`` in ``[margin, T - 1 - margin)`` whose ``t + 1`` and all P targets are stored.

    ``T - 1`` because EGNO drops the last frame (it has no forward-difference velocity) before cutting margins.
    """
    stored = np.zeros(int(traj.n_source_frames), dtype=bool)
    stored[traj.frame_index] = True
    lo, hi = protocol.margin, int(traj.n_source_frames) - 1 - protocol.margin
    t = np.arange(lo, max(lo, hi))
    needed = np.concatenate([[1], protocol.target_offsets()])
    ok = stored[t]
    for off in needed:
        inside = t + off < len(stored)
        ok &= inside & stored[np.minimum(t + off, len(stored) - 1)]
    return t[ok]


def strided_starts(traj: Trajectory, protocol: Protocol, stride: int = 1, cap: int | None = None) -> np.ndarray:
    """Every ``stride``-th candidate start frame of a whole trajectory, thinned evenly to at most ``cap``.

    The trajectory-level protocol takes all windows of a trajectory for one split (train, val or test), so
    train and test share no frame and no trajectory; the stride only drops near-duplicate windows (consecutive
    0.5 fs frames are almost identical).
    """
    if stride < 1:
        raise DataError(f"{traj.name}: stride {stride} must be >= 1")
    starts = candidate_starts(traj, protocol)[::stride]
    if cap is not None and 0 < cap < len(starts):
        starts = starts[np.unique(np.linspace(0, len(starts) - 1, cap).round().astype(np.int64))]
    return starts


def concat_windows(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Windows of one molecule from several trajectories as one set (``z`` must agree)."""
    for w in parts[1:]:
        if not np.array_equal(w["z"], parts[0]["z"]):
            raise DataError("trajectories of one molecule have different atoms (atomic numbers or order differ)")
    return {k: (parts[0][k] if k in ("z", "scored") else np.concatenate([w[k] for w in parts])) for k in parts[0]}


def egno_split(candidates: np.ndarray, protocol: Protocol) -> dict[str, np.ndarray]:
    """Draw train/val/test start frames the way EGNO does, then apply the caps.

    ``np.random.seed(seed)``; train = ``choice(n, int(0.1 n), replace=False)``; val and test drawn likewise
    from the frames not yet taken. The result indexes source frames. The three sets are disjoint.
    """
    n = len(candidates)
    rng = np.random.RandomState(protocol.seed)
    sizes = [int(f * n) for f in protocol.fractions]
    taken = np.zeros(n, dtype=bool)
    out = {}
    for split, size, cap in zip(("train", "val", "test"), sizes, protocol.caps):
        rest = np.flatnonzero(~taken)
        pick = rng.choice(rest, size=min(size, len(rest)), replace=False)
        taken[pick] = True
        out[split] = candidates[pick[:cap]]
    return out


def make_windows(traj: Trajectory, starts: np.ndarray, protocol: Protocol) -> dict[str, np.ndarray]:
    """Inputs and targets for start frames ``starts``.

    Returns:
        ``x0`` [S, N, 3] positions at t, ``v0`` [S, N, 3] = x_{t+1} - x_t (Angstrom per source frame),
        ``targets`` [S, P, N, 3] at ``t + dT*i//P``, ``target_frames`` [S, P] source indices, ``z`` [N],
        ``scored`` [N] bool, the atoms predictions are scored on (all but input-only hydrogens); with
        ``protocol.history``: ``x_hist`` [S, N, 3] at ``t - history`` and ``has_hist`` [S] (False, ``x_hist = x0``,
        where that frame is not stored: the trajectory's first frames, strided files).
    """
    if not traj.time_ordered:
        raise DataError(f"{traj.name}: frames are not time-ordered (rMD17-style); cannot build dynamics windows")
    keep_h = protocol.heavy_only and protocol.hydrogen_inputs
    sub = traj.select_atoms(traj.heavy_mask) if protocol.heavy_only and not keep_h else traj
    scored = sub.heavy_mask if keep_h else np.ones(sub.n_atoms, dtype=bool)
    starts = np.asarray(starts, dtype=np.int64)
    target_frames = starts[:, None] + protocol.target_offsets()[None]
    x0 = sub.frames_at(starts)
    out = {"x0": x0, "v0": sub.frames_at(starts + 1) - x0, "targets": sub.frames_at(target_frames),
           "target_frames": target_frames, "start_frames": starts, "z": sub.atomic_numbers, "scored": scored}
    if protocol.history:
        stored = np.zeros(int(sub.n_source_frames), dtype=bool)
        stored[sub.frame_index] = True
        back = starts - protocol.history
        ok = (back >= 0) & stored[np.maximum(back, 0)]
        out["x_hist"] = np.where(ok[:, None, None], sub.frames_at(np.where(ok, back, starts)), x0)
        out["has_hist"] = ok
    return out


# ------------------------------------------------------------------------------------------------ tensors
def pad_windows(windows: list[dict[str, np.ndarray]], molecule_ids: list[int]) -> dict:
    """Stack windows of one or several molecules into padded tensors (multitask batches).

    Returns (torch tensors): ``x0``/``v0`` [S, N_max, 3], ``targets`` [S, P, N_max, 3], ``z`` [S, N_max] (0 =
    padding), ``mask`` [S, N_max] bool, ``scored`` [S, N_max] bool (atoms the loss and metrics count),
    ``molecule`` [S] (index into the molecule list), ``start_frames`` [S], ``target_frames`` [S, P]; ``x_hist``
    [S, N_max, 3] and ``has_hist`` [S] when the windows have them (all or none); ``trajectory`` [S], the window's
    trajectory within its molecule and split, when the windows have it (all or none: trajectory-level splits).
    """
    import torch

    n_max = max(w["x0"].shape[1] for w in windows)
    parts: dict[str, list] = {k: [] for k in ("x0", "v0", "targets", "z", "mask", "scored", "molecule",
                                              "start_frames", "target_frames")}
    history = all("x_hist" in w for w in windows)
    if history:
        parts.update(x_hist=[], has_hist=[])
    tagged = all("trajectory" in w for w in windows)
    if tagged:
        parts["trajectory"] = []
    for w, mol in zip(windows, molecule_ids):
        S, N = w["x0"].shape[:2]
        pad = n_max - N
        parts["x0"].append(np.pad(w["x0"], ((0, 0), (0, pad), (0, 0))))
        parts["v0"].append(np.pad(w["v0"], ((0, 0), (0, pad), (0, 0))))
        parts["targets"].append(np.pad(w["targets"], ((0, 0), (0, 0), (0, pad), (0, 0))))
        parts["z"].append(np.broadcast_to(np.pad(w["z"], (0, pad)), (S, n_max)))
        parts["mask"].append(np.broadcast_to(np.arange(n_max) < N, (S, n_max)))
        scored = w.get("scored", np.ones(N, dtype=bool))
        parts["scored"].append(np.broadcast_to(np.pad(scored, (0, pad)), (S, n_max)))
        parts["molecule"].append(np.full(S, mol))
        parts["start_frames"].append(w["start_frames"])
        parts["target_frames"].append(w["target_frames"])
        if history:
            parts["x_hist"].append(np.pad(w["x_hist"], ((0, 0), (0, pad), (0, 0))))
            parts["has_hist"].append(w["has_hist"])
        if tagged:
            parts["trajectory"].append(w["trajectory"])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    dtypes = {"x0": torch.float32, "v0": torch.float32, "targets": torch.float32, "z": torch.long,
              "mask": torch.bool, "scored": torch.bool, "molecule": torch.long, "start_frames": torch.long,
              "target_frames": torch.long, "x_hist": torch.float32, "has_hist": torch.bool,
              "trajectory": torch.long}
    return {k: torch.as_tensor(np.ascontiguousarray(v), dtype=dtypes[k]) for k, v in out.items()}


class WindowDataset:
    """A map-style data set over padded window tensors (``pad_windows``); items are dicts of tensors."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors["x0"].shape[0])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}


def scored_atoms(windows: dict):
    """``[S, N]`` bool: the real atoms predictions are scored on (not padding, not input-only hydrogens); windows
    written before the ``scored`` mask existed score every real atom."""
    return windows["mask"] & windows["scored"] if "scored" in windows else windows["mask"]


def trim_padding(batch: dict) -> dict:
    """Collate helper: drop padding columns beyond the largest molecule of a batch (``[B, N_max] -> [B, n]``)."""
    n = int(batch["mask"].sum(1).max())
    out = dict(batch)
    for key in ("x0", "v0", "z", "mask", "scored", "x_hist"):
        if key in batch:
            out[key] = batch[key][:, :n]
    out["targets"] = batch["targets"][:, :, :n]
    return out


class MoleculeBatchSampler:
    """Batches that each hold windows of one molecule (shuffled within and across molecules every epoch).

    With :func:`trim_padding` a multitask batch then costs what its own molecule costs instead of the
    largest molecule's size (attention is quadratic in atoms x slots).
    """

    def __init__(self, molecule: "np.ndarray", batch_size: int, seed: int = 0, shuffle: bool = True):
        self.molecule, self.batch_size, self.seed, self.epoch = np.asarray(molecule), batch_size, seed, 0
        self.shuffle = shuffle

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.RandomState(self.seed + self.epoch)
        per_molecule = []
        for m in np.unique(self.molecule):
            idx = np.flatnonzero(self.molecule == m)
            idx = rng.permutation(idx) if self.shuffle else idx
            per_molecule.append([idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)])
        if not self.shuffle:  # fixed round-robin over molecules: a limited validation still sees several
            longest = max(len(b) for b in per_molecule)
            return [b[i] for i in range(longest) for b in per_molecule if i < len(b)]
        batches = [b for bs in per_molecule for b in bs]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        batches = self._batches()
        self.epoch += 1
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        return sum(-(-int((self.molecule == m).sum()) // self.batch_size) for m in np.unique(self.molecule))
