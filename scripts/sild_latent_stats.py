"""How hard is a SiLD autoencoder's latent space for its prior? Per-class statistics of the latents and how the
decoder tolerates noise on them, on QM9 test molecules the model never trained on.

    python scripts/sild_latent_stats.py runs/<run>/train/last.ckpt [--n 128] [--source embedded|qm9pack]

Prints, from the posterior means of ``--n`` test molecules:
* how far the latent positions sit from the atoms (the decoder has to undo this shift);
* each atom type's mean / spread of the invariant atom latents, and each bond class's mean / spread / posterior
  sigma of the pair latents (classes whose means lie within each other's spread can only be told apart by the
  decoder from the rest of the molecule, which the prior then has to generate exactly);
* decoding accuracy (atom types, every atom pair's bond class, true bonds) and position RMSD when Gaussian noise
  of std s is added to every latent, the imprecision the prior's samples can afford.
"""
from __future__ import annotations

import argparse

import torch
from torch_geometric.data import Batch

from molgen.checkpoint import load_model
from molgen.data.graph import GraphDataset
from molgen.data.qm9 import load_qm9
from molgen.nn.graph import upper_edges
from molgen.nn.molecule_net import complete_graph


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:+.2f}" for v in values) + "]"


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt", help="a SiLD checkpoint with edge latents (model=sild_flow)")
    ap.add_argument("--n", type=int, default=128, help="test molecules")
    ap.add_argument("--source", default="embedded", help="QM9 source: embedded (offline) or qm9pack (full QM9)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model(args.ckpt).eval()
    if not getattr(model, "edge_dim", 0):
        raise SystemExit(f"{args.ckpt}: a SiLD model with edge latents is needed (model=sild_flow)")
    data = load_qm9({"source": args.source, "max_molecules": None if args.source != "embedded" else 600},
                    progress=False)
    mols = data.splits["test"][: args.n]
    graphs = GraphDataset.from_molecules(mols, model.vocab, ())
    b = Batch.from_data_list([graphs[i] for i in range(len(graphs))])
    ei = complete_graph(b.batch, b.num_graphs)[0]
    pairs = ei[:, upper_edges(ei)]
    mu_x, mu_h, ls_x, ls_h = model.encoder(model.atom_features(b.atom_type, b.charge), b.pos, ei, b.batch,
                                           b.num_graphs)
    z_e, labels, _ = model.encode_edges(b, pairs, mu_h, sample=False)
    _, log_sigma_e = model.edge_encoder(labels, mu_h, pairs)
    print(f"{len(mols)} QM9 test molecules ({args.source}), {b.num_nodes} atoms, {pairs.shape[1]} atom pairs")
    print(f"latent positions: mean distance from the atoms {float((mu_x - b.pos).norm(dim=-1).mean()):.3f} A, "
          f"posterior sigma {float(ls_x.exp().mean()):.3f}")
    print(f"atom latents: spread per channel {_fmt(mu_h.std(0).tolist())}, "
          f"posterior sigma {_fmt(ls_h.exp().mean(0).tolist())}")
    from rdkit.Chem import GetPeriodicTable

    symbols = [GetPeriodicTable().GetElementSymbol(int(z)) for z in model.vocab.elements]
    for t in sorted(set(b.atom_type.tolist())):
        m = b.atom_type == t
        print(f"  atom {symbols[t]:>2} (n={int(m.sum()):4d}): mean {_fmt(mu_h[m].mean(0).tolist())} "
              f"spread {_fmt(mu_h[m].std(0).tolist())}")
    print("pair latents (bond class 0 = no bond):")
    for c in sorted(set(labels.tolist())):
        m = labels == c
        spread = z_e[m].std(0).tolist() if int(m.sum()) > 1 else [0.0] * z_e.shape[1]
        print(f"  bond {c} (n={int(m.sum()):5d}): mean {_fmt(z_e[m].mean(0).tolist())} spread {_fmt(spread)} "
              f"posterior sigma {_fmt(log_sigma_e[m].exp().mean(0).tolist())}")
    print("| noise std on every latent | atom types | bond class, all pairs | true bonds | position RMSD (A) |")
    print("|---|---|---|---|---|")
    for s in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
        gen = torch.Generator().manual_seed(1)
        zx = mu_x + s * torch.randn(mu_x.shape, generator=gen)
        zh = mu_h + s * torch.randn(mu_h.shape, generator=gen)
        ze = z_e + s * torch.randn(z_e.shape, generator=gen)
        pos, type_logits, _ = model.decode(zx, zh, ei, b.batch, b.num_graphs)
        bonds = model.decode_bonds(ze, zh, zx, pairs).argmax(-1)
        types = float((type_logits.argmax(-1) == b.atom_type).float().mean())
        every = float((bonds == labels).float().mean())
        true = float((bonds == labels)[labels > 0].float().mean())
        rmsd = float(((pos - b.pos) ** 2).sum(-1).mean().sqrt())
        print(f"| {s} | {100 * types:.2f} % | {100 * every:.2f} % | {100 * true:.2f} % | {rmsd:.3f} |")


if __name__ == "__main__":
    main()
