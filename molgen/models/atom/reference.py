"""Relaxation toward a molecule's mean structure: a physical prior for long-horizon forecasts.

Over ATOM's horizon (dT = 3000 frames = 1.5 ps at 0.5 fs, frames 187 fs apart) a molecule's bond and angle
vibrations decorrelate, while its orientation drifts slowly. The forecast that minimises the squared error for
the vibrating part is then the molecule's *mean* structure, rigidly aligned onto the input frame, not the input
frame itself (whose vibrational displacement is as likely reversed as kept: predicting ``x_t`` costs twice the
vibrational variance, the aligned mean structure once).

:class:`MeanStructurePrior` holds one mean structure per training molecule (computed from training windows
only, :func:`mean_structure`), finds a window's molecule by its atomic-number sequence, Kabsch-aligns the mean
structure onto ``x_t`` and adds ``gate[slot, frame, atom] * (aligned - x_t)`` to the network's forecast (one
gate per atom: a rigid ring relaxes fully, a rotor whose mean position is a blur of its conformers less).
A flexible molecule gets one mean structure per conformer family seen in training (:func:`conformer_means`;
aspirin's ester and acid groups, salicylic acid's carboxyl), and a window uses the nearest one after alignment,
and none when even that is farther than the family's own spread on the training frames (a conformer training
never saw: a mean structure of another conformer would pull atoms the wrong way). The gates are the
least-squares fit on the training windows (:meth:`MeanStructurePrior.fit_gates`; in a fine-tune, to the starting
network's residual) and stay fixed while the network trains; a molecule it has no structure for (zero-shot) gets
no prior term.
"""
from __future__ import annotations

import torch
from torch import nn

from molgen.nn.geometry import centred, kabsch_align, kabsch_rotation, rotation_vector, skew


