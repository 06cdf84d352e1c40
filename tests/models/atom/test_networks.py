"""ATOM, EGNO and the static baseline: shapes, padding, symmetry (exact for EGNO, measured for ATOM)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molgen.data import md17
from molgen.evaluation.trajectories import equivariance_error
from molgen.models.atom.network import ATOM, TemporalRoPE
from molgen.models.atom.egno import EGNO, StaticBaseline, TemporalFourierLayer
from molgen.models.atom.forecaster import TrajectoryForecaster, masked_mse
from molgen.pipelines.atom import repo_data_dir
from molgen.testing import assert_equivariant


@pytest.fixture(scope="module")
def aspirin_batch():
    """Four real aspirin states (13 heavy atoms) from the embedded xTB subset, float64 for symmetry checks."""
    traj = md17.load_xtb_npz(repo_data_dir() / "aspirin.npz")
    p = md17.Protocol()
    w = md17.make_windows(traj, md17.candidate_starts(traj, p)[:4], p)
    x0, v0 = torch.tensor(w["x0"], dtype=torch.float64), torch.tensor(w["v0"], dtype=torch.float64)
    z = torch.tensor(w["z"])[None].expand(4, -1)
    return x0, v0, z


def small_atom(**kw) -> ATOM:
    torch.manual_seed(0)
    return ATOM(dim=24, n_blocks=2, n_heads=2, **kw).double().eval()


def test_shapes_of_all_networks(aspirin_batch):
    x0, v0, z = aspirin_batch
    for net in (small_atom(), EGNO(hidden=16, n_layers=2).double().eval(), StaticBaseline()):
        out = net(x0, v0, z)
        assert out.shape == (4, 8, 13, 3) and torch.isfinite(out).all()
    assert torch.equal(StaticBaseline()(x0, v0, z)[:, 5], x0)


def test_egno_is_e3_equivariant(aspirin_batch):
    x0, v0, z = aspirin_batch
    torch.manual_seed(0)
    net = EGNO(hidden=16, n_layers=3).double().eval()
    with torch.no_grad():  # perturb the temporal weights so that the Fourier layers do something
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = net(x0, v0, z)
    # E(3), not only SO(3): rotations and rotoreflections, with translations (x0, v0: [B, N, 3], no permutation)
    assert_equivariant(net, (x0, v0, z), ("position", "vector", None), "position", permute=False,
                       atol=1e-9, rtol=1e-9)
    # and the slots really differ (the temporal layers are on)
    assert (out[:, 0] - out[:, -1]).abs().max() > 1e-6


def test_egno_time_conv_switch_changes_the_model(aspirin_batch):
    x0, v0, z = aspirin_batch
    torch.manual_seed(0)
    a = EGNO(hidden=16, n_layers=2).double().eval()
    b = EGNO(hidden=16, n_layers=2, use_time_conv=False).double().eval()
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(x0, v0, z), b(x0, v0, z))


def test_atom_equivariance_comes_only_from_lift_and_projection(aspirin_batch):
    """Without trunk blocks ATOM is exactly O(3)-equivariant; with them it is quasi-equivariant (measured)."""
    x0, v0, z = aspirin_batch
    lift_only = ATOM(dim=24, n_blocks=0, n_heads=2).double().eval()
    assert equivariance_error(lift_only, x0, v0, z, n_rotations=4) < 1e-10
    torch.manual_seed(0)
    paper_width = ATOM(dim=128, n_blocks=5, n_heads=8).double().eval()
    err = equivariance_error(paper_width, x0, v0, z, n_rotations=8)
    print(f"ATOM (untrained, d=128, 5 blocks) relative equivariance error: {err:.3g}")
    assert 1e-6 < err < 0.25


def test_atom_padding_atoms_do_not_change_real_atoms(aspirin_batch):
    x0, v0, z = aspirin_batch
    net = small_atom()
    pad = 3
    xp = torch.cat([x0, 5 * torch.randn(4, pad, 3, dtype=torch.float64)], 1)
    vp = torch.cat([v0, torch.randn(4, pad, 3, dtype=torch.float64)], 1)
    zp = torch.cat([z, torch.full((4, pad), 6)], 1)
    mask = torch.arange(16)[None].expand(4, -1) < 13
    torch.testing.assert_close(net(xp, vp, zp, mask)[:, :, :13], net(x0, v0, z), atol=1e-10, rtol=1e-8)
    assert (net(xp, vp, zp, mask)[:, :, 13:] == 0).all()
    egno = EGNO(hidden=16, n_layers=2).double().eval()
    torch.testing.assert_close(egno(xp, vp, zp, mask)[:, :, :13], egno(x0, v0, z), atol=1e-10, rtol=1e-8)


def test_atom_brownian_noise_only_in_training(aspirin_batch):
    x0, v0, z = aspirin_batch
    net = ATOM(dim=24, n_blocks=1, n_heads=2, attention_dropout=0.0, ffn_dropout=0.0).double()
    net.eval()
    assert torch.equal(net(x0, v0, z), net(x0, v0, z))
    net.train()
    assert not torch.equal(net(x0, v0, z), net(x0, v0, z))


def test_rope_rotates_by_slot_and_keeps_norms():
    rope = TemporalRoPE(d_head=8, base=1000.0)
    t = torch.randn(1, 1, 6, 8)  # 3 slots x 2 atoms
    r = rope(t, n_atoms=2)
    torch.testing.assert_close(r.norm(dim=-1), t.norm(dim=-1))
    torch.testing.assert_close(r[..., :2, :], t[..., :2, :])   # slot 0 is not rotated
    assert not torch.allclose(r[..., 2:, :], t[..., 2:, :])
    # relative property: <R_p q, R_s k> depends on p - s only
    q, k = torch.randn(8), torch.randn(8)
    seq = torch.stack([q, k, q, k, q, k]).view(1, 1, 6, 8)     # n_atoms=1: positions 0..5
    s = rope(seq, n_atoms=1)[0, 0]
    torch.testing.assert_close(s[0] @ s[1], s[2] @ s[3])


def test_fourier_layer_keeps_only_low_modes():
    layer = TemporalFourierLayer(1, 1, n_modes=1)
    u = torch.randn(2, 8, 1)
    out = layer(u)
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)   # mode 0 only: constant over slots


def test_masked_mse_and_forecaster_predict_mdtraj():
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    pred = torch.zeros(1, 8, 4, 3)
    target = torch.ones(1, 8, 4, 3)
    mask = torch.tensor([[True, True, False, False]])
    assert torch.allclose(masked_mse(pred, target, mask), torch.ones(1, 8))
    model = TrajectoryForecaster("atom", {"dim": 24, "n_blocks": 1, "n_heads": 2})
    m = md17.Trajectory(traj.positions[:2], traj.atomic_numbers, time_step_fs=0.5).to_mdtraj()
    future = model.predict(m)
    assert future.n_frames == 8 and future.n_atoms == 3
    assert [a.element.symbol for a in future.topology.atoms] == ["C", "C", "O"]
    assert abs(future.time[-1] - (m.time[0] + 1.5)) < 1e-6


def test_centered_forecaster_is_translation_equivariant(aspirin_batch):
    x0, v0, z = (t.float() if t.is_floating_point() else t for t in aspirin_batch)
    torch.manual_seed(0)
    centered = TrajectoryForecaster("atom", {"dim": 24, "n_blocks": 1, "n_heads": 2}, center=True).eval()
    # shifts of ~70 A, where the rMD17-derived benzene trajectory sits (-65, 72, -60); translations only (ATOM is
    # not rotation equivariant)
    translated = dict(rotations="none", permute=False, translation_scale=70.0, atol=1e-4, rtol=0)
    with torch.no_grad():
        assert_equivariant(lambda x: centered(x, v0, z), x0, "position", "position", **translated)
        plain = TrajectoryForecaster("atom", {"dim": 24, "n_blocks": 1, "n_heads": 2}).eval()
        with pytest.raises(AssertionError, match="translation"):
            assert_equivariant(lambda x: plain(x, v0, z), x0, "position", "position", **{**translated, "atol": 1e-2})


def test_shipped_multitask_checkpoint_loads_and_predicts():
    import molgen

    if "atom-md17" not in molgen.list_checkpoints():
        pytest.skip("atom-md17 checkpoint not shipped in this checkout")
    model = molgen.load("atom-md17", pipeline="atom")
    assert len(model.molecules) == 8
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    future = model.predict(md17.Trajectory(traj.positions[:2], traj.atomic_numbers, 0.5).to_mdtraj())
    assert (future.n_frames, future.n_atoms) == (8, 3)
    ckpt = torch.load(molgen.checkpoint.resolve("atom-md17"), weights_only=True)
    assert "optimizer_states" not in ckpt
    # its prior takes the frame 375 steps before x_t from a long enough trajectory (malonaldehyde's rotation term is
    # on: validation trajectories confirm it)
    assert model.history == 375 and model.prior is not None
    traj = md17.load_xtb_npz(repo_data_dir() / "malonaldehyde.npz")
    heavy = traj.select_atoms(traj.heavy_mask)
    slot = int(model.prior.match(torch.tensor(heavy.atomic_numbers)[None])[0])
    assert slot >= 0 and float(model.prior.spin[slot].abs().sum()) > 0
    t = int(np.flatnonzero(traj.frame_index == 400)[0])                        # frames 25, 400, 401 are stored
    early = int(np.flatnonzero(traj.frame_index == 25)[0])
    frames = np.concatenate([traj.positions[[early]].repeat(376, 0), traj.positions[[t + 1]]])
    frames[-2] = traj.positions[t]
    with_history = model.predict(md17.Trajectory(frames, traj.atomic_numbers, 0.5).to_mdtraj())
    direct = model.forecast(torch.tensor(heavy.positions[[t]]), torch.tensor(heavy.positions[[t + 1]] - heavy.positions[[t]]),
                            torch.tensor(heavy.atomic_numbers)[None], x_hist=torch.tensor(heavy.positions[[early]]),
                            has_hist=torch.ones(1, dtype=torch.bool))[0].numpy()
    np.testing.assert_allclose(with_history.xyz * 10, direct, atol=1e-4)
    with pytest.warns(UserWarning, match="give >= 377"):
        without = model.predict(md17.Trajectory(frames[-2:], traj.atomic_numbers, 0.5).to_mdtraj())
    assert np.abs(without.xyz - with_history.xyz).max() * 10 > 1e-3              # the rotation made a difference


def test_predict_names_bad_trajectories_in_one_line():
    """No time information, another time step (with the stride that fixes it), Angstrom read as nm, a molecule
    split across a periodic box; dt_fs= gives the step for a file without times."""
    import mdtraj

    from molgen.errors import DataError

    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    model = TrajectoryForecaster("atom", {"dim": 24, "n_blocks": 1, "n_heads": 2})
    good = md17.Trajectory(traj.positions[:4], traj.atomic_numbers, time_step_fs=0.5).to_mdtraj()
    bare = mdtraj.Trajectory(good.xyz, good.topology)                       # as read from an XYZ file
    with pytest.raises(DataError, match=r"no time information .* dt_fs=0.5"):
        model.predict(bare)
    assert model.predict(bare, dt_fs=0.5).n_frames == 8
    slow = mdtraj.Trajectory(good.xyz, good.topology, time=np.arange(4) * 0.0005 / 2)   # 0.25 fs apart
    with pytest.raises(DataError, match="0.25 fs differs"):
        model.predict(slow)
    coarse = mdtraj.Trajectory(good.xyz, good.topology, time=np.arange(4) * 0.001)      # 1 fs
    with pytest.raises(DataError, match=r"1 fs differs .* 0.5 fs"):
        model.predict(coarse)
    fast = mdtraj.Trajectory(good.xyz, good.topology, time=np.arange(4) * 0.00025)     # 0.25 fs: take every 2nd
    with pytest.raises(DataError, match=r"traj\[::2\]"):
        model.predict(fast)
    with pytest.raises(DataError, match="look like Angstrom"):
        model.predict(mdtraj.Trajectory(good.xyz * 10, good.topology, time=good.time))
    split = good.xyz.copy()
    split[:, 0] += np.array([1.0, 0, 0], dtype=np.float32)                  # atom 0 moved to the box's far side
    boxed = mdtraj.Trajectory(split, good.topology, time=good.time, unitcell_lengths=np.full((4, 3), 1.2),
                              unitcell_angles=np.full((4, 3), 90.0))
    with pytest.raises(DataError, match="split across the box"):
        model.predict(boxed)


def test_predict_an_unseen_molecule_zero_shot_with_a_warning():
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    model = TrajectoryForecaster("atom", {"dim": 24, "n_blocks": 1, "n_heads": 2})
    m = md17.Trajectory(traj.positions[:2], traj.atomic_numbers, time_step_fs=0.5).to_mdtraj()
    model.molecules = ["aspirin", "toluene"]
    with pytest.warns(UserWarning, match="zero-shot"):
        assert model.predict(m).n_frames == 8
    model.molecules = ["ethanol"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(m)


def test_rotate_windows_rotates_inputs_and_targets_about_the_input_centroid(aspirin_batch):
    from molgen.models.atom.forecaster import rotate_windows
    from e3nn import o3

    x0, v0, z = aspirin_batch
    torch.manual_seed(0)
    targets = x0[:, None] + 0.1 * torch.randn(4, 8, *x0.shape[1:], dtype=x0.dtype)
    mask = torch.ones(z.shape, dtype=torch.bool)
    mask[0, -2:] = False                                          # padding atoms stay zero
    batch = {"x0": x0 * mask[..., None], "v0": v0 * mask[..., None], "targets": targets * mask[:, None, :, None],
             "mask": mask, "z": z}
    R = o3.rand_matrix(4, dtype=x0.dtype)
    out = rotate_windows(batch, R)
    # distances within and between frames are kept; the static baseline's error is unchanged
    for b in range(4):
        n = int(mask[b].sum())
        before = torch.cdist(batch["targets"][b, :, :n].reshape(-1, 3), batch["x0"][b, :n])
        after = torch.cdist(out["targets"][b, :, :n].reshape(-1, 3), out["x0"][b, :n])
        torch.testing.assert_close(after, before)
    static = lambda w: masked_mse(w["x0"][:, None].expand_as(w["targets"]), w["targets"], w["mask"])  # noqa: E731
    torch.testing.assert_close(static(out), static(batch))
    torch.testing.assert_close(out["v0"][1], v0[1] @ R[1].T)
    assert (out["x0"][0, -2:] == 0).all() and (out["targets"][0, :, -2:] == 0).all()
    # centroids stay put (rotation about the input centroid), so a centred model sees no translation
    torch.testing.assert_close(out["x0"][1].mean(0), x0[1].mean(0))


def test_atom_displacement_head_starts_as_the_static_baseline(aspirin_batch):
    x0, v0, z = aspirin_batch
    model = small_atom(displacement=True, velocity_scale=250.0)
    pred = model(x0, v0, z)
    torch.testing.assert_close(pred, x0[:, None].expand_as(pred))
    # one gradient step moves it away from the static baseline (the zero projection still receives a gradient)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.train()
    loss = ((model(x0, v0, z) - (x0 + 0.05)[:, None]) ** 2).mean()
    loss.backward()
    opt.step()
    model.eval()
    assert not torch.allclose(model(x0, v0, z), x0[:, None].expand_as(pred))
