"""Trajectory forecasting as a Lightning module: ATOM, EGNO or the static baseline behind one interface.

:class:`TrajectoryForecaster` wraps a network ``net(x0, v0, z, mask) -> [B, P, N, 3]`` (see
:mod:`molgen.models.atom.network`, :mod:`molgen.models.atom.egno`) and trains it with the S2T objective, the mean squared
error over all P future frames (masked for padding atoms). Validation logs ``val/loss`` (S2T) and ``val/s2s``
(the last frame). Metrics follow EGNO's ``nn.MSELoss``: the mean over atoms *and* x/y/z of the squared
error, in Angstrom^2.

:meth:`TrajectoryForecaster.predict` is the user-facing call: an :class:`mdtraj.Trajectory` in, the P
predicted frames out as an :class:`mdtraj.Trajectory`.
"""
from __future__ import annotations

import warnings

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from molgen.data.md17 import scored_atoms
from molgen.errors import DataError
from molgen.spec import build

#: the class of each network name, for checkpoints written before ``network_args`` carried its ``_target_``
LEGACY_NETWORKS = {"atom": "molgen.models.atom.network.ATOM", "egno": "molgen.models.atom.egno.EGNO",
                   "static": "molgen.models.atom.egno.StaticBaseline"}


def network_spec(network: str, network_args: dict[str, Any] | None) -> dict[str, Any]:
    """The network as a spec: ``network_args`` with its ``_target_`` (added from the name for older checkpoints)."""
    spec = dict(network_args or {})
    if "_target_" not in spec:
        if network not in LEGACY_NETWORKS:
            raise ValueError(f"unknown forecasting network '{network}' (choose from {', '.join(LEGACY_NETWORKS)}, "
                             "or give network_args._target_)")
        spec["_target_"] = LEGACY_NETWORKS[network]
    return spec


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-slot MSE over real atoms and x/y/z. Shapes: ``[B, P, N, 3]``, mask ``[B, N]`` -> ``[B, P]``."""
    m = mask[:, None, :, None].to(pred.dtype)
    return ((pred - target) ** 2 * m).sum((2, 3)) / (3 * m.sum((2, 3))).clamp(min=1)


def rotate_windows(batch: dict, rotations: torch.Tensor | None = None) -> dict:
    """The windows rotated about their input centroids: ``x0``, ``v0`` and ``targets`` by one rotation per window
    (uniform random ``[B, 3, 3]`` when ``rotations`` is None); padding atoms stay at zero."""
    from e3nn import o3

    x0, mask = batch["x0"], batch["mask"]
    R = o3.rand_matrix(x0.shape[0], dtype=x0.dtype) if rotations is None else rotations.to(x0.dtype)
    m = mask.to(x0.dtype)[..., None]
    c = (x0 * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)          # [B, 1, 3]
    out = dict(batch)
    out["x0"] = (((x0 - c) @ R.transpose(1, 2)) + c) * m
    out["v0"] = (batch["v0"] @ R.transpose(1, 2)) * m
    out["targets"] = (((batch["targets"] - c[:, None]) @ R[:, None].transpose(2, 3)) + c[:, None]) * m[:, None]
    if "x_hist" in batch:
        out["x_hist"] = (((batch["x_hist"] - c) @ R.transpose(1, 2)) + c) * m
    return out


class TrajectoryForecaster(pl.LightningModule):
    """Lightning module for P-frame forecasting.

    Args:
        network: the network's name in reports (``atom``, ``egno``, ``static``).
        network_args: the network as a spec, ``{"_target_": class path, **its arguments}``
            (``molgen/configs/model/{atom,egno,static}.yaml``); without ``_target_`` the class follows ``network``
            (checkpoints written before the spec).
        optimizer: ``adamw`` (ATOM: amsgrad, eps 1e-10) | ``adam`` (EGNO) | ``muon`` (Muon on 2-D trunk
            weights, AdamW on the rest; ATOM's multitask setting).
        lr, weight_decay: optimiser settings. step_lr_every, step_lr_gamma: StepLR (EGNO: 2500, 0.5; 0 = off).
        protocol: ``delta_frame``, ``n_targets``, ``heavy_only``, ``hydrogen_inputs``, ``time_step_fs`` (used by
            :meth:`predict`).
        center: feed the network coordinates relative to the input centroid and add it back (False = ATOM's
            absolute coordinates; True in ``model=atom_multitask``, where rMD17-derived benzene sits ~110 A
            from the origin).
        augment_rotations: rotate every training window (input, velocity and targets, about the input
            centroid) by a random rotation. ATOM's trunk is not equivariant, and an MD trajectory with its
            overall rotation removed shows a molecule in few orientations; without augmentation the model
            learns orientation-specific maps that fail on a new simulation.
        reference: ``{"slots": S, "atoms": N}`` adds a :class:`~molgen.models.atom.reference.MeanStructurePrior`
            (relaxation toward the training molecules' mean structures, one per conformer family, aligned onto
            x_t, with learned gates per structure, frame and atom) to the network's forecast; the train stage fills
            its structures from the training windows, and the checkpoint keeps them. None = no prior. With
            ``"tumbling_scale": [P]`` the forecast is also turned on by the overall rotation seen since an earlier
            input frame ``x_hist`` (windows of ``data.history_frames``), extrapolated with a learned rate.
    """

    def __init__(self, network: str = "atom", network_args: dict | None = None, optimizer: str = "adamw",
                 lr: float = 1e-3, weight_decay: float = 1e-5, step_lr_every: int = 0, step_lr_gamma: float = 0.5,
                 protocol: dict | None = None, center: bool = False, augment_rotations: bool = False,
                 reference: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = build(network_spec(network, network_args))
        self.prior = None
        if reference:
            from molgen.models.atom.reference import MeanStructurePrior

            n_targets = int((network_args or {}).get("n_targets", (protocol or {}).get("n_targets", 8)))
            self.prior = MeanStructurePrior(int(reference["slots"]), int(reference["atoms"]), n_targets,
                                            reference.get("tumbling_scale"))
        self.automatic_optimization = optimizer != "muon"
        self.protocol = dict(protocol or {"delta_frame": 3000, "n_targets": 8, "heavy_only": True,
                                          "time_step_fs": 0.5})

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrajectoryForecaster":
        """Rebuild from a checkpoint; ``molecules`` lists the molecules it was trained on."""
        info = ckpt["molgen"]
        model = cls(**info["model_args"])
        model.load_state_dict(ckpt["state_dict"])
        model.molecules = list(info.get("molecules", []))
        return model

    @property
    def history(self) -> int:
        """Frames back of the earlier input frame the model uses (0 = none)."""
        return int(self.protocol.get("history", 0)) if self.prior is not None and self.prior.spin is not None else 0

    def forward(self, x0, v0, z, mask=None, x_hist=None, has_hist=None) -> torch.Tensor:
        if not self.hparams.center:
            out = self.net(x0, v0, z, mask)
        else:
            # center=True: the network sees coordinates relative to the input frame's centroid (translation
            # equivariance for ATOM, whose absolute-coordinate design fails on molecules far from the origin)
            m = (torch.ones_like(x0[..., 0]) if mask is None else mask.to(x0.dtype))[..., None]
            c = (x0 * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)      # [B, 1, 3]
            out = (self.net((x0 - c) * m, v0, z, mask) + c[:, None]) * m[:, None]
        if self.prior is not None:
            out = self.prior(out, x0, z, mask, x_hist, has_hist)
        return out

    # ------------------------------------------------------------------------------------------ training
    def _step(self, batch: dict, split: str) -> torch.Tensor:
        if split == "train" and self.hparams.augment_rotations:
            batch = rotate_windows(batch)
        pred = self(batch["x0"], batch["v0"], batch["z"], batch["mask"], batch.get("x_hist"), batch.get("has_hist"))
        mse = masked_mse(pred, batch["targets"], scored_atoms(batch))                 # [B, P]
        loss = mse.mean()
        bs = batch["x0"].shape[0]
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=bs, on_epoch=True, on_step=split == "train")
        if split == "val":
            self.log("val/s2s", mse[:, -1].mean(), batch_size=bs, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            return self._step(batch, "train")
        opts = self.optimizers()  # optimizer=muon: Muon + AdamW stepped together, clipped here (norm 1.0)
        loss = self._step(batch, "train")
        for o in opts:
            o.zero_grad()
        self.manual_backward(loss)
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
        for o in opts:
            o.step()
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, eps=1e-10, amsgrad=True)
        elif hp.optimizer == "muon":
            matrices = [p for n, p in self.named_parameters() if p.ndim == 2 and "blocks" in n]
            ids = {id(p) for p in matrices}
            rest = [p for p in params if id(p) not in ids]
            opt = [torch.optim.Muon(matrices, lr=hp.lr, weight_decay=hp.weight_decay),
                   torch.optim.AdamW(rest, lr=hp.lr, weight_decay=hp.weight_decay, eps=1e-10)]
            return opt
        else:
            raise ValueError(f"unknown optimizer '{hp.optimizer}' (adam, adamw, muon)")
        if hp.step_lr_every:
            return {"optimizer": opt, "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.StepLR(opt, hp.step_lr_every, hp.step_lr_gamma),
                "interval": "epoch"}}
        return opt

    # ------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def forecast(self, x0: torch.Tensor, v0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                 batch_size: int = 256, x_hist: torch.Tensor | None = None,
                 has_hist: torch.Tensor | None = None) -> torch.Tensor:
        """P future frames for a batch of states, in eval mode. Shapes: ``[S, N, 3]`` -> ``[S, P, N, 3]``;
        ``x_hist`` [S, N, 3] the earlier frames (``has_hist`` [S] which are real) for a model with tumbling."""
        was = self.training
        self.eval()
        part = lambda t, i: None if t is None else t[i:i + batch_size]  # noqa: E731
        out = [self(x0[i:i + batch_size], v0[i:i + batch_size], z[i:i + batch_size], part(mask, i), part(x_hist, i),
                    part(has_hist, i)) for i in range(0, len(x0), batch_size)]
        self.train(was)
        return torch.cat(out)

    def predict(self, traj, dt_fs: float | None = None):
        """Forecast the P frames after an :class:`mdtraj.Trajectory` (nm) at the training time step.

        The state is taken from the last two frames with EGNO's convention: ``x_t`` = second-to-last frame,
        ``v_t = x_{t+1} - x_t`` (last minus second-to-last). The returned :class:`mdtraj.Trajectory` holds the
        P frames ``t + dT i / P`` over the predicted atoms (heavy atoms under the protocol), with times in ps.

        Args:
            traj: at least 2 frames, consecutive at the model's training time step.
            dt_fs: the time step between frames in fs, when ``traj.time`` does not hold it (files without time
                information, e.g. XYZ or PDB, which mdtraj numbers 0, 1, 2, ... ps).

        A molecule the model was not trained on is forecast zero-shot, with a warning. Bad input (a time step
        other than the training one, coordinates in Angstrom where mdtraj wants nm, a periodic box the molecule
        is split across) raises :class:`~molgen.errors.DataError` with one line.
        """
        from molgen.data.md17 import Trajectory, make_topology

        if traj.n_frames < 2:
            raise DataError(f"predict needs at least 2 consecutive frames (got {traj.n_frames})")
        want = float(self.protocol.get("time_step_fs", 0.5))
        step = _time_step_fs(traj, dt_fs, want)
        if abs(step - want) > 1e-3 * want:
            ratio = want / step
            hint = (f"; every {int(round(ratio))}th frame is: model.predict(traj[::{int(round(ratio))}])"
                    if ratio > 1 and abs(ratio - round(ratio)) < 1e-6 else "")
            raise DataError(f"trajectory time step {step:g} fs differs from the model's training time step "
                            f"{want:g} fs{hint}")
        _check_geometry(traj)
        hist = None
        if self.history:  # the earlier frame the tumbling extrapolation needs, when the trajectory is long enough
            if traj.n_frames >= self.history + 2:
                hist = Trajectory.from_mdtraj(traj[-2 - self.history], time_step_fs=want)
            else:
                warnings.warn(f"this model extrapolates the molecule's overall rotation from the frame {self.history} "
                              f"steps before x_t; the trajectory has {traj.n_frames} frames (give >= "
                              f"{self.history + 2}): forecasting without it", stacklevel=2)
        ours = Trajectory.from_mdtraj(traj[-2:], time_step_fs=want)
        self._warn_if_unseen(ours.atomic_numbers)
        heavy_only = self.protocol.get("heavy_only", True)
        if heavy_only and not self.protocol.get("hydrogen_inputs", False):
            ours = ours.select_atoms(ours.heavy_mask)
            hist = hist.select_atoms(hist.heavy_mask) if hist is not None else None
        keep = ours.heavy_mask if heavy_only else np.ones(ours.n_atoms, dtype=bool)   # hydrogen inputs not returned
        x = torch.tensor(ours.positions, dtype=torch.float32)
        z = torch.tensor(ours.atomic_numbers)[None]
        extra = {} if hist is None else {"x_hist": torch.tensor(hist.positions[:1], dtype=torch.float32),
                                         "has_hist": torch.ones(1, dtype=torch.bool)}
        own = self._own_reference(traj, want, z) if heavy_only and not self.protocol.get("hydrogen_inputs") else None
        if own is not None:  # zero-shot with the prior: relax toward the mean of the user's own recent frames
            pred = self.prior.relax_toward(own, x[:1], self.prior.generic_gates())[0].numpy()
        else:
            pred = self.forecast(x[:1], x[1:2] - x[:1], z, **extra)[0].numpy()[:, keep]         # [P, N, 3]
        ours = ours.select_atoms(keep)
        import mdtraj

        P, dT = pred.shape[0], int(self.protocol.get("delta_frame", 3000))
        t0 = float(traj.time[-2]) if dt_fs is None and traj.time is not None else (traj.n_frames - 2) * want / 1000.0
        times = t0 + np.array([dT * i // P for i in range(1, P + 1)]) * want / 1000.0
        return mdtraj.Trajectory(pred / 10.0, make_topology(ours.atomic_numbers, ours.positions[0]), time=times)

    #: a molecule the prior has no structure for: its mean structure from the frames t - OWN_SPAN .. t (every
    #: OWN_STRIDE-th) of the trajectory given to predict, when it has them
    OWN_SPAN, OWN_STRIDE = 375, 25

    def _own_reference(self, traj, dt_fs: float, z: torch.Tensor) -> torch.Tensor | None:
        """The heavy-atom mean structure ``[N, 3]`` of the last ``OWN_SPAN`` frames before x_t of ``traj``, for a
        molecule the prior has no structure for; None when the model has no prior, knows the molecule, or the
        trajectory is shorter than ``OWN_SPAN + 2`` frames."""
        from molgen.data.md17 import Trajectory
        from molgen.models.atom.reference import mean_structure

        if self.prior is None or int(self.prior.match(z)[0]) >= 0 or traj.n_frames < self.OWN_SPAN + 2:
            return None
        past = Trajectory.from_mdtraj(traj[traj.n_frames - 2 - self.OWN_SPAN:traj.n_frames - 1:self.OWN_STRIDE],
                                      time_step_fs=dt_fs * self.OWN_STRIDE)
        past = past.select_atoms(past.heavy_mask)
        warnings.warn(f"no mean structure of this molecule in the model: forecasting it as relaxing toward the mean of "
                      f"your last {self.OWN_SPAN} frames ({len(past.positions)} frames, gates averaged over the "
                      "training molecules)", stacklevel=3)
        return mean_structure(torch.tensor(past.positions, dtype=torch.float64)).float()

    def _warn_if_unseen(self, atomic_numbers: np.ndarray) -> None:
        """Warn (not refuse) when the molecule's composition is none of the training molecules'."""
        from molgen.data.md17 import MD17_FORMULAS

        known = [MD17_FORMULAS[m] for m in getattr(self, "molecules", []) if m in MD17_FORMULAS]
        if not known:
            return
        z = np.asarray(atomic_numbers)
        counts = {int(k): int((z == k).sum()) for k in np.unique(z)}
        heavy = {k: v for k, v in counts.items() if k != 1}
        if not any(counts == f or heavy == {k: v for k, v in f.items() if k != 1} for f in known):
            warnings.warn(f"this model was trained on {', '.join(self.molecules)}; forecasting a molecule it has not "
                          "seen (zero-shot): expect larger errors", stacklevel=3)


def _time_step_fs(traj, dt_fs: float | None, want: float) -> float:
    """The trajectory's time step in fs: ``dt_fs`` if given, else from ``traj.time``; one line when the file held
    no time information (mdtraj then numbers the frames 0, 1, 2, ... ps)."""
    if dt_fs is not None:
        if not float(dt_fs) > 0:
            raise DataError(f"dt_fs={dt_fs}: the time step must be positive (fs)")
        return float(dt_fs)
    time = np.asarray(traj.time, dtype=float) if traj.time is not None else None
    if time is None or np.allclose(time, np.arange(traj.n_frames)):
        raise DataError(f"the trajectory has no time information (mdtraj numbers its frames 0, 1, 2 ps); give the "
                        f"time step: model.predict(traj, dt_fs={want:g}) or set traj.time (ps)")
    steps = np.diff(time[-2:]) * 1000.0
    return float(steps[0])


def _check_geometry(traj) -> None:
    """One line for coordinates that cannot be a molecule in nm: Angstrom read as nm, or a molecule split across a
    periodic box (a bond longer than half the box)."""
    xyz = np.asarray(traj.xyz[-1], dtype=float)                                 # [N, 3] nm
    if len(xyz) < 2:
        return
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = float(np.median(d.min(1)))
    if nearest > 0.5:
        raise DataError(f"nearest atoms are {nearest:.2f} nm apart (median): the coordinates look like Angstrom, "
                        "mdtraj expects nm (divide by 10, or load the file with mdtraj)")
    if traj.unitcell_lengths is not None:
        box = float(np.min(traj.unitcell_lengths[-1]))
        far = float(np.max(d.min(1)))
        if box > 0 and far > 0.5 * box:
            raise DataError(f"an atom is {far:.2f} nm from its nearest neighbour in a {box:.2f} nm periodic box: the "
                            "molecule is split across the box; make it whole first (traj.image_molecules())")
