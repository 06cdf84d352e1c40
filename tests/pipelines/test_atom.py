"""The ATOM pipeline end to end through the CLI (tiny budgets), molgen.load + predict, and user errors."""
from __future__ import annotations

import json

import mdtraj
import numpy as np
import pytest
import torch

import molgen
from molgen.cli import main
from molgen.data import md17
from molgen.pipelines.atom import repo_data_dir

TINY_ATOM = ["model.network_args.dim=24", "model.network_args.n_blocks=1", "model.network_args.n_heads=2"]
TINY = ["trainer.max_epochs=1", "trainer.max_time=null", "data.caps=[40,20,20]", "sample.n_write=1"]


def run(tmp_path, capsys, *overrides) -> tuple[int, str, str]:
    rc = main(["run", "pipeline=atom", f"out={tmp_path}", *TINY, *overrides])
    out, err = capsys.readouterr()
    return rc, out, err


def test_multitask_atom_end_to_end_then_load_and_predict(tmp_path, capsys):
    rc, out, err = run(tmp_path, capsys, *TINY_ATOM, "data.molecules=[ethanol,aspirin,malonaldehyde]",
                       "data.holdout=[malonaldehyde]", "run=mt")
    assert rc == 0, err
    assert out.strip().splitlines()[-1] == f"report: {tmp_path / 'mt' / 'report.md'}"
    run_dir = tmp_path / "mt"
    meta = json.loads((run_dir / "featurize" / "protocol.json").read_text())
    assert meta["info"]["malonaldehyde"]["n_train"] == 0 and meta["info"]["malonaldehyde"]["n_test"] == 20
    assert meta["info"]["aspirin"]["n_train"] == 40 and meta["protocol"]["margin"] == 3000
    metrics = json.loads((run_dir / "metrics.json").read_text())["validate"]
    for mol in ("ethanol", "aspirin", "malonaldehyde"):
        assert metrics[mol]["n_test"] == 20 and metrics[mol]["s2s"] > 0 and metrics[mol]["static_s2s"] > 0
    assert 0 < metrics["equivariance_error"] < 2
    for name in ("error_curves.png", "overlay.png"):
        assert (run_dir / "validate" / name).stat().st_size > 1000
    report = (run_dir / "report.md").read_text()
    assert "malonaldehyde (zero-shot)" in report and "S2S" in report
    # predicted trajectories open with mdtraj: input frame + 8 predicted frames, heavy atoms of aspirin
    pdbs = sorted((run_dir / "sample").glob("pred_aspirin_*.pdb"))
    assert len(pdbs) == 1
    t = mdtraj.load(str(pdbs[0].with_suffix(".dcd")), top=str(pdbs[0]))
    assert (t.n_frames, t.n_atoms) == (9, 13)
    # the checkpoint loads weights-only through molgen.load and predicts from an mdtraj trajectory
    model = molgen.load(run_dir / "train" / "last.ckpt")
    assert model.molecules == ["ethanol", "aspirin", "malonaldehyde"]
    traj = md17.load_xtb_npz(repo_data_dir() / "aspirin.npz")
    future = model.predict(md17.Trajectory(traj.positions[:2], traj.atomic_numbers, 0.5).to_mdtraj())
    assert (future.n_frames, future.n_atoms) == (8, 13)
    pred = torch.load(run_dir / "sample" / "predictions.pt", weights_only=True)["pred"]
    assert pred.shape == (60, 8, 13, 3)


def test_static_and_egno_runs_and_their_relation(tmp_path, capsys):
    rc, out, err = run(tmp_path, capsys, "model=static", "data.molecule=aspirin", "run=static")
    assert rc == 0, err
    static = json.loads((tmp_path / "static" / "metrics.json").read_text())["validate"]["aspirin"]
    assert static["s2s"] == pytest.approx(static["static_s2s"])      # the static model is the baseline
    rc, out, err = run(tmp_path, capsys, "model=egno", "data.molecule=aspirin", "model.network_args.hidden=16",
                       "model.network_args.n_layers=2", "run=egno")
    assert rc == 0, err
    egno = json.loads((tmp_path / "egno" / "metrics.json").read_text())["validate"]
    assert egno["equivariance_error"] < 1e-4                         # EGNO is exactly equivariant
    assert np.isfinite(egno["aspirin"]["s2t"])


