"""Simulate molecular-dynamics trajectories of your own molecules with GFN2-xTB (tblite) and ASE.

The recipe of ``shared/data/md17_xtb`` (and of the ATOM pipeline's ``data=md17_simulate`` featurize stage):

1. start geometry: an XYZ/SDF file, or an RDKit ETKDG conformer of a SMILES (explicit hydrogens, MMFF-relaxed);
2. Maxwell-Boltzmann velocities at ``T`` (seeded), ``equilibration_steps`` of Langevin dynamics at ``T``
   (friction 0.01 / fs, seeded);
3. centre-of-mass motion and overall rotation removed: a stochastic thermostat adds rotational diffusion that
   no forecaster can predict, so it is used for equilibration only;
4. deterministic production: Nose-Hoover chain NVT (``tdamp`` 100 fs) or velocity Verlet (NVE), one frame per
   step, written in chunks of ``chunk_frames`` frames. A stopped run resumes from the last finished chunk
   (positions and velocities; for NHC the thermostat variables restart at zero, which is stated in the log).

Output (in ``workdir``): ``trajectory.npz`` in the xTB layout read by :func:`molgen.data.md17.load_xtb_npz`
(``R`` Angstrom, ``z``, ``dt_fs``, ``E`` kcal/mol) and ``trajectory.pdb`` + ``trajectory.dcd`` for VMD/PyMOL/mdtraj.
Needs ``ase`` (``pip install ase``; molgen's ``md`` extra) and ``tblite``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from molgen.data.md17 import Trajectory
from molgen.errors import DataError

EV_TO_KCAL = 23.060548


@dataclass(frozen=True)
class SimulationSettings:
    """Settings of one simulation (see the module docstring)."""

    temperature_K: float = 500.0
    time_step_fs: float = 0.5
    equilibration_steps: int = 2000
    friction_per_fs: float = 0.01
    n_frames: int = 20000
    chunk_frames: int = 2000
    thermostat: str = "nose_hoover"  # nose_hoover | verlet
    tdamp_fs: float = 100.0
    seed: int = 17
    method: str = "GFN2-xTB"


def start_geometry(smiles: str | None = None, xyz: str | Path | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``[N, 3]`` (Angstrom) and atomic numbers ``[N]`` from a SMILES (RDKit ETKDG + MMFF) or a file."""
    if xyz is not None:
        from molgen.data.io import read_molecules

        mols, _ = read_molecules(Path(xyz))
        if not mols:
            raise DataError(f"{xyz}: no readable molecule")
        return np.asarray(mols[0].positions, float), np.asarray(mols[0].atomic_numbers, int)
    if not smiles:
        raise DataError("simulation needs a SMILES or an xyz/sdf start geometry")
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"SMILES '{smiles}': RDKit cannot parse it")
    mol = Chem.AddHs(mol)
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise DataError(f"SMILES '{smiles}': RDKit could not embed a 3D conformer")
    AllChem.MMFFOptimizeMolecule(mol)
    pos = mol.GetConformer().GetPositions()
    return pos, np.array([a.GetAtomicNum() for a in mol.GetAtoms()])


