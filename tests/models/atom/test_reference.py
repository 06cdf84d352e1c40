"""The mean-structure prior: rigid alignment, symmetry, molecule matching, least-squares gates, fine-tune start."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from molgen.data import md17
from molgen.models.atom.forecaster import TrajectoryForecaster
from molgen.models.atom.reference import MeanStructurePrior, conformer_means, mean_structure, structures_from_windows
from molgen.nn.geometry import kabsch_align, skew
from molgen.pipelines.atom import repo_data_dir


@pytest.fixture(scope="module")
def windows():
    """Real ethanol and aspirin windows (embedded xTB subset), padded together as the multitask featurizer does."""
    p = md17.Protocol()
    parts = []
    for k, name in enumerate(("ethanol", "aspirin")):
        traj = md17.load_xtb_npz(repo_data_dir() / f"{name}.npz")
        parts.append((md17.make_windows(traj, md17.candidate_starts(traj, p)[:40:4], p), k))
    return md17.pad_windows([w for w, _ in parts], [k for _, k in parts])


def prior_for(windows, gates=None) -> MeanStructurePrior:
    """One mean structure per molecule (slot 0 ethanol, 1 aspirin), trusted at any distance."""
    prior = MeanStructurePrior(2, windows["x0"].shape[1], windows["targets"].shape[1]).double()
    entries = structures_from_windows(windows, 2, max_conformers=1)
    prior.set_structures([(mu.double(), z, 100.0) for _, mu, z, _ in entries])
    if gates is not None:
        prior.gates.data.copy_(gates)
    return prior


def test_kabsch_recovers_a_rigid_motion(windows):
    x = windows["x0"][:3].double()
    mask = windows["mask"][:3]
    R = o3.rand_matrix(3, dtype=torch.float64)
    moved = (x @ R.transpose(1, 2) + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) * mask[..., None]
    torch.testing.assert_close(kabsch_align(x, moved, mask), moved, atol=1e-9, rtol=0)


def test_mean_structure_of_rotated_copies_is_the_structure(windows):
    n = int(windows["mask"][0].sum())
    x = windows["x0"][0, :n].double()
    copies = x @ o3.rand_matrix(6, dtype=torch.float64).transpose(1, 2) + torch.randn(6, 1, 3, dtype=torch.float64)
    ref = mean_structure(copies)
    assert abs(float(ref.mean(0).abs().max())) < 1e-9                       # centred
    aligned = kabsch_align(ref[None], (x - x.mean(0))[None])[0]
    torch.testing.assert_close(aligned, x - x.mean(0), atol=1e-8, rtol=0)


def test_prior_is_rotation_and_translation_equivariant(windows):
    A = windows["x0"].shape[1]
    prior = prior_for(windows, torch.linspace(0.1, 0.9, 16 * A, dtype=torch.float64).reshape(2, 8, A))
    x0, z, mask = windows["x0"].double(), windows["z"], windows["mask"]
    R = o3.rand_matrix(dtype=torch.float64)
    shift = torch.tensor([3.0, 0.0, -1.0], dtype=torch.float64)
    out = prior.relaxation(x0, z, mask)
    moved = prior.relaxation((x0 @ R.T + shift) * mask[..., None], z, mask)
    torch.testing.assert_close(moved, out @ R.T * mask[:, None, :, None], atol=1e-8, rtol=0)
    assert out.abs().sum() > 0 and (out * ~mask[:, None, :, None]).abs().sum() == 0


def test_prior_matches_molecules_by_atomic_numbers_and_skips_unknown_ones(windows):
    prior = prior_for(windows, torch.ones(2, 8, windows["x0"].shape[1], dtype=torch.float64))
    x0, z, mask = windows["x0"].double(), windows["z"], windows["mask"]
    slot = prior.match(z)
    torch.testing.assert_close(slot, windows["molecule"].long())
    n = int(mask[0].sum())                                                     # ethanol: trimmed padding still matches
    assert prior.match(z[:1, :n]).item() == 0
    other = z.clone()
    other[:, 0] = 7                                                            # a composition it has no structure for
    assert (prior.match(other) == -1).all()
    assert prior.relaxation(x0, other, mask).abs().sum() == 0                             # zero-shot: no prior term


def test_fitted_gates_recover_a_known_relaxation(windows):
    prior = prior_for(windows)
    x0, z, mask = windows["x0"].double(), windows["z"], windows["mask"]
    A = x0.shape[1]
    truth = torch.rand(2, 8, A, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    truth[0, :, int(mask[0].sum()):] = 0                                       # ethanol's padding slots
    ref, slot = prior.aligned(x0, z, mask)
    targets = x0[:, None] + truth[slot][..., None] * (ref - x0)[:, None]
    fitted = prior.fit_gates(x0, z, mask, targets)
    torch.testing.assert_close(fitted, truth, atol=1e-8, rtol=0)


def test_a_forecaster_with_zero_gates_is_the_forecaster_without(windows):
    """A fine-tune (model.reference=true with model.init_from) starts exactly at the checkpoint's forecast."""
    args = dict(network="atom", network_args={"_target_": "molgen.models.atom.network.ATOM", "dim": 16, "n_blocks": 1,
                                               "n_heads": 2, "displacement": True}, center=True)
    torch.manual_seed(0)
    plain = TrajectoryForecaster(**args).eval()
    withp = TrajectoryForecaster(**args, reference={"slots": 8, "atoms": windows["x0"].shape[1]}).eval()
    state = plain.state_dict()
    missing = withp.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["prior.atomic_numbers", "prior.gates", "prior.radius", "prior.structures", "prior.use_net"]
    withp.prior.set_structures([(mu, z, r) for _, mu, z, r in structures_from_windows(windows, 2)])
    x0, v0, z, mask = windows["x0"], windows["v0"], windows["z"], windows["mask"]
    torch.testing.assert_close(withp.forecast(x0, v0, z, mask), plain.forecast(x0, v0, z, mask))
    withp.prior.gates.data.fill_(0.5)
    assert not torch.allclose(withp.forecast(x0, v0, z, mask), plain.forecast(x0, v0, z, mask))