def test_user_errors_are_one_line(tmp_path, capsys):
    rc, out, err = run(tmp_path, capsys, "data.molecules=[ethanol]", "data.holdout=[aspirin]")
    assert rc == 2 and err.strip() == "error: data.holdout=['aspirin']: not in data.molecules (ethanol)"
    rc, out, err = run(tmp_path, capsys, "data.molecule=caffeine")
    assert rc == 2 and err.startswith("error: data.molecule=caffeine: no caffeine.npz in") and len(err.strip().splitlines()) == 1
    rc, out, err = run(tmp_path, capsys, "data.source=xtb", f"data.path={tmp_path / 'missing'}")
    assert rc == 2 and "folder not found" in err
    rc, out, err = run(tmp_path, capsys, "data.hydrogen_inputs=true", "data.heavy_only=false")
    assert rc == 2 and err.strip().startswith("error: data.hydrogen_inputs=true needs data.heavy_only=true")
    assert len(err.strip().splitlines()) == 1
    rc, out, err = run(tmp_path, capsys, "model=mean_structure", "model.tumbling=true", "run=tumble")
    assert rc == 2 and err.strip().startswith("error: model.tumbling=true extrapolates the rotation seen since an "
                                              "earlier frame: it needs data.history_frames > 0")
    assert "featurize" not in out                                           # refused before any stage ran
    rc, out, err = run(tmp_path, capsys, "model.tumbling=true", "data.history_frames=375", "run=tumble2")
    assert rc == 2 and err.strip() == ("error: model.tumbling=true needs model.reference=true (its rate is fitted "
                                       "per molecule)")
    # a checkpoint that extrapolates tumbling, on windows featurized without the earlier frame: one line
    rc, out, err = run(tmp_path, capsys, "model=mean_structure", "model.tumbling=true", "data.history_frames=375",
                       "run=tumble3")
    assert rc == 0, err
    rc, out, err = run(tmp_path, capsys, "stage=validate", f"ckpt={tmp_path / 'tumble3' / 'train' / 'best.ckpt'}",
                       "run=tumble4")
    assert rc == 2 and "featurize with data.history_frames=375" in err and len(err.strip().splitlines()) == 1


def test_trajectory_level_protocol_tests_on_a_simulation_never_seen(tmp_path, capsys):
    """split_by=trajectory: train on the main trajectory, choose on seed 102, test on seed 101 (embedded)."""
    rc, out, err = run(tmp_path, capsys, "model=static", "data.split_by=trajectory", "data.margin=0",
                       "data.trajectories={train:[main],val:[s102],test:[s101]}", "data.strides=[5,10,4]",
                       "data.caps=[null,8,30]", "run=traj")
    assert rc == 0, err
    meta = json.loads((tmp_path / "traj" / "featurize" / "protocol.json").read_text())
    assert meta["split_by"] == "trajectory"
    assert meta["info"]["ethanol"]["trajectories"] == {"train": ["main"], "val": ["s102"], "test": ["s101"]}
    assert (meta["info"]["ethanol"]["n_val"], meta["info"]["ethanol"]["n_test"]) == (8, 30)
    windows = torch.load(tmp_path / "traj" / "featurize" / "windows.pt", weights_only=True)
    s101 = md17.load_xtb_npz(repo_data_dir() / "independent" / "ethanol_s101.npz")
    starts = windows["test"]["start_frames"].numpy()
    np.testing.assert_array_equal(windows["test"]["x0"][:, :3].numpy(), s101.frames_at(starts)[:, :3])
    assert starts.max() + 3000 < 12_000                           # windows of the 12k-frame trajectory
    report = (tmp_path / "traj" / "featurize" / "report.md").read_text()
    assert report.startswith("Trajectory-level protocol: train on main")
    # each window records its trajectory (within molecule and split): the unit model choices count evidence in
    rc, out, err = run(tmp_path, capsys, "model=static", "data.split_by=trajectory", "data.margin=0",
                       "data.trajectories={train:[main],val:[],test:[s101,s102]}", "data.strides=[50,10,4]",
                       "data.caps=[null,8,30]", "run=two")
    assert rc == 0, err
    two = torch.load(tmp_path / "two" / "featurize" / "windows.pt", weights_only=True)["test"]
    assert two["trajectory"].tolist() == [0] * 30 + [1] * 30
    s102 = md17.load_xtb_npz(repo_data_dir() / "independent" / "ethanol_s102.npz")
    np.testing.assert_array_equal(two["x0"][30:, :3].numpy(), s102.frames_at(two["start_frames"][30:].numpy())[:, :3])
    # a trajectory in two splits is refused before anything runs
    rc, out, err = run(tmp_path, capsys, "model=static", "data.split_by=trajectory",
                       "data.trajectories={train:[main],val:[],test:[main]}", "run=bad")
    assert rc == 2 and err.strip().startswith("error: data.trajectories: trajectory main is in both train and test")
    rc, out, err = run(tmp_path, capsys, "model=static", "data.split_by=trajectory",
                       "data.trajectories={train:[main],val:[],test:[s999]}", "run=bad2")
    assert rc == 2 and "no ethanol_s999.npz" in err and len(err.strip().splitlines()) == 1


