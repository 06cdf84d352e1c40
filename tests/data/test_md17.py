"""MD17 trajectories, loaders and the EGNO protocol, on real files (shared/data/md17*, embedded data/md17)."""
from __future__ import annotations

import numpy as np
import pytest

from molgen.data import md17
from molgen.errors import DataError
from molgen.pipelines.atom import repo_data_dir, shared_data_dir

MD17 = shared_data_dir("md17")
XTB = shared_data_dir("md17_xtb")
needs_md17 = pytest.mark.skipif(MD17 is None, reason="shared/data/md17 not available")
needs_xtb = pytest.mark.skipif(XTB is None, reason="shared/data/md17_xtb not available")


def full_trajectory_stub(n_frames: int) -> md17.Trajectory:
    """A trajectory header claiming every source frame is stored (only indices matter for the split)."""
    return md17.Trajectory(np.zeros((1, 1, 3)), [6], frame_index=np.arange(n_frames), n_source_frames=n_frames)


@needs_md17
@pytest.mark.parametrize("molecule,n_frames", [("aspirin", 211_762), ("uracil", 133_770)])
def test_egno_split_reproduces_published_indices(molecule, n_frames):
    """With EGNO's margin (10,000) on the full MD17 length, our draw equals GMN/EGNO's shipped split files."""
    protocol = md17.Protocol(margin=10_000, caps=(10**9,) * 3)
    split = md17.egno_split(md17.candidate_starts(full_trajectory_stub(n_frames), protocol), protocol)
    ref = np.load(MD17 / "egno_splits" / f"{molecule}_split.npz")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(split[name], ref[name])


def test_protocol_sizes_no_leakage_and_targets_on_60k_frames():
    protocol = md17.Protocol()  # margin 3000, caps 500/2000/2000
    cand = md17.candidate_starts(full_trajectory_stub(60_000), protocol)
    assert cand.min() == 3000 and cand.max() == 60_000 - 1 - 3000 - 1
    split = md17.egno_split(cand, protocol)
    assert [len(split[s]) for s in ("train", "val", "test")] == [500, 2000, 2000]
    assert not set(split["train"]) & set(split["val"]) and not set(split["train"]) & set(split["test"])
    assert not set(split["val"]) & set(split["test"])
    np.testing.assert_array_equal(protocol.target_offsets(), [375, 750, 1125, 1500, 1875, 2250, 2625, 3000])
    # a different seed gives a different draw; the same seed the same
    assert not np.array_equal(md17.egno_split(cand, md17.Protocol(seed=1))["train"], split["train"])
    np.testing.assert_array_equal(md17.egno_split(cand, protocol)["train"], split["train"])


def test_embedded_subset_windows_are_exact_source_frames():
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    assert traj.n_source_frames == 60_000 and traj.time_step_fs == 0.5 and traj.n_atoms == 9
    protocol = md17.Protocol()
    split = md17.egno_split(md17.candidate_starts(traj, protocol), protocol)
    assert [len(split[s]) for s in ("train", "val", "test")] == [216, 108, 108]
    w = md17.make_windows(traj, split["test"], protocol)
    assert w["x0"].shape == (108, 3, 3) and w["targets"].shape == (108, 8, 3, 3)   # heavy atoms C C O
    np.testing.assert_array_equal(w["target_frames"], split["test"][:, None] + protocol.target_offsets())
    # velocity is the forward frame difference, targets are the stored frames at those indices
    k = 5
    np.testing.assert_allclose(w["v0"][k], traj.frames_at([split["test"][k] + 1])[0][:3] - w["x0"][k], atol=1e-6)
    np.testing.assert_allclose(w["targets"][k, -1], traj.frames_at([split["test"][k] + 3000])[0][:3])
    with pytest.raises(DataError, match="not stored"):
        traj.frames_at([1000 * 25 + 2])
    with pytest.raises(DataError, match="not stored"):
        traj.frames_at([60_000])


