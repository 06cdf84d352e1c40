"""Throughput of PropMolFlow on this machine's CPU: training (molecules/s, steps/s) and sampling (molecules/s at
100 and at 20 steps) for the small default model, the small model with self-conditioning (the shipped
propmolflow-qm9's recipe) and the paper-size model, on QM9-sized molecules built with RDKit.

    python scripts/bench_propmolflow.py [--threads 2] [--batch 64] [--train-steps 5] [--sample-n 20]
                                        [--steps 100,20] [--only small|small_sc|paper]

Prints one table; the ratio column compares each model's training step with the small one's in the same run.
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


def bench(name: str, args: dict, data: GraphDataset, batch: int, train_steps: int, sample_n: int,
          steps: list[int]) -> dict:
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
    sampling = {}
    for n_steps in steps:
        t0, c0 = time.perf_counter(), time.process_time()
        model.sample_molecules(sizes, steps=n_steps, batch_size=sample_n, progress=False)
        sampling[n_steps] = (sample_n / (time.perf_counter() - t0), sample_n / (time.process_time() - c0))
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "step_s": train_s,
            "step_cpu": train_cpu, "train_mol_s": batch / train_s, "sampling": sampling}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--sample-n", type=int, default=20)
    p.add_argument("--steps", default="100,20", help="comma-separated integration step counts")
    p.add_argument("--only", choices=["small", "small_sc", "paper"], default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = GraphDataset.from_molecules(molecules(max(a.batch, a.sample_n)), MoleculeVocab())
    small_gvp = {**GVP_BACKBONE, "v_dim": 8, "n_layers": 4}
    small = dict(s_dim=64, edge_dim=32, rbf_dim=16, backbone=small_gvp)
    configs = {"small": small, "small_sc": {**small, "self_condition": True}, "paper": {}}
    steps = [int(x) for x in str(a.steps).split(",")]
    rows = [bench(k, v, data, a.batch, a.train_steps, a.sample_n, steps) for k, v in configs.items()
            if a.only in (None, k)]
    ref = rows[0]
    print(f"CPU threads {a.threads}, batch {a.batch}, mean atoms {float(data.num_atoms().float().mean()):.1f}, "
          f"sampling {a.sample_n} molecules with {', '.join(map(str, steps))} Euler steps")
    print("wall-clock rates, and in brackets per CPU-second of this process (robust to a shared machine)")
    head = "".join(f"{'mol/s @' + str(k):>18}" for k in steps)
    print(f"{'model':<9}{'params':>11}{'s/step':>16}{'train mol/s':>18}{head}{'step x ' + ref['model']:>16}")
    for r in rows:
        cols = "".join(f"{r['sampling'][k][0]:>10.2f} ({r['sampling'][k][1]:>5.2f})" for k in steps)
        print(f"{r['model']:<9}{r['params']:>11,}{r['step_s']:>8.3f} ({r['step_cpu']:>5.2f})"
              f"{r['train_mol_s']:>10.1f} ({a.batch / r['step_cpu']:>5.1f}){cols}"
              f"{r['step_cpu'] / ref['step_cpu']:>16.2f}")


if __name__ == "__main__":
    main()