SIM = ["model=static", "data.split_by=trajectory", "data.margin=0", "data.trajectories={train:[main],val:[],test:[s101]}",
       "data.strides=[50,1,40]", "data.caps=[null,null,20]", "data.simulated_frames=3040"]


def test_simulated_training_trajectories_are_new_physical_and_reused(tmp_path, capsys):
    """data.simulate_train: GFN2-xTB trajectories from new seeds join the training split only; they start from
    the main trajectory's frame 0, stay physical, differ from each other, and a second run reuses them."""
    sims = tmp_path / "sims"
    rc, out, err = run(tmp_path, capsys, *SIM, "data.simulate_train={ethanol:2}", f"data.simulation_dir={sims}",
                       "run=sim")
    assert rc == 0, err
    assert "simulating 2 GFN2-xTB trajectories" in out
    meta = json.loads((tmp_path / "sim" / "featurize" / "protocol.json").read_text())
    assert meta["info"]["ethanol"]["trajectories"]["train"] == ["main", "sim1001", "sim1002"]
    assert meta["info"]["ethanol"]["trajectories"]["test"] == ["s101"]
    main_traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    a, b = (md17.load_xtb_npz(sims / f"ethanol_sim{seed}" / "trajectory.npz") for seed in (1001, 1002))
    assert a.n_frames == b.n_frames == 3040 and a.time_step_fs == main_traj.time_step_fs
    assert np.isfinite(a.positions).all() and not np.allclose(a.positions[-1], b.positions[-1], atol=0.05)
    heavy = a.positions[:, :3]                                  # C-C and C-O bonds hold over the whole trajectory
    for i, j in ((0, 1), (0, 2)):
        d = np.linalg.norm(heavy[:, i] - heavy[:, j], axis=-1)
        assert 1.2 < d.min() and d.max() < 1.75
    windows = torch.load(tmp_path / "sim" / "featurize" / "windows.pt", weights_only=True)
    n_main = len(md17.strided_starts(main_traj, md17.Protocol(margin=0, caps=(10**9,) * 3), 50, None))
    assert windows["train"]["x0"].shape[0] == n_main + 2 * 1                 # (3040 - 3000) // 50 + 1 = 1 each
    # same simulations, another run: reused, not simulated again
    rc, out, err = run(tmp_path, capsys, *SIM, "data.simulate_train={ethanol:2}", f"data.simulation_dir={sims}",
                       "data.strides=[25,1,40]", "run=again")
    assert rc == 0, err
    assert "simulating" not in out
    # user errors, one line each, before anything is simulated
    rc, out, err = run(tmp_path, capsys, "data.simulate_train={ethanol:2}", "run=bad")
    assert rc == 2 and err.strip() == ("error: data.simulate_train adds training trajectories: it needs "
                                       "data.split_by=trajectory")
    rc, out, err = run(tmp_path, capsys, *SIM, "data.simulate_train={aspirin:1}", "run=bad2")
    assert rc == 2 and err.strip().startswith("error: data.simulate_train: ['aspirin'] not in data.molecules")


