"""Throughput of PropMolFlow on this machine's CPU: training (molecules/s, steps/s) and sampling (molecules/s at
100 steps) for the small default model and the paper-size model, on QM9-sized molecules built with RDKit.

    OMP_NUM_THREADS=1 python scripts/bench_propmolflow.py [--threads 1] [--batch 64] [--train-steps 5]
                                                          [--sample-n 20] [--steps 100] [--only small|paper]

Prints one table; the ratio column compares each model with the small one measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.loader import DataLoader

from molgen.data.graph import GraphDataset, MoleculeVocab
from molgen.data.molecule import Molecule
from molgen.models.propmolflow.model import GVP_BACKBONE, PropMolFlow

# QM9-like molecules (C, N, O, F; 9 heavy atoms at most), ~18 atoms with hydrogens on average
SMILES = ["CC(C)C(=O)OC", "OCC1CC1C#N", "CC1=CC(=O)NC1", "FC(F)C(O)CN", "CC(=O)NC(C)CO", "C1CC2CC1C2O",
          "N#CC1(O)CCC1", "COC(=O)C(C)N", "CC(C)(C)CC=O", "OC1COC(C)C1", "CC#CC(O)CC", "NC(=O)C1CCO1"]


def molecules(n: int) -> list[Molecule]:
    out = []
    for k in range(n):
        m = Chem.AddHs(Chem.MolFromSmiles(SMILES[k % len(SMILES)]))
        Chem.Kekulize(m, clearAromaticFlags=True)
        AllChem.EmbedMolecule(m, randomSeed=k)
        out.append(Molecule.from_rdkit(m))
    return out


def bench(name: str, args: dict, data: GraphDataset, batch: int, train_steps: int, sample_n: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = PropMolFlow(**args)
    model.sampler.fit(data.num_atoms())
    opt = model.configure_optimizers()
    loader = iter(DataLoader(data, batch_size=batch, shuffle=True))
    b = next(loader)
    loss = model(b)["loss"]  # warm-up
    loss.backward()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(train_steps):
        loss = model(b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s, train_cpu = (time.perf_counter() - t0) / train_steps, (time.process_time() - c0) / train_steps
    sizes = data.num_atoms()[:sample_n].tolist()
    t0, c0 = time.perf_counter(), time.process_time()
    model.sample_molecules(sizes, steps=steps, batch_size=sample_n, progress=False)
    sample_s, sample_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "step_s": train_s,
            "step_cpu": train_cpu, "train_mol_s": batch / train_s, "sample_mol_s": sample_n / sample_s,
            "sample_mol_cpu_s": sample_n / sample_cpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--sample-n", type=int, default=20)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--only", choices=["small", "paper"], default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = GraphDataset.from_molecules(molecules(max(a.batch, a.sample_n)), MoleculeVocab())
    small_gvp = {**GVP_BACKBONE, "v_dim": 8, "n_layers": 4}
    configs = {"small": dict(s_dim=64, edge_dim=32, rbf_dim=16, backbone=small_gvp), "paper": {}}
    rows = [bench(k, v, data, a.batch, a.train_steps, a.sample_n, a.steps) for k, v in configs.items()
            if a.only in (None, k)]
    ref = rows[0]
    print(f"CPU threads {a.threads}, batch {a.batch}, mean atoms {float(data.num_atoms().float().mean()):.1f}, "
          f"sampling {a.sample_n} molecules x {a.steps} Euler steps")
    print("wall-clock rates, and in brackets per CPU-second of this process (robust to a shared machine)")
    print(f"{'model':<7}{'params':>11}{'s/step':>16}{'train mol/s':>18}{'sample mol/s':>18}"
          f"{'x slower than ' + ref['model']:>22}")
    for r in rows:
        print(f"{r['model']:<7}{r['params']:>11,}{r['step_s']:>8.3f} ({r['step_cpu']:>5.2f})"
              f"{r['train_mol_s']:>10.1f} ({a.batch / r['step_cpu']:>5.1f})"
              f"{r['sample_mol_s']:>10.2f} ({r['sample_mol_cpu_s']:>5.2f}){r['step_cpu'] / ref['step_cpu']:>22.1f}")


if __name__ == "__main__":
    main()