@needs_xtb
def test_embedded_subset_matches_its_source():
    sub = md17.load_xtb_npz(repo_data_dir() / "aspirin.npz")
    full = md17.load_xtb_npz(XTB / "aspirin.npz")
    np.testing.assert_array_equal(sub.positions, full.positions[sub.frame_index])
    np.testing.assert_array_equal(sub.atomic_numbers, full.atomic_numbers)


@needs_md17
def test_md17_and_rmd17_loaders_agree_on_shared_frames():
    traj = md17.load_trajectory(MD17 / "md17_aspirin.npz")
    assert traj.name == "aspirin" and traj.positions.shape == (1000, 21, 3) and traj.time_ordered
    assert (traj.heavy_mask.sum(), traj.extra["F"].shape) == (13, (1000, 21, 3))
    r = md17.load_trajectory(MD17 / "rmd17" / "rmd17_aspirin_train_01.npz")
    assert r.name == "aspirin" and not r.time_ordered and np.all(np.diff(r.frame_index) > 0)
    shared = r.frame_index < 1000
    assert shared.sum() > 0
    np.testing.assert_allclose(r.positions[shared], traj.positions[r.frame_index[shared]], atol=1e-5)
    with pytest.raises(DataError, match="not time-ordered"):
        md17.make_windows(r, r.frame_index[:2], md17.Protocol(delta_frame=8, margin=0))