def test_conformers_get_their_own_mean_and_an_unseen_conformer_none(windows):
    """Frames of two conformers (aspirin with two atoms displaced by 1 A in the second family): two families whose
    means are the conformers; a window of a third conformer lies outside both trust radii and gets no prior."""
    n = int(windows["mask"][-1].sum())
    x = windows["x0"][-1, :n].double()
    x = x - x.mean(0)
    other = x.clone()
    other[-2:] += torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    jitter = lambda base, k: (base + 0.03 * torch.randn(k, n, 3, generator=g, dtype=torch.float64)) @ o3.rand_matrix(k, dtype=torch.float64).transpose(1, 2)  # noqa: E731
    frames = torch.cat([jitter(x, 30), jitter(other, 20)])
    families = conformer_means(frames, max_conformers=4)
    assert len(families) == 2
    means = [mu for mu, _ in families]
    for truth in (x, other):
        err = min(float((kabsch_align(mu[None], truth[None])[0] - truth).norm(dim=-1).max()) for mu in means)
        assert err < 0.05
    assert all(0 < r < 0.3 for _, r in families)
    prior = MeanStructurePrior(4, n, 8).double()
    z = windows["z"][-1, :n]
    prior.set_structures([(mu, z, r) for mu, r in families])
    third = x.clone()
    third[:2] -= torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    _, slot = prior.aligned(torch.stack([x, other, third]), z[None].expand(3, -1))
    assert slot[0] >= 0 and slot[1] >= 0 and slot[0] != slot[1] and slot[2] == -1


def test_windows_keep_the_earlier_frame_where_it_exists():
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    full = md17.Trajectory(np.asarray(traj.positions[:500]), traj.atomic_numbers, traj.time_step_fs)
    w = md17.make_windows(full, np.array([2, 400]), md17.Protocol(margin=0, delta_frame=8, n_targets=2, history=5))
    assert w["has_hist"].tolist() == [False, True]                               # frame -3 does not exist
    np.testing.assert_array_equal(w["x_hist"][0], w["x0"][0])
    np.testing.assert_array_equal(w["x_hist"][1], full.positions[395][full.heavy_mask])
    assert "x_hist" not in md17.make_windows(full, np.array([400]), md17.Protocol(margin=0, delta_frame=8, n_targets=2))


def test_tumbling_continues_a_steady_rotation_and_needs_the_history_frames():
    """A rigid molecule turning at a constant rate: with spin 1 the forecast keeps turning at the rate seen over
    the last 375 frames (exact), from an mdtraj trajectory through predict; given 2 frames it warns and does not."""
    x = torch.tensor([[0.0, 0.0, 0.0], [1.52, 0.0, 0.0], [2.1, 1.3, 0.2]], dtype=torch.float64)
    x = x - x.mean(0)
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    axis = axis / axis.norm()
    omega = 2e-4                                                                  # rad per 0.5 fs frame
    turn = lambda k: x @ torch.linalg.matrix_exp(skew(axis * omega * k)).T + torch.tensor([5.0, 1.0, -2.0])  # noqa: E731
    frames = torch.stack([turn(k) for k in range(400)]).numpy()
    z = np.array([6, 6, 8])
    model = TrajectoryForecaster(network="static", network_args={"_target_": "molgen.models.atom.egno.StaticBaseline"},
                                 protocol={"delta_frame": 3000, "n_targets": 8, "heavy_only": True, "time_step_fs": 0.5,
                                           "history": 375},
                                 reference={"slots": 1, "atoms": 3, "tumbling_scale": [float(i) for i in range(1, 9)]})
    model.prior.set_structures([(x.float(), torch.tensor(z), 10.0)])
    model.prior.spin.fill_(1.0)
    future = model.predict(md17.Trajectory(frames, z, 0.5).to_mdtraj())
    truth = np.stack([turn(398 + 375 * i).numpy() for i in range(1, 9)])        # x_t = second-to-last frame
    np.testing.assert_allclose(future.xyz * 10, truth, atol=2e-3)
    assert np.abs(truth - frames[398]).max() > 0.3                              # it really turned
    with pytest.warns(UserWarning, match="give >= 377"):
        still = model.predict(md17.Trajectory(frames[-2:], z, 0.5).to_mdtraj())
    np.testing.assert_allclose(still.xyz * 10, np.broadcast_to(frames[-2], (8, 3, 3)), atol=1e-4)