def window_sse(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error of each window's forecast ``[B, P, N, 3]`` over its real atoms, frames and x/y/z: ``[B]``
    (float64)."""
    return (((pred - targets) ** 2) * mask[:, None, :, None].to(pred.dtype)).sum((1, 2, 3)).double()


def mean_structure(frames: torch.Tensor, iterations: int = 4) -> torch.Tensor:
    """The mean of ``[F, N, 3]`` frames after rigid alignment (iterated: align to the mean, re-average), centred."""
    x = frames - frames.mean(1, keepdim=True)
    ref = x[0]
    for _ in range(iterations):
        ref = kabsch_align(x, ref.expand_as(x)).mean(0)
        ref = ref - ref.mean(0)
    return ref


class MeanStructurePrior(nn.Module):
    """``gate[s, i, a] * (mean structure s aligned onto x_t - x_t)[a]`` for each of the P future frames.

    Args:
        slots: mean structures it can hold (conformer families of the training molecules).
        atoms: the largest molecule's atom count (structures are zero-padded to it).
        n_targets: P, the forecast frames (one gate per slot, frame and atom).
        tumbling_scale: with an earlier frame ``x_{t-h}`` as input, each frame's horizon over ``h`` (``[P]``):
            the forecast is then rotated about the centroid by ``spin[slot, i] * scale[i]`` times the rotation
            from ``x_{t-h}`` to ``x_t`` (tumbling persists over hundreds of fs; :meth:`fit_spin`). None = off.

    The structures, their atomic numbers and trust radii (RMSD, Angstrom) are buffers saved in the checkpoint,
    filled by :meth:`set_structures`; an empty slot matches nothing.
    """

    def __init__(self, slots: int, atoms: int, n_targets: int, tumbling_scale: list[float] | None = None):
        super().__init__()
        self.register_buffer("structures", torch.zeros(slots, atoms, 3))
        self.register_buffer("atomic_numbers", torch.full((slots, atoms), -1, dtype=torch.long))
        self.register_buffer("radius", torch.zeros(slots))
        # fitted in closed form on the training windows (and checked on validation), not by gradient steps: a
        # gradient would pull them toward the training trajectory's regime (ethanol's steady tumbling)
        self.register_buffer("gates", torch.zeros(slots, n_targets, atoms))
        # per structure: the network's forecast kept (True) or the relaxation alone from x_t (chosen on validation)
        self.register_buffer("use_net", torch.ones(slots, dtype=torch.bool))
        if tumbling_scale is not None:  # frame i's horizon in units of the history span (t+375 i over 375: i)
            self.register_buffer("scale", torch.tensor([float(v) for v in tumbling_scale]))
            self.register_buffer("spin", torch.zeros(slots, n_targets))
        else:
            self.spin = None

    @torch.no_grad()
    def set_structures(self, structures: list[tuple[torch.Tensor, torch.Tensor, float]]) -> None:
        """Slot ``s`` gets ``(structure [n, 3], atomic numbers [n], trust radius)`` number ``s``."""
        if len(structures) > len(self.structures):
            raise ValueError(f"{len(structures)} structures; the prior holds {len(self.structures)}")
        self.structures.zero_()
        self.atomic_numbers.fill_(-1)
        self.radius.zero_()
        for k, (x, z, radius) in enumerate(structures):
            n = len(x)
            if n > self.structures.shape[1]:
                raise ValueError(f"structure {k} has {n} atoms; the prior holds at most {self.structures.shape[1]}")
            self.structures[k, :n] = x.to(self.structures)
            self.atomic_numbers[k] = 0
            self.atomic_numbers[k, :n] = z.to(torch.long)
            self.radius[k] = float(radius)

    def candidates(self, z: torch.Tensor) -> torch.Tensor:
        """Which slots hold each window's molecule, by its atomic-number sequence (0 = padding). ``[B, S]`` bool."""
        S, A = self.atomic_numbers.shape
        W = max(A, z.shape[1])
        zz = torch.nn.functional.pad(z.long(), (0, W - z.shape[1]))
        ref = torch.nn.functional.pad(self.atomic_numbers, (0, W - A))
        return (zz[:, None, :] == ref[None]).all(-1) & (ref[None, :, 0] >= 0)

    def match(self, z: torch.Tensor) -> torch.Tensor:
        """The first slot of each window's molecule, -1 for a molecule it has no structure for. ``[B]``."""
        eq = self.candidates(z)
        return torch.where(eq.any(1), eq.float().argmax(1), torch.full_like(eq[:, 0], -1, dtype=torch.long))

    @torch.no_grad()
    def aligned(self, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None):
        """``(nearest mean structure aligned onto x0 [B, N, 3], its slot [B])``: x0 itself and slot -1 where the
        molecule is unknown or no structure lies within its trust radius."""
        B, N = x0.shape[:2]
        m = torch.ones_like(x0[..., 0], dtype=torch.bool) if mask is None else mask.bool()
        cand = self.candidates(z)
        out = x0.clone()
        best = torch.full((B,), float("inf"), dtype=x0.dtype, device=x0.device)
        slot = torch.full((B,), -1, dtype=torch.long, device=x0.device)
        for s in torch.nonzero(cand.any(0)).flatten().tolist():
            rows = cand[:, s]
            ref = self.structures[s][None].expand(int(rows.sum()), -1, -1)
            ref = ref[:, :N] if ref.shape[1] >= N else torch.nn.functional.pad(ref, (0, 0, 0, N - ref.shape[1]))
            a = kabsch_align(ref.to(x0.dtype), x0[rows], m[rows])
            mm = m[rows].to(x0.dtype)
            rmsd = ((((a - x0[rows]) ** 2).sum(-1) * mm).sum(1) / mm.sum(1).clamp(min=1)).sqrt()
            take = (rmsd < best[rows]) & (rmsd <= self.radius[s])
            idx = torch.nonzero(rows).flatten()[take]
            out[idx], best[idx], slot[idx] = a[take], rmsd[take], s
        return out, slot

    def relaxation(self, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                   assigned: tuple | None = None) -> torch.Tensor:
        """The relaxation ``[B, P, N, 3]`` toward the aligned mean structure (zero for windows without one)."""
        ref, slot = self.aligned(x0, z, mask) if assigned is None else assigned
        gate = self.gates[slot.clamp(min=0)] * (slot >= 0).to(x0.dtype)[:, None, None]        # [B, P, A]
        N, A = x0.shape[1], gate.shape[-1]
        gate = gate[..., :N] if A >= N else torch.nn.functional.pad(gate, (0, N - A))
        return gate[..., None] * (ref - x0)[:, None]

    def generic_gates(self) -> torch.Tensor:
        """``[P]``: the gates of the structures used without the network (relaxation alone), averaged over their
        atoms and structures, for a molecule the prior has no structure for (zero-shot)."""
        real = (self.atomic_numbers > 0).to(self.gates.dtype)                       # [S, A]
        slots = (self.atomic_numbers[:, 0] >= 0) & ~self.use_net
        if not slots.any():
            slots = self.atomic_numbers[:, 0] >= 0
        per_slot = (self.gates * real[:, None]).sum(-1) / real.sum(-1).clamp(min=1)[:, None]   # [S, P]
        return per_slot[slots].mean(0) if slots.any() else torch.zeros(self.gates.shape[1])

    @staticmethod
    def relax_toward(structure: torch.Tensor, x0: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``x0 [B, N, 3] + gates[i] * (structure [N, 3] aligned onto x0 - x0)`` for each frame: ``[B, P, N, 3]``."""
        ref = kabsch_align(structure[None].expand_as(x0).to(x0.dtype), x0)
        return x0[:, None] + gates.to(x0.dtype)[None, :, None, None] * (ref - x0)[:, None]

    def tumble(self, pred: torch.Tensor, x0: torch.Tensor, x_hist: torch.Tensor, slot: torch.Tensor,
               mask: torch.Tensor | None = None, has_hist: torch.Tensor | None = None,
               spin: torch.Tensor | None = None) -> torch.Tensor:
        """``pred`` rotated about x0's centroid by ``spin[slot, i] * scale[i]`` times the rotation that took
        ``x_hist`` to ``x0``: the overall rotation seen over the last ``history`` frames, extrapolated."""
        spin = self.spin if spin is None else spin
        m = (torch.ones_like(x0[..., 0]) if mask is None else mask.to(x0.dtype))
        ok = (slot >= 0) & (torch.ones_like(slot, dtype=torch.bool) if has_hist is None else has_hist.bool())
        w = rotation_vector(kabsch_rotation(centred(x_hist, m)[0], centred(x0, m)[0], m))   # [B, 3] since x_hist
        g = spin[slot.clamp(min=0)] * self.scale * ok.to(x0.dtype)[:, None]             # [B, P]
        R = torch.linalg.matrix_exp(skew(g[..., None] * w[:, None]))                    # [B, P, 3, 3]
        c = ((x0 * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1))[:, None, None]   # [B, 1, 1, 3]
        return ((pred - c) @ R.transpose(-1, -2) + c) * m[:, None, :, None]

    def forward(self, pred: torch.Tensor, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                x_hist: torch.Tensor | None = None, has_hist: torch.Tensor | None = None) -> torch.Tensor:
        """A forecast ``[B, P, N, 3]`` (the network's) plus the relaxation, then, with tumbling and ``x_hist``,
        rotated by the extrapolated overall rotation."""
        ref, slot = self.aligned(x0, z, mask)
        keep = torch.where(slot >= 0, self.use_net[slot.clamp(min=0)], torch.ones_like(slot, dtype=torch.bool))
        pred = torch.where(keep[:, None, None, None], pred, x0[:, None].expand_as(pred))
        out = pred + self.relaxation(x0, z, mask, (ref, slot))
        if self.spin is not None and x_hist is not None:
            out = self.tumble(out, x0, x_hist, slot, mask, has_hist)
        return out

    @torch.no_grad()
    def fit_gates(self, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                  residual: torch.Tensor | None = None, batch_size: int = 4096) -> torch.Tensor:
        """Least-squares gates ``<d, y_i - x0 - r_i> / <d, d>`` per slot, frame and atom over windows (``d`` =
        aligned mean structure - x0, ``r`` = another model's displacement, if given); sets and returns them."""
        S, P, A = self.gates.shape
        num = torch.zeros(S, P, A, dtype=torch.float64)
        den = torch.zeros(S, A, dtype=torch.float64)
        for i in range(0, len(x0), batch_size):
            sl = slice(i, i + batch_size)
            ref, slot = self.aligned(x0[sl], z[sl], mask[sl])
            keep = slot >= 0
            if not keep.any():
                continue
            d = (ref - x0[sl])[keep].double()                                   # [b, N, 3]
            y = (targets[sl] - x0[sl][:, None])[keep].double()                   # [b, P, N, 3]
            if residual is not None:
                y = y - residual[sl][keep].double()
            n = min(A, d.shape[1])
            num[:, :, :n].index_add_(0, slot[keep], (y * d[:, None]).sum(-1)[..., :n])
            den[:, :n].index_add_(0, slot[keep], (d * d).sum(-1)[..., :n])
        gates = torch.where(den[:, None] > 1e-12, num / den.clamp(min=1e-12)[:, None], torch.zeros_like(num))
        self.gates.copy_(gates.to(self.gates))
        return self.gates.detach().clone()

    @torch.no_grad()
    def fit_spin(self, base: torch.Tensor, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                 targets: torch.Tensor, x_hist: torch.Tensor, has_hist: torch.Tensor,
                 grid: torch.Tensor | None = None, batch_size: int = 2048) -> torch.Tensor:
        """Per slot and frame, the spin (from ``grid``, default 0 .. 1.5) whose rotation of the ``base`` forecast
        (network + relaxation) has the least squared error on the windows; sets and returns them."""
        grid = torch.linspace(0, 1.5, 31) if grid is None else grid
        S, P = self.spin.shape
        sse = torch.zeros(len(grid), S, P, dtype=torch.float64)
        for i in range(0, len(x0), batch_size):
            sl = slice(i, i + batch_size)
            _, slot = self.aligned(x0[sl], z[sl], mask[sl])
            keep = (slot >= 0) & has_hist[sl].bool()
            if not keep.any():
                continue
            args = (x0[sl][keep], x_hist[sl][keep], slot[keep], mask[sl][keep], None)
            m = mask[sl][keep][:, None, :, None].to(x0.dtype)
            for j, g in enumerate(grid):
                rotated = self.tumble(base[sl][keep], *args, spin=torch.full_like(self.spin, float(g)))
                err = (((rotated - targets[sl][keep]) ** 2) * m).sum((2, 3)).double()           # [b, P]
                sse[j].index_add_(0, slot[keep], err)
        best = grid[sse.argmin(0)]                                                            # [S, P]
        self.spin.copy_(best.to(self.spin))
        return self.spin.detach().clone()

    @torch.no_grad()
    def best_of(self, forecasts: list[torch.Tensor], x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                targets: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Per slot, the index of the forecast to use, ``forecasts`` ordered from the simplest: a later one replaces
        the current choice only if it lowers the mean squared error of the windows given by more than one standard
        error of the paired per-window difference (the one-standard-error rule: a tie on a few validation
        trajectories keeps the simpler model). Slots without windows: 0. ``[S]`` long."""
        _, slot = self.aligned(x0, z, mask)
        err = torch.stack([window_sse(f, targets, mask) for f in forecasts])                # [K, B]
        out = torch.zeros(len(self.gates), dtype=torch.long)
        for s in torch.unique(slot[slot >= 0]).tolist():
            e = err[:, slot == s]
            g = None if groups is None else groups[slot == s]
            best = 0
            for j in range(1, len(forecasts)):
                if better_beyond_noise(e[best], e[j], g):
                    best = j
            out[s] = best
        return out

    @torch.no_grad()
    def keep_spin_that_validates(self, base: torch.Tensor, x0: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                                 targets: torch.Tensor, x_hist: torch.Tensor, has_hist: torch.Tensor,
                                 groups: torch.Tensor | None = None) -> list[int]:
        """Zero the spin of every slot whose fitted rate does not lower the squared error of the *validation*
        windows given by more than one standard error (:func:`better_beyond_noise`; ``base``: their forecast
        without rotation): a molecule whose training trajectory happened to tumble steadily (ethanol's) must not
        carry that into simulations where it does not; ``groups``: the windows' trajectories). Returns the slots
        switched off."""
        _, slot = self.aligned(x0, z, mask)
        keep = (slot >= 0) & has_hist.bool()
        off = []
        if not keep.any():
            return off
        rotated = self.tumble(base[keep], x0[keep], x_hist[keep], slot[keep], mask[keep], None)
        err_on = window_sse(rotated, targets[keep], mask[keep])
        err_off = window_sse(base[keep], targets[keep], mask[keep])
        for s in torch.unique(slot[keep]).tolist():
            rows = slot[keep] == s
            g = None if groups is None else groups[keep][rows]
            if not better_beyond_noise(err_off[rows], err_on[rows], g):
                self.spin[s] = 0
                off.append(int(s))
        return off


def better_beyond_noise(current: torch.Tensor, candidate: torch.Tensor, groups: torch.Tensor | None = None) -> bool:
    """Whether per-window errors ``candidate`` are lower than ``current`` (paired, same windows) by more than one
    standard error of the mean difference.

    ``groups`` [n] (the windows' trajectories): windows of one trajectory overlap in time and share its regime (a
    molecule that tumbles in one 6-ps run and not in the next), so they are not independent evidence. With three or
    more groups the standard error is that of the per-trajectory mean differences (a choice must hold across
    trajectories, not across many windows of one); with fewer, of the windows."""
    d = (current - candidate).double()
    if groups is not None:
        ids, inverse = torch.unique(groups, return_inverse=True)
        if len(ids) >= 3:
            d = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, inverse, d) / torch.bincount(
                inverse, minlength=len(ids)).double()
    if len(d) < 2:
        return bool(d.sum() > 0)
    return bool(d.mean() > d.std() / len(d) ** 0.5)


def _rmsd_to(ref: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Aligned RMSD of one ``[n, 3]`` structure to each of ``[F, n, 3]`` frames."""
    a = kabsch_align(ref[None].expand_as(frames), frames)
    return ((a - frames) ** 2).sum(-1).mean(-1).sqrt()


def conformer_means(frames: torch.Tensor, max_conformers: int = 4, split_rmsd: float = 0.3,
                    min_fraction: float = 0.02, iterations: int = 3) -> list[tuple[torch.Tensor, float]]:
    """Mean structures of the conformer families among ``[F, n, 3]`` frames, with each family's trust radius.

    Families are seeded by farthest-point sampling in aligned RMSD (a new seed only while some frame is more than
    ``split_rmsd`` Angstrom from every seed, at most ``max_conformers``), refined by assigning frames to the
    nearest mean and re-averaging; families with fewer than ``min_fraction`` of the frames are dropped. The trust
    radius is 1.25x the 99th percentile of the members' RMSD to their mean.
    """
    x = frames - frames.mean(1, keepdim=True)
    seeds = [x[0]]
    dist = _rmsd_to(x[0], x)
    while len(seeds) < max_conformers and float(dist.max()) > split_rmsd:
        seeds.append(x[int(dist.argmax())])
        dist = torch.minimum(dist, _rmsd_to(seeds[-1], x))
    means = seeds
    for _ in range(iterations):
        d = torch.stack([_rmsd_to(mu, x) for mu in means])                      # [K, F]
        owner = d.argmin(0)
        keep = [k for k in range(len(means)) if (owner == k).float().mean() >= min_fraction]
        means = [mean_structure(x[owner == k]) for k in keep]
    d = torch.stack([_rmsd_to(mu, x) for mu in means])
    owner = d.argmin(0)
    out = []
    for k, mu in enumerate(means):
        member = d[k, owner == k]
        if len(member):
            out.append((mu, 1.25 * float(torch.quantile(member, 0.99))))
    return out


def structures_from_windows(windows: dict, molecules: int, max_frames: int = 2000, max_conformers: int = 4
                            ) -> list[tuple[int, torch.Tensor, torch.Tensor, float]]:
    """``(molecule slot, mean structure, atomic numbers, trust radius)`` per conformer family of each molecule's
    (at most ``max_frames`` evenly spaced) input frames ``x0``. Call with the *training* windows only."""
    out = []
    for k in range(molecules):
        rows = torch.nonzero(windows["molecule"] == k).flatten()
        if len(rows) == 0:
            continue
        rows = rows[torch.linspace(0, len(rows) - 1, min(max_frames, len(rows))).long()]
        n = int(windows["mask"][rows[0]].sum())
        z = windows["z"][rows[0], :n].clone()
        for mu, radius in conformer_means(windows["x0"][rows, :n].double(), max_conformers):
            out.append((k, mu.float(), z, radius))
    return out


def _prior_error(entries: list, train: dict, val: dict, atoms: int, n_targets: int) -> dict[int, torch.Tensor]:
    """Per molecule, the per-window squared errors on ``val`` of the prior alone (x_t + gated relaxation) with
    ``entries``, gates fitted on ``train``."""
    prior = MeanStructurePrior(len(entries), atoms, n_targets)
    prior.set_structures([(mu, z, radius) for _, mu, z, radius in entries])
    prior.fit_gates(train["x0"], train["z"], train["mask"], train["targets"])
    out = {}
    with torch.no_grad():
        for k in sorted({e[0] for e in entries}):
            rows = val["molecule"] == k
            if not rows.any():
                continue
            x0, mask = val["x0"][rows], val["mask"][rows]
            out[k] = window_sse(x0[:, None] + prior.relaxation(x0, val["z"][rows], mask), val["targets"][rows], mask)
    return out


def trajectory_groups(windows: dict) -> torch.Tensor | None:
    """``[S]``: one id per (molecule, trajectory) of the windows, for :func:`better_beyond_noise`; None for windows
    without trajectory ids (the paper's protocol, or windows featurized before they were recorded)."""
    if "trajectory" not in windows:
        return None
    return windows["molecule"].long() * (int(windows["trajectory"].max()) + 1) + windows["trajectory"].long()


def choose_structures(train: dict, val: dict | None, molecules: int, max_conformers: int = 4,
                      max_frames: int = 2000) -> tuple[list, dict[int, int]]:
    """The prior's structures with, per molecule, one mean structure, or one per conformer family when that
    forecasts the *validation* windows better by more than one standard error (the prior alone, gates fitted on
    training windows): a molecule that switches conformers within the horizon (malonaldehyde) is better served
    by one mean over them, one that keeps its conformer (salicylic acid's carboxyl) by the family's own. Without validation windows, or
    with ``max_conformers=1``: families. Returns ``(entries, {molecule: families used})``."""
    families = structures_from_windows(train, molecules, max_frames, max_conformers)
    if val is None or max_conformers == 1 or not len(val["x0"]):
        return families, {k: sum(1 for e in families if e[0] == k) for k in {e[0] for e in families}}
    single = structures_from_windows(train, molecules, max_frames, 1)
    atoms, P = train["x0"].shape[1], train["targets"].shape[1]
    err_f, err_s = _prior_error(families, train, val, atoms, P), _prior_error(single, train, val, atoms, P)
    groups = trajectory_groups(val)
    entries = []
    for k in sorted({e[0] for e in families}):
        g = None if groups is None else groups[val["molecule"] == k]
        use_single = k in err_s and k in err_f and not better_beyond_noise(err_s[k], err_f[k], g)
        entries += [e for e in (single if use_single else families) if e[0] == k]
    return entries, {k: sum(1 for e in entries if e[0] == k) for k in {e[0] for e in entries}}