@needs_md17
def test_tg80_layout_reads_rmd17_keys_as_consecutive(tmp_path):
    src = np.load(MD17 / "rmd17" / "rmd17_ethanol_test_01.npz")
    np.savez(tmp_path / "tg80_ethanol.npz", coords=src["coords"][:50], nuclear_charges=src["nuclear_charges"])
    t = md17.load_trajectory(tmp_path / "tg80_ethanol.npz")
    assert t.name == "ethanol" and t.time_ordered and t.n_frames == 50


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        md17.load_md17_npz(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", Q=np.zeros(3))
    with pytest.raises(DataError, match="bad.npz: unknown trajectory layout"):
        md17.load_trajectory(tmp_path / "bad.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.npz: not a readable npz"):
        md17.load_trajectory(tmp_path / "broken.npz")


def test_mdtraj_round_trip_keeps_angstrom_and_time_step(tmp_path):
    traj = md17.load_xtb_npz(repo_data_dir() / "malonaldehyde.npz")
    first = md17.Trajectory(traj.positions[:2], traj.atomic_numbers, time_step_fs=0.5, name="mal")
    m = first.to_mdtraj()
    assert m.n_atoms == 9 and m.topology.n_bonds == 8 and abs(m.timestep - 0.0005) < 1e-9
    back = md17.Trajectory.from_mdtraj(m)
    np.testing.assert_allclose(back.positions, first.positions, atol=1e-5)
    np.testing.assert_array_equal(back.atomic_numbers, first.atomic_numbers)
    assert abs(back.time_step_fs - 0.5) < 1e-6
    m.save_dcd(str(tmp_path / "t.dcd"))
    m[0].save_pdb(str(tmp_path / "t.pdb"))
    import mdtraj

    again = mdtraj.load(str(tmp_path / "t.dcd"), top=str(tmp_path / "t.pdb"))
    np.testing.assert_allclose(again.xyz * 10, first.positions, atol=1e-3)


def test_pad_windows_masks_padding():
    a = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    b = md17.load_xtb_npz(repo_data_dir() / "aspirin.npz")
    p = md17.Protocol()
    wa = md17.make_windows(a, md17.candidate_starts(a, p)[:4], p)
    wb = md17.make_windows(b, md17.candidate_starts(b, p)[:3], p)
    t = md17.pad_windows([wa, wb], [0, 1])
    assert t["x0"].shape == (7, 13, 3) and t["targets"].shape == (7, 8, 13, 3)
    assert t["mask"].sum(1).tolist() == [3] * 4 + [13] * 3
    assert (t["x0"][:4, 3:] == 0).all() and (t["z"][:4, 3:] == 0).all()
    assert t["molecule"].tolist() == [0] * 4 + [1] * 3


def test_molecule_batches_are_pure_and_trimmed():
    mol = np.repeat([0, 1, 2], [250, 100, 50])
    train = md17.MoleculeBatchSampler(mol, 100, seed=0)
    batches = list(train)
    assert len(batches) == len(train) == 5
    assert sorted(sum(batches, [])) == list(range(400))
    assert all(len(set(mol[b])) == 1 for b in batches)
    assert list(train) != batches                                     # reshuffled next epoch
    val = md17.MoleculeBatchSampler(mol, 100, shuffle=False)
    assert [mol[b[0]] for b in val] == [0, 1, 2, 0, 0] and list(val) == list(val)
    a = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    b = md17.load_xtb_npz(repo_data_dir() / "aspirin.npz")
    p = md17.Protocol()
    t = md17.pad_windows([md17.make_windows(a, md17.candidate_starts(a, p)[:2], p),
                          md17.make_windows(b, md17.candidate_starts(b, p)[:2], p)], [0, 1])
    trimmed = md17.trim_padding({k: v[:2] for k, v in t.items()})   # the two ethanol windows
    assert trimmed["x0"].shape == (2, 3, 3) and trimmed["targets"].shape == (2, 8, 3, 3)


def test_trajectory_level_starts_are_strided_capped_and_exact():
    """The trajectory-level protocol: all (strided) windows of a whole independent trajectory, thinned evenly."""
    traj = md17.load_xtb_npz(repo_data_dir() / "independent" / "ethanol_s101.npz")
    assert traj.n_source_frames == 12_000 and traj.n_frames == 960
    protocol = md17.Protocol(margin=0)
    cand = md17.candidate_starts(traj, protocol)
    assert cand.min() == 0 and cand.max() + 3000 < 12_000 and (cand % 25 == 0).all()
    every = md17.strided_starts(traj, protocol, stride=4)
    np.testing.assert_array_equal(every, cand[::4])
    capped = md17.strided_starts(traj, protocol, stride=1, cap=10)
    assert len(capped) == 10 and capped[0] == cand[0] and capped[-1] == cand[-1]     # spread over the trajectory
    assert set(capped) <= set(cand)
    with pytest.raises(DataError, match="stride"):
        md17.strided_starts(traj, protocol, stride=0)
    w = md17.make_windows(traj, capped, protocol)
    np.testing.assert_allclose(w["targets"][3, 2], traj.frames_at([capped[3] + 1125])[0][:3])


@needs_xtb
def test_embedded_independent_trajectories_match_their_source_and_differ_from_main():
    for seed in ("s101", "s102"):
        sub = md17.load_xtb_npz(repo_data_dir() / "independent" / f"ethanol_{seed}.npz")
        full = md17.load_xtb_npz(XTB / "independent" / f"ethanol_{seed}.npz")
        np.testing.assert_array_equal(sub.positions, full.positions[sub.frame_index])
    main = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    other = md17.load_xtb_npz(repo_data_dir() / "independent" / "ethanol_s101.npz")
    # no frame of the independent trajectory occurs in the main one (a trajectory-level split cannot leak)
    d = np.abs(other.positions[:, None, :3] - main.positions[None, :, :3]).max(axis=(2, 3))
    assert d.min() > 1e-3


def test_concat_windows_refuses_different_atoms():
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    protocol = md17.Protocol()
    starts = md17.candidate_starts(traj, protocol)[:3]
    a = md17.make_windows(traj, starts, protocol)
    both = md17.concat_windows([a, a])
    assert both["x0"].shape == (6, 3, 3) and both["z"].shape == (3,)
    b = dict(a, z=a["z"][::-1].copy())
    b["z"][0] = 7
    with pytest.raises(DataError, match="different atoms"):
        md17.concat_windows([a, b])