def test_hydrogen_inputs_are_seen_but_not_scored(tmp_path, capsys):
    """data.hydrogen_inputs=true: the model reads all 9 ethanol atoms, metrics count the 3 heavy atoms only, and
    the static baseline's error equals that of the heavy-atom protocol on the same windows."""
    rc, out, err = run(tmp_path, capsys, *TINY_ATOM, "data.hydrogen_inputs=true", "run=h")
    assert rc == 0, err
    windows = torch.load(tmp_path / "h" / "featurize" / "windows.pt", weights_only=True)
    assert windows["test"]["x0"].shape[1] == 9
    assert windows["test"]["scored"][0].tolist() == [True] * 3 + [False] * 6            # C C O, then H
    rc, out, err = run(tmp_path, capsys, "model=static", "run=heavy")
    assert rc == 0, err
    h = json.loads((tmp_path / "h" / "metrics.json").read_text())["validate"]["ethanol"]
    heavy = json.loads((tmp_path / "heavy" / "metrics.json").read_text())["validate"]["ethanol"]
    assert h["static_s2t"] == pytest.approx(heavy["static_s2t"], rel=1e-5)
    model = molgen.load(tmp_path / "h" / "train" / "last.ckpt")
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    future = model.predict(md17.Trajectory(traj.positions[:2], traj.atomic_numbers, 0.5).to_mdtraj())
    assert (future.n_frames, future.n_atoms) == (8, 3)


def test_init_from_warm_starts_and_refuses_another_architecture(tmp_path, capsys):
    rc, out, err = run(tmp_path, capsys, *TINY_ATOM, "run=first")
    assert rc == 0, err
    first = tmp_path / "first" / "train" / "last.ckpt"
    rc, out, err = run(tmp_path, capsys, *TINY_ATOM, f"model.init_from={first}", "data.hydrogen_inputs=true",
                       "run=warm")
    assert rc == 0, err
    assert f"initialised from {first}" in out
    ckpt = torch.load(tmp_path / "warm" / "train" / "last.ckpt", weights_only=True)
    assert ckpt["molgen"]["initialised_from"] == str(first)
    rc, out, err = run(tmp_path, capsys, "model.network_args.dim=48", "model.network_args.n_blocks=1",
                       "model.network_args.n_heads=2", f"model.init_from={first}", "run=wider")
    assert rc == 2 and "the architecture differs" in err and len(err.strip().splitlines()) == 1


