"""One training step of a MACE-like interaction block: Gaunt products vs e3nn tensor products at equal irreps.

What a user swapping e3nn for molgen's Gaunt products in an equivariant network would see end to end. Both
models have the same irreps (``C x (0e + 1o + 2e + ... + L)`` node features, spherical harmonics of the edge
directions up to L), the same radial basis and MLP width, the same readout and the same data; they differ only in
the two tensor products of the block:

* message ``m_ij = TP(h_j, Y(r_ij); w(r_ij))``, summed over the neighbours j of i (``A_i``);
* product basis of correlation 2, ``B_i = TP(A_i, A_i)``;
* then per-degree channel mixing of ``A + B``, the invariant channels -> an MLP -> an energy per molecule.

"gaunt" uses ``GauntConvolution`` (radial weights per channel and degree on its input and output, the paper's
rank-1 path weights) and ``GauntFeatureInteraction``; "e3nn" uses ``o3.TensorProduct`` with every parity-allowed
path ``l1 x l2 -> l3 <= L`` ("uvu" with per-edge weights from the radial MLP, as MACE does, and "uuu" with learned
weights per path for the product basis). For these irreps the allowed paths are the same for both (l1+l2+l3 even):
e3nn has a free weight per path, Gaunt rank-1 ones.

Data: the first QM9 molecules of molgen's embedded subset (DFT geometries with H), batches of ``--molecules``,
directed edges within 5 A. Step: forward, MSE of the energy to a fixed random target, backward, Adam. The two
models alternate step by step on the same batches; reported is the median process CPU time per step.

Usage:
    python scripts/bench_gaunt_block.py [--lmax 1 2 3 4 6] [--channels 32] [--molecules 16] [--steps 10]
        [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from e3nn import o3
from torch import nn

from molgen.data.qm9_sources import read_embedded
from molgen.nn.gaunt import GauntConvolution, GauntFeatureInteraction
from molgen.nn.radial import GaussianRBF

ELEMENTS = (1, 6, 7, 8, 9)
CUTOFF = 5.0
NUM_RADIAL = 8


def batches(n_mols: int, n_batches: int) -> list[dict]:
    """Batches of QM9 molecules: species, positions, directed edges within CUTOFF, molecule index per atom."""
    records = read_embedded(max_molecules=n_mols * n_batches)
    out = []
    for b in range(n_batches):
        z, pos, mol = [], [], []
        for i in range(b * n_mols, (b + 1) * n_mols):
            z.append(torch.as_tensor(records.atomic_numbers[i]))
            pos.append(torch.as_tensor(records.positions[i], dtype=torch.float32))
            mol.append(torch.full((len(z[-1]),), i - b * n_mols))
        z, pos, mol = torch.cat(z), torch.cat(pos), torch.cat(mol)
        d = torch.cdist(pos, pos)
        adj = (d < CUTOFF) & (mol[:, None] == mol[None, :]) & ~torch.eye(len(z), dtype=torch.bool)
        src, dst = adj.nonzero().T
        species = torch.tensor([ELEMENTS.index(int(a)) for a in z])
        out.append({"species": species, "pos": pos, "edge_index": torch.stack([src, dst]), "mol": mol,
                    "n_mols": n_mols, "target": torch.randn(n_mols)})
    return out


class DegreeLinear(nn.Module):
    """Channel mixing per degree on ``[N, C, (L+1)^2]`` (equivariant)."""

    def __init__(self, channels: int, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.weight = nn.Parameter(torch.randn(lmax + 1, channels, channels) / channels**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.einsum("ncm,cd->ndm", x[..., l * l : (l + 1) ** 2], self.weight[l])
                          for l in range(self.lmax + 1)], dim=-1)


class Block(nn.Module):
    """Embedding -> one interaction block (conv + correlation-2 product) -> energy per molecule."""

    def __init__(self, kind: str, channels: int, lmax: int, avg_neighbors: float) -> None:
        super().__init__()
        self.kind, self.channels, self.lmax = kind, channels, lmax
        self.avg_neighbors = avg_neighbors
        n = (lmax + 1) ** 2
        # initial node features: species embedding into every degree (a middle layer sees all degrees populated)
        self.embed = nn.Parameter(torch.randn(len(ELEMENTS), channels, n) / n**0.5)
        self.rbf = GaussianRBF(NUM_RADIAL, 0.0, CUTOFF, cosine_cutoff=True)
        if kind == "gaunt":
            self.conv = GauntConvolution(channels, lmax, lmax, lmax, NUM_RADIAL, hidden=64,
                                         avg_neighbors=avg_neighbors)
            self.product = GauntFeatureInteraction(channels, lmax, lmax)
        else:
            irreps = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
            sh = o3.Irreps.spherical_harmonics(lmax)
            paths = [(i1, i2, i3) for i1 in range(lmax + 1) for i2 in range(lmax + 1) for i3 in range(lmax + 1)
                     if abs(i1 - i2) <= i3 <= i1 + i2 and (i1 + i2 + i3) % 2 == 0]
            self.conv_tp = o3.TensorProduct(irreps, sh, irreps, [(a, b, c, "uvu", True) for a, b, c in paths],
                                            shared_weights=False, internal_weights=False)
            self.radial = nn.Sequential(nn.Linear(NUM_RADIAL, 64), nn.SiLU(), nn.Linear(64, self.conv_tp.weight_numel))
            self.product_tp = o3.TensorProduct(irreps, irreps, irreps, [(a, b, c, "uuu", True) for a, b, c in paths])
            self.irreps = irreps
        self.mix = DegreeLinear(channels, lmax)
        self.readout = nn.Sequential(nn.Linear(channels, 64), nn.SiLU(), nn.Linear(64, 1))

    def _to_e3nn(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, n] -> [N, sum_l C (2l+1)] (e3nn layout)
        return torch.cat([x[..., l * l : (l + 1) ** 2].reshape(x.shape[0], -1) for l in range(self.lmax + 1)], -1)

    def _from_e3nn(self, x: torch.Tensor) -> torch.Tensor:
        parts, start = [], 0
        for l in range(self.lmax + 1):
            size = self.channels * (2 * l + 1)
            parts.append(x[:, start : start + size].view(-1, self.channels, 2 * l + 1))
            start += size
        return torch.cat(parts, -1)

    def forward(self, batch: dict) -> torch.Tensor:
        src, dst = batch["edge_index"]
        vec = batch["pos"][dst] - batch["pos"][src]
        y = o3.spherical_harmonics(list(range(self.lmax + 1)), vec, normalize=True, normalization="integral")
        radial = self.rbf(vec.norm(dim=-1))
        h = self.embed[batch["species"]]  # [N, C, n]
        if self.kind == "gaunt":
            a = self.conv(h, y, radial, batch["edge_index"])
            b = self.product(a, a)
        else:
            hf = self._to_e3nn(h)
            msg = self.conv_tp(hf[src], y, self.radial(radial))
            af = torch.zeros_like(hf).index_add_(0, dst, msg) / self.avg_neighbors
            a, b = self._from_e3nn(af), self._from_e3nn(self.product_tp(af, af))
        out = self.mix(a + b)
        energy = self.readout(out[..., 0]).squeeze(-1)
        return torch.zeros(batch["n_mols"]).index_add_(0, batch["mol"], energy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lmax", type=int, nargs="*", default=[1, 2, 3, 4, 6])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--molecules", type=int, default=16, help="molecules per batch")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = batches(args.molecules, 4)
    atoms = statistics.mean(len(b["species"]) for b in data)
    edges = statistics.mean(b["edge_index"].shape[1] for b in data)
    print(f"# MACE-like block, one training step (forward, backward, Adam): {args.molecules} QM9 molecules per "
          f"batch ({atoms:.0f} atoms, {edges:.0f} directed edges within {CUTOFF} A), {args.channels} channels per "
          f"degree, torch threads {args.threads}; median process CPU time of {args.steps} interleaved steps")
    print("\n| L | gaunt params | e3nn params | gaunt s/step | e3nn s/step | e3nn / gaunt | "
          "gaunt: share in the two products |")
    print("|---|---|---|---|---|---|---|")
    for lmax in args.lmax:
        models = {kind: Block(kind, args.channels, lmax, edges / atoms) for kind in ("gaunt", "e3nn")}
        opts = {kind: torch.optim.Adam(m.parameters(), lr=1e-3) for kind, m in models.items()}
        times = {kind: [] for kind in models}
        for step in range(args.steps + 2):
            batch = data[step % len(data)]
            for kind in (models if step % 2 == 0 else list(models)[::-1]):
                t0 = time.process_time()
                opts[kind].zero_grad()
                loss = (models[kind](batch) - batch["target"]).square().mean()
                loss.backward()
                opts[kind].step()
                if step >= 2:
                    times[kind].append(time.process_time() - t0)
        share = _product_share(models["gaunt"], data[0])
        g, e = (statistics.median(times[k]) for k in ("gaunt", "e3nn"))
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
        print(f"| {lmax} | {params['gaunt']:,} | {params['e3nn']:,} | {g:.3f} | {e:.3f} | {e / g:.1f}x | "
              f"{100 * share:.0f} % |", flush=True)


def _product_share(model: Block, batch: dict) -> float:
    """Fraction of the Gaunt model's forward+backward CPU time spent inside gaunt_tensor_product (profiler)."""
    from torch.profiler import profile

    with profile() as prof:
        model(batch).square().sum().backward()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    inside = sum(e.self_cpu_time_total for e in events if e.key in ("_GridGaunt", "_GridGauntBackward"))
    return inside / total if total else float("nan")


if __name__ == "__main__":
    main()
