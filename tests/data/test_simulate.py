"""GFN2-xTB simulation (tblite + ASE): chunked, resumable, mdtraj-readable, usable by the ATOM featurize stage."""
from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest

pytest.importorskip("ase")
pytest.importorskip("tblite")

from molgen.cli import main  # noqa: E402
from molgen.data.md17 import load_xtb_npz  # noqa: E402
from molgen.data.simulate import SimulationSettings, simulate, start_geometry  # noqa: E402


def test_verlet_run_resumes_exactly_from_chunks(tmp_path):
    pos, z = start_geometry(smiles="CCO", seed=0)
    assert z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    s = SimulationSettings(equilibration_steps=10, n_frames=30, chunk_frames=10, thermostat="verlet")
    full = simulate(z, pos, s, tmp_path / "a", name="ethanol", progress=False)
    assert full.positions.shape == (30, 9, 3) and full.time_step_fs == 0.5
    steps = np.linalg.norm(np.diff(full.positions, axis=0), axis=-1)
    assert 0 < steps.max() < 0.1                                   # consecutive 0.5 fs frames
    # interrupt after two chunks: remove the last chunk and the final file, run again
    (tmp_path / "a" / "chunk_00002.npz").unlink()
    (tmp_path / "a" / "trajectory.npz").unlink()
    again = simulate(z, pos, s, tmp_path / "a", name="ethanol", progress=False)
    np.testing.assert_allclose(again.positions, full.positions, atol=1e-5)
    t = mdtraj.load(str(tmp_path / "a" / "trajectory.dcd"), top=str(tmp_path / "a" / "trajectory.pdb"))
    assert (t.n_frames, t.n_atoms) == (30, 9)
    assert load_xtb_npz(tmp_path / "a" / "trajectory.npz").extra["E"].shape == (30,)


def test_featurize_stage_simulates_and_applies_the_protocol(tmp_path, capsys):
    rc = main(["run", "pipeline=atom", "data=md17_simulate", "stage=featurize", f"out={tmp_path}",
               "data.n_frames=60", "data.chunk_frames=30", "data.equilibration_steps=10", "data.delta_frame=16",
               "data.margin=0", "data.fractions=[0.4,0.2,0.2]"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("report: ")).parent   # the run names itself
    meta = json.loads((run_dir / "featurize" / "protocol.json").read_text())
    # 60 frames: starts t = 0..43 (t + 16 <= 59) -> 44 candidates; 40% / 20% / 20%
    assert meta["info"]["ethanol"]["candidate_starts"] == 44
    assert [meta["info"]["ethanol"][f"n_{s}"] for s in ("train", "val", "test")] == [17, 8, 8]
    assert (run_dir / "featurize" / "simulation" / "ethanol" / "trajectory.dcd").exists()