def test_mean_structure_prior_learns_from_training_windows_only(tmp_path, capsys):
    """model=mean_structure (and model.reference=true on a network): the prior's structures are the mean of the
    training windows' input frames, its gates the least-squares fit there; a fine-tune from a checkpoint starts at
    zero gates, i.e. exactly at that checkpoint's forecast; the checkpoint loads and predicts."""
    from molgen.models.atom.reference import MeanStructurePrior, structures_from_windows

    traj_split = ["data.split_by=trajectory", "data.margin=0", "data.trajectories={train:[main],val:[s102],test:[s101]}",
                  "data.strides=[5,10,4]", "data.caps=[null,8,30]"]
    rc, out, err = run(tmp_path, capsys, "model=mean_structure", *traj_split, "run=ms")
    assert rc == 0, err
    assert "mean-structure prior: conformer families ethanol 1; per molecule (chosen on the validation windows, no network): ethanol relaxation alone" in out
    windows = torch.load(tmp_path / "ms" / "featurize" / "windows.pt", weights_only=True)
    ckpt = torch.load(tmp_path / "ms" / "train" / "best.ckpt", weights_only=True)
    entries = structures_from_windows(windows["train"], 1)
    assert len(entries) == 1                                           # ethanol's heavy atoms: one family
    torch.testing.assert_close(ckpt["state_dict"]["prior.structures"][0, :3], entries[0][1])
    check = MeanStructurePrior(4, 3, 8)
    check.set_structures([(mu, z, r) for _, mu, z, r in entries])
    t = windows["train"]
    torch.testing.assert_close(ckpt["state_dict"]["prior.gates"], check.fit_gates(t["x0"], t["z"], t["mask"], t["targets"]))
    metrics = json.loads((tmp_path / "ms" / "metrics.json").read_text())["validate"]["ethanol"]
    assert metrics["s2t"] != pytest.approx(metrics["static_s2t"])      # not the static baseline
    model = molgen.load(tmp_path / "ms" / "train" / "best.ckpt")
    traj = md17.load_xtb_npz(repo_data_dir() / "ethanol.npz")
    x = md17.Trajectory(traj.positions[:2], traj.atomic_numbers, 0.5)
    future = model.predict(x.to_mdtraj())
    heavy = x.select_atoms(x.heavy_mask).positions[0]
    assert (future.n_frames, future.n_atoms) == (8, 3) and not np.allclose(future.xyz[0] * 10, heavy, atol=1e-4)
    # a network with the prior: per molecule, relaxation alone, network + relaxation (gates fitted to the network's
    # residual) or the network alone, a more complex one only if better on validation by more than one SE
    rc, out, err = run(tmp_path, capsys, *TINY_ATOM, *traj_split, "run=plain")
    assert rc == 0, err
    plain = tmp_path / "plain" / "train" / "last.ckpt"
    rc, out, err = run(tmp_path, capsys, *TINY_ATOM, *traj_split, "model.reference=true", f"model.init_from={plain}",
                       "model.lr=0", "run=tuned")
    assert rc == 0, err
    assert "recalibrating the mean-structure prior for the trained network" in out
    base = molgen.load(plain)
    tuned = molgen.load(tmp_path / "tuned" / "train" / "last.ckpt")                # no validation in 1 epoch
    residual = base.forecast(t["x0"], t["v0"], t["z"], t["mask"]) - t["x0"][:, None]
    on_net = check.fit_gates(t["x0"], t["z"], t["mask"], t["targets"], residual=residual)
    alone = check.fit_gates(t["x0"], t["z"], t["mask"], t["targets"])
    v = windows["val"]
    m = v["mask"][:, None, :, None]
    net_v = base.forecast(v["x0"], v["v0"], v["z"], v["mask"])
    errors, options = [], [(alone, v["x0"][:, None].expand_as(net_v)), (on_net, net_v), (torch.zeros_like(alone), net_v)]
    for gates, start in options:                                        # simplest first
        check.gates.copy_(gates)
        errors.append((((start + check.relaxation(v["x0"], v["z"], v["mask"]) - v["targets"]) ** 2) * m).sum((1, 2, 3)))
    pick = 0
    for j in (1, 2):                                                    # a later option only if better beyond 1 SE
        d = errors[pick] - errors[j]
        pick = j if float(d.mean()) > float(d.std()) / len(d) ** 0.5 else pick
    said = out.split("recalibrating")[1]
    assert ["relaxation alone", "network + relaxation", "network alone"][pick] in said
    torch.testing.assert_close(tuned.prior.gates, options[pick][0])
    assert bool(tuned.prior.use_net[0]) == (pick > 0)
    a = torch.load(tmp_path / "plain" / "sample" / "predictions.pt", weights_only=True)["pred"]
    b = torch.load(tmp_path / "tuned" / "sample" / "predictions.pt", weights_only=True)["pred"]
    test = windows["test"]
    kept = a if pick > 0 else test["x0"][:, None].expand_as(a)
    torch.testing.assert_close(b, kept + tuned.prior.relaxation(test["x0"], test["z"], test["mask"]), atol=1e-5, rtol=0)
