"""Small denoising run of GauntBackbone on RDKit-embedded QM9-like molecules, next to an EGNN baseline.

Task (the core of the coordinate part of molgen's generators): given atom types and coordinates with Gaussian
noise (sigma = 0.3 A, fresh each step), predict the unit noise per atom from the equivariant vector output.
Predicting zero scores a loss of 1. The script reports, per model: parameters, mean loss over the first and last
10 steps, whether any loss or gradient was NaN, and the median time per training step (forward+backward+Adam).

Molecules: 48 small C/N/O/F molecules (QM9-like: <= 9 heavy atoms) embedded with RDKit ETKDG + MMFF, with
hydrogens, in batches of 16 (about 230 atoms and 3,000 directed edges within 5 A per batch).

Usage:
    OMP_NUM_THREADS=1 python scripts/train_gaunt_demo.py [--steps 60] [--lmax 2 3]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch import nn
from tqdm import tqdm

from molgen.nn.gaunt import GauntBackbone

SMILES = [
    "CCO", "CC(=O)O", "c1ccncc1", "OCC#N", "CC1CC1O", "FC(F)C=O", "NC(=O)CO", "C1COC1", "CC(C)O", "CCN",
    "C#CCO", "CC(=O)N", "OC1COC1", "c1cc[nH]c1", "c1ccoc1", "CC(O)C#N", "NCC(=O)O", "CC1=CC=CC1", "OCCO",
    "CCOC=O", "C1CCNC1", "CC(F)(F)F", "N#CC#N", "CC(C)(C)O", "O=C1CCC1", "CN(C)C=O", "CC=CC=O", "c1ncncn1",
    "OC(=O)C=O", "CC12CC1C2", "NC1=NC=CO1", "CCC(=O)C", "OCC(O)CO", "CC#CC(O)C", "C1CC2CC1C2", "COC(C)=O",
    "CC(N)C(=O)O", "O=CC1CC1", "CNC(=O)N", "c1cnoc1", "FC1=CC=CN1", "CC1OC1C", "N#CCC#N", "OC1CCOC1",
    "CC(=O)C#C", "C=CC(=O)N", "CCCC#N", "O=C1NC=CC1",
]
ELEMENTS = (1, 6, 7, 8, 9)
CUTOFF = 5.0


def embed_all() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(one-hot types [n, 5], centred positions [n, 3]) per molecule."""
    out = []
    for i, smi in enumerate(SMILES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        if AllChem.EmbedMolecule(mol, randomSeed=i) != 0:
            continue
        AllChem.MMFFOptimizeMolecule(mol)
        pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float32)
        z = torch.tensor([ELEMENTS.index(a.GetAtomicNum()) for a in mol.GetAtoms()])
        out.append((nn.functional.one_hot(z, len(ELEMENTS)).float(), pos - pos.mean(0)))
    return out


def collate(mols) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.cat([m[0] for m in mols])
    pos = torch.cat([m[1] for m in mols])
    batch = torch.cat([torch.full((len(m[0]),), i) for i, m in enumerate(mols)])
    return x, pos, batch


def radius_graph(pos: torch.Tensor, batch: torch.Tensor, r: float = CUTOFF) -> torch.Tensor:
    close = (torch.cdist(pos, pos) < r) & (batch[:, None] == batch[None, :])
    close.fill_diagonal_(False)
    return close.nonzero().t()  # [2, E] (source, target)


class EGNN(nn.Module):
    """E(n)-equivariant GNN baseline (Satorras et al., ICML 2021) with the backbone interface; vectors are the
    summed coordinate updates."""

    def __init__(self, in_channels: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_channels, hidden)
        self.edge = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                                nn.SiLU()) for _ in range(num_layers))
        self.coord = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
                                   for _ in range(num_layers))
        self.node = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
                                  for _ in range(num_layers))

    def forward(self, h, pos, edge_index, edge_attr=None, batch=None):
        src, dst = edge_index
        h = self.embed(h)
        x = pos
        for edge, coord, node in zip(self.edge, self.coord, self.node):
            rel = x[dst] - x[src]
            m = edge(torch.cat([h[dst], h[src], rel.pow(2).sum(-1, keepdim=True)], -1))
            x = x + torch.zeros_like(x).index_add_(0, dst, rel * coord(m)) / 10.0
            h = h + node(torch.cat([h, torch.zeros_like(h).index_add_(0, dst, m)], -1))
        return h, (x - pos)[:, None, :]


def train(name: str, model: nn.Module, mols, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, times, nan = [], [], False
    for step in tqdm(range(steps), desc=name, leave=False):
        idx = torch.randperm(len(mols))[:16]
        x, clean, batch = collate([mols[i] for i in idx])
        noise = torch.randn_like(clean)
        noisy = clean + 0.3 * noise
        edge_index = radius_graph(noisy, batch)
        t0 = time.perf_counter()
        _, vec = model(x, noisy, edge_index, None, batch)
        loss = (vec[:, 0] - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        nan |= any(not torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        nan |= not math.isfinite(losses[-1])
    return {"model": name, "params": sum(p.numel() for p in model.parameters()),
            "loss_first10": statistics.mean(losses[:10]), "loss_last10": statistics.mean(losses[-10:]),
            "nan": nan, "step_ms": 1e3 * statistics.median(times[2:] or times),
            "atoms_per_batch": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lmax", type=int, nargs="*", default=[2, 3])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mols = embed_all()
    x, pos, batch = collate(mols[:16])
    print(f"# {len(mols)} RDKit-embedded QM9-like molecules; batch of 16 ~ {len(x)} atoms, "
          f"{radius_graph(pos, batch).shape[1]} edges; {args.steps} steps; torch threads {args.threads}")
    runs = [train("EGNN", EGNN(5, args.hidden * 2, args.layers), mols, args.steps)]
    for lmax in args.lmax:
        model = GauntBackbone(5, 8, hidden_channels=args.hidden, lmax=lmax, num_layers=args.layers, num_vectors=1)
        runs.append(train(f"Gaunt lmax={lmax}", model, mols, args.steps))
    print("\n| model | params | loss first 10 | loss last 10 | NaN | ms / step |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['model']} | {r['params']:,} | {r['loss_first10']:.3f} | {r['loss_last10']:.3f} | "
              f"{'yes' if r['nan'] else 'no'} | {r['step_ms']:.0f} |")


if __name__ == "__main__":
    main()