def _atoms(positions: np.ndarray, z: np.ndarray):
    from ase import Atoms
    from tblite.ase import TBLite

    atoms = Atoms(numbers=z, positions=positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return atoms


def _equilibrate(atoms, s: SimulationSettings, progress: bool) -> None:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from tqdm.auto import tqdm

    import warnings

    MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_K, rng=np.random.RandomState(s.seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    with warnings.catch_warnings():  # ASE >= 3.28 deprecates fixcm=True, the recipe of the shared files: keep it
        warnings.filterwarnings("ignore", message=".*fixcm.*", category=FutureWarning)
        dyn = Langevin(atoms, s.time_step_fs * units.fs, temperature_K=s.temperature_K,
                       friction=s.friction_per_fs / units.fs, rng=np.random.RandomState(s.seed + 1))
    bar = tqdm(total=s.equilibration_steps, desc="equilibration (Langevin)", disable=not progress, unit="step")
    dyn.attach(lambda: bar.update(1), interval=1)
    dyn.run(s.equilibration_steps)
    bar.close()
    Stationary(atoms)      # remove centre-of-mass motion
    ZeroRotation(atoms)    # and overall rotation before the deterministic run


def simulate(z: np.ndarray, positions: np.ndarray, settings: SimulationSettings, workdir: str | Path,
             name: str = "molecule", progress: bool = True) -> Trajectory:
    """Run (or resume) a simulation in ``workdir`` and return the production :class:`Trajectory`."""
    from ase import units
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    final = workdir / "trajectory.npz"
    state_file = workdir / "settings.json"
    want = {**asdict(settings), "name": name, "z": [int(a) for a in z]}
    if state_file.exists() and json.loads(state_file.read_text()) != want:
        raise DataError(f"{workdir}: holds a simulation with other settings; use another folder")
    state_file.write_text(json.dumps(want, indent=2))
    if final.exists():
        from molgen.data.md17 import load_xtb_npz

        return load_xtb_npz(final, name=name)
    atoms = _atoms(positions, z)
    chunks = sorted(workdir.glob("chunk_*.npz"))
    if chunks:
        with np.load(chunks[-1]) as last:
            atoms.set_positions(last["R"][-1])
            atoms.set_velocities(last["V_last"])
        print(f"{name}: resuming after {len(chunks)} finished chunk(s)"
              + (" (Nose-Hoover thermostat variables restart at zero)" if settings.thermostat == "nose_hoover" else ""),
              flush=True)
    else:
        eq = workdir / "equilibrated.npz"
        if eq.exists():
            with np.load(eq) as e:
                atoms.set_positions(e["R"])
                atoms.set_velocities(e["V"])
        else:
            _equilibrate(atoms, settings, progress)
            np.savez(eq, R=atoms.get_positions(), V=atoms.get_velocities())
    dt = settings.time_step_fs * units.fs
    if settings.thermostat == "nose_hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=settings.temperature_K, tdamp=settings.tdamp_fs * units.fs)
    elif settings.thermostat == "verlet":
        from ase.md.verlet import VelocityVerlet

        dyn = VelocityVerlet(atoms, dt)
    else:
        raise DataError(f"thermostat={settings.thermostat}: choose nose_hoover or verlet")
    done = len(chunks) * settings.chunk_frames
    bar = tqdm(total=settings.n_frames, initial=min(done, settings.n_frames), desc=f"{name} MD ({settings.method})",
               disable=not progress, unit="frame")
    frames: list[np.ndarray] = []
    energies: list[float] = []

    def record() -> None:
        frames.append(atoms.get_positions().copy())
        energies.append(float(atoms.get_potential_energy()) * EV_TO_KCAL)
        bar.update(1)

    dyn.attach(record, interval=1)
    k = len(chunks)
    while done < settings.n_frames:
        n = min(settings.chunk_frames, settings.n_frames - done)
        frames.clear()
        energies.clear()
        dyn.run(n)  # ASE calls observers after every step (and once at step 0 of each run)
        R, E = np.array(frames[-n:]), np.array(energies[-n:])
        np.savez(workdir / f"chunk_{k:05d}.npz", R=R.astype(np.float32), E=E, V_last=atoms.get_velocities())
        k += 1
        done += n
    bar.close()
    parts = [np.load(p) for p in sorted(workdir.glob("chunk_*.npz"))]
    R = np.concatenate([p["R"] for p in parts])[:settings.n_frames]
    E = np.concatenate([p["E"] for p in parts])[:settings.n_frames]
    traj = Trajectory(R, z, time_step_fs=settings.time_step_fs, name=name, extra={"E": E})
    np.savez_compressed(final, R=traj.positions, z=traj.atomic_numbers, E=E, dt_fs=settings.time_step_fs,
                        temperature_K=settings.temperature_K, seed=settings.seed,
                        equilibration_steps=settings.equilibration_steps, name=name,
                        method=f"{settings.method} (tblite) + ASE; Langevin equilibration, COM/rotation removed, "
                               f"{settings.thermostat}")
    md = traj.to_mdtraj()
    md[0].save_pdb(str(workdir / "trajectory.pdb"))
    md.save_dcd(str(workdir / "trajectory.dcd"))
    return traj


def _simulate_job(job: dict) -> str:
    """One :func:`simulate` call in a worker process (one thread); returns the folder."""
    simulate(job["z"], job["positions"], job["settings"], job["workdir"], name=job["name"], progress=False)
    return str(job["workdir"])


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"   # before tblite (OpenMP) is imported in this process
    os.environ["MKL_NUM_THREADS"] = "1"


def simulate_many(jobs: list[dict], workers: int = 2, desc: str = "simulations") -> list[Trajectory]:
    """Run (or resume) several simulations, ``workers`` at a time with one thread each.

    Each job is a dict with ``z``, ``positions``, ``settings`` (:class:`SimulationSettings`), ``workdir`` and
    ``name``; finished ones are read back, not rerun. Returns the trajectories in the order of ``jobs``."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp

    from tqdm.auto import tqdm

    from molgen.data.md17 import load_xtb_npz

    todo = [j for j in jobs if not (Path(j["workdir"]) / "trajectory.npz").is_file()]
    if todo:
        try:
            import ase  # noqa: F401
        except ImportError:
            raise DataError("simulating trajectories needs ASE: pip install ase (or molgen[md])") from None
        bar = tqdm(total=len(todo), desc=desc, unit="trajectory")
        if workers <= 1:
            for j in todo:
                _simulate_job(j)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                     initializer=_one_thread) as pool:
                for f in as_completed([pool.submit(_simulate_job, j) for j in todo]):
                    f.result()
                    bar.update(1)
        bar.close()
    return [load_xtb_npz(Path(j["workdir"]) / "trajectory.npz", name=j["name"]) for j in jobs]


def simulate_from_config(cfg, molecule: str, workdir: Path) -> Trajectory:
    """The ``data=md17_simulate`` entry: SMILES or XYZ of ``molecule`` from the config, then :func:`simulate`."""
    try:
        import ase  # noqa: F401
    except ImportError:
        raise DataError("data.source=simulate needs ASE: pip install ase (or molgen[md])") from None
    smiles = (cfg.get("smiles") or {}).get(molecule)
    xyz = (cfg.get("xyz") or {}).get(molecule)
    if not smiles and not xyz:
        raise DataError(f"data.molecule={molecule}: give data.smiles.{molecule}=SMILES or data.xyz.{molecule}=FILE")
    pos, z = start_geometry(smiles=smiles, xyz=xyz, seed=int(cfg.get("sim_seed", 17)))
    settings = SimulationSettings(temperature_K=float(cfg.temperature_K), time_step_fs=float(cfg.time_step_fs),
                                  equilibration_steps=int(cfg.equilibration_steps), n_frames=int(cfg.n_frames),
                                  chunk_frames=int(cfg.chunk_frames), thermostat=str(cfg.thermostat),
                                  seed=int(cfg.get("sim_seed", 17)))
    return simulate(z, pos, settings, Path(workdir) / molecule, name=molecule)