def test_a_tie_keeps_the_simpler_choice():
    from molgen.models.atom.reference import better_beyond_noise

    g = torch.Generator().manual_seed(0)
    base = torch.rand(200, generator=g, dtype=torch.float64)
    noise = 0.5 * torch.randn(200, generator=g, dtype=torch.float64)
    assert not better_beyond_noise(base, base + noise - noise.mean())          # equal on average: keep current
    assert better_beyond_noise(base + 1.0, base + noise * 0.1)                 # clearly lower errors: switch
    assert not better_beyond_noise(base, base + 0.5)


def test_the_evidence_for_a_choice_is_counted_in_trajectories_not_windows():
    """A candidate far better on one validation trajectory (a molecule that tumbled there) and slightly worse on three
    others wins on the 200 windows taken as independent, but not over the four trajectories."""
    from molgen.models.atom.reference import better_beyond_noise, trajectory_groups

    g = torch.Generator().manual_seed(1)
    groups = torch.arange(4).repeat_interleave(50)
    gain = torch.where(groups == 0, 3.0, -0.5).double() + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    current = 5.0 + torch.rand(200, generator=g, dtype=torch.float64)
    assert better_beyond_noise(current, current - gain)                          # windows as independent
    assert not better_beyond_noise(current, current - gain, groups)              # one trajectory is not enough
    steady = 0.4 + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)      # better on every trajectory
    assert better_beyond_noise(current, current - steady, groups)
    two = torch.arange(2).repeat_interleave(100)                                 # < 3 trajectories: windows count
    assert better_beyond_noise(current, current - gain, two)
    windows = {"molecule": torch.tensor([0, 0, 1, 1, 1]), "trajectory": torch.tensor([0, 1, 0, 0, 1])}
    assert trajectory_groups(windows).tolist() == [0, 1, 2, 2, 3]                # per (molecule, trajectory)
    assert trajectory_groups({"molecule": windows["molecule"]}) is None


def test_an_unseen_molecule_relaxes_toward_the_mean_of_the_users_own_frames():
    """Zero-shot through predict: no structure of ethanol in the prior, so with >= 377 frames it relaxes toward the
    mean of the frames t-375 .. t (every 25th) with the gates of the known structure; with 2 frames, no prior."""
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    heavy = traj.select_atoms(traj.heavy_mask).positions
    frames = np.repeat(traj.positions[:1], 377, axis=0)                          # a long enough trajectory:
    frames[0:376:25] = traj.positions[np.arange(0, 32, 2)]                       # the 16 frames the reference
    frames[-2], frames[-1] = traj.positions[40], traj.positions[41]              # sees (the last is x_t), x_t+1
    model = TrajectoryForecaster(network="static", network_args={"_target_": "molgen.models.atom.egno.StaticBaseline"},
                                 reference={"slots": 2, "atoms": 3})
    other = torch.tensor([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.0, 1.2, 0.0]])
    model.prior.set_structures([(other, torch.tensor([7, 7, 7]), 1.0)])         # knows an N3 "molecule" only
    model.prior.gates[0] = torch.linspace(0.2, 0.9, 8)[:, None]
    model.prior.use_net[0] = False
    with pytest.warns(UserWarning, match="relaxing toward the mean of your last 375 frames"):
        future = model.predict(md17.Trajectory(frames, traj.atomic_numbers, 0.5).to_mdtraj())
    x0 = torch.tensor(heavy[40], dtype=torch.float64)
    ref = mean_structure(torch.tensor(heavy[list(range(0, 30, 2)) + [40]], dtype=torch.float64))
    aligned = kabsch_align(ref[None], x0[None])[0]
    expected = x0[None] + torch.linspace(0.2, 0.9, 8, dtype=torch.float64)[:, None, None] * (aligned - x0)[None]
    np.testing.assert_allclose(future.xyz * 10, expected.numpy(), atol=1e-4)
    short = model.predict(md17.Trajectory(frames[-2:], traj.atomic_numbers, 0.5).to_mdtraj())
    np.testing.assert_allclose(short.xyz * 10, np.broadcast_to(heavy[40], (8, 3, 3)), atol=1e-4)
