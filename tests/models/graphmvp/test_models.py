"""GIN, SchNet encoder, GraphMVP losses and fine-tuning, on real molecules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from molgen.data.conformers import etkdg_pairs
from molgen.data.moleculenet import GIN_FEATURES, labelled_graphs, load_moleculenet, scaffold_split, smiles_to_graph
from molgen.models.graphmvp.pretrainer import GraphMVPPretrainer, ebm_nce, mask_atoms
from molgen.models.graphmvp.classifier import MoleculeClassifier, mean_roc_auc, roc_auc
from molgen.nn.gin import GIN
from molgen.nn.schnet import DenseRadiusGraph, SchNetEncoder
from molgen.testing import assert_invariant

DRUGS = ["CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
         "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O", "c1ccc2c(c1)ccc1ccccc12",
         "CCN(CC)C(=O)[C@H]1CN(C)[C@@H]2Cc3c[nH]c4cccc(c34)C2=C1", "NC(=O)c1cccnc1"]


@pytest.fixture(scope="module")
def pairs():
    torch.manual_seed(0)
    got, report = etkdg_pairs(DRUGS * 2, progress=False)
    assert report.kept == len(DRUGS) * 2
    return got


def test_schnet_invariant_to_rotation_translation_and_reflection(pairs):
    torch.manual_seed(0)
    net = SchNetEncoder(hidden_channels=32, num_filters=16, num_interactions=2, num_gaussians=20).double().eval()
    batch = Batch.from_data_list(pairs[:4])
    out = net(batch.z, batch.pos.double(), batch.batch)
    # rotations and rotoreflections, one shift per molecule, atoms shuffled inside each molecule (float64)
    assert_invariant(net, (batch.z, batch.pos.double(), batch.batch), ("scalar", "position", "batch"),
                     translation_scale=5.0, seed=1, atol=1e-4, rtol=1e-5)
    # but not invariant to deforming the geometry
    moved = batch.pos.double().clone()
    moved[0] += 0.5
    assert not torch.allclose(out[0], net(batch.z, moved, batch.batch)[0], atol=1e-4)


def test_dense_radius_graph_matches_pairwise_reference(pairs):
    batch = Batch.from_data_list(pairs[:3])
    ei, w = DenseRadiusGraph(cutoff=4.0)(batch.pos, batch.batch)
    ref = {(j, i) for i in range(batch.num_nodes) for j in range(batch.num_nodes)
           if i != j and batch.batch[i] == batch.batch[j] and (batch.pos[i] - batch.pos[j]).norm() < 4.0}
    assert {tuple(e) for e in ei.T.tolist()} == ref
    assert torch.allclose(w, (batch.pos[ei[0]] - batch.pos[ei[1]]).norm(dim=-1))


@pytest.mark.parametrize("readout", ["mean", "layers-sum", "layers-mean-sum"])
def test_gin_graph_embedding_invariant_to_atom_order(readout):
    torch.manual_seed(0)
    gin = GIN(num_layers=3, emb_dim=32, **GIN_FEATURES).eval()
    g = smiles_to_graph(DRUGS[1])

    def embed(x, edge_index):
        h = g.clone()
        h.x, h.edge_index = x, edge_index
        return gin.embed_graph(Batch.from_data_list([h]), readout)

    assert embed(g.x, g.edge_index).shape == (1, gin.readout_dim(readout))
    # atoms relabelled (features and edge list together), nothing geometric
    assert_invariant(embed, (g.x, g.edge_index), ("scalar", "edge_index"), rotations="none", translate=False,
                     atol=1e-5, rtol=1e-5)


def test_gin_readouts_pool_what_they_say():
    """Two copies of a molecule in one graph (no bond between them, eval-mode BatchNorm): the mean readout is the
    molecule's, the all-layer sum twice the molecule's, and its last block the last layer's sum."""
    torch.manual_seed(0)
    gin = GIN(num_layers=3, emb_dim=32, **GIN_FEATURES).eval()
    one, two = (Batch.from_data_list([smiles_to_graph(s)]) for s in (DRUGS[0], f"{DRUGS[0]}.{DRUGS[0]}"))
    with torch.no_grad():
        assert torch.allclose(gin.embed_graph(two), gin.embed_graph(one), atol=1e-5)
        total = gin.embed_graph(one, "layers-sum")
        assert torch.allclose(gin.embed_graph(two, "layers-sum"), 2 * total, atol=1e-4)
        assert torch.allclose(total[:, -32:] / one.num_nodes, gin.embed_graph(one), atol=1e-5)
        both = gin.embed_graph(one, "layers-mean-sum")
        assert torch.allclose(both, torch.cat([total / one.num_nodes, total], -1), atol=1e-5)
    with pytest.raises(ValueError, match="readout='max'"):
        gin.embed_graph(one, "max")


def test_ebm_nce_closed_form():
    x = torch.eye(4)  # orthonormal: positive similarity 1, negative (next molecule) 0
    t = 0.2
    expected = 0.5 * (math.log1p(math.exp(-1 / t)) + math.log(2))  # BCE(1/T, 1) and BCE(0, 0), averaged
    assert ebm_nce(x, x.clone(), t).item() == pytest.approx(expected, rel=1e-5)
    assert ebm_nce(x, x.roll(1, 0), t) > ebm_nce(x, x, t)  # mismatched views cost more


def test_mask_atoms_masks_at_least_one_per_molecule():
    b = Batch.from_data_list([smiles_to_graph(s) for s in DRUGS[:3]])
    x, idx = mask_atoms(b.x, b.batch, 0.15)
    assert set(b.batch[idx].tolist()) == {0, 1, 2}
    assert (x[idx, 0] == 119).all() and (x[~torch.isin(torch.arange(len(x)), idx)] == b.x[
        ~torch.isin(torch.arange(len(x)), idx)]).all()


@pytest.mark.parametrize("ssl", [None, "attr_mask", "context_pred"])
def test_pretraining_losses_decrease(pairs, ssl):
    torch.manual_seed(0)
    model = GraphMVPPretrainer(num_layers=2, emb_dim=32, schnet_filters=16, schnet_interactions=2,
                               schnet_gaussians=20, ssl_2d=ssl, lr=3e-3)
    opt = model.configure_optimizers()
    assert opt.param_groups[1]["lr"] == pytest.approx(3e-4)  # SchNet and 3D->2D VRR at lr * 0.1
    batch = Batch.from_data_list(pairs)

    def evaluate() -> dict:
        torch.manual_seed(123)  # same VRR noise and masks for the before/after comparison
        with torch.no_grad():
            model.eval()
            out = {k: float(v) for k, v in model.losses(batch).items()}
            model.train()
        return out

    # the terms that must drop (the 2D SSL term moves the GIN's representation, VRR's detached target, so with
    # an SSL term VRR is not one of them); trained until they all have, checked every 10 steps, within a generous
    # cap: the losses do not fall monotonically (context_pred rises again for a while), so a fixed step count made
    # the outcome depend on the seed and on torch's thread count
    terms = ["ebm_nce", "vrr"] if ssl is None else ["ebm_nce", ssl, "loss"]
    before = evaluate()
    for step in range(1, 401):
        loss = model.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and all((after := evaluate())[k] < before[k] for k in terms):
            break
    assert after["ebm_nce"] < before["ebm_nce"], (step, before, after)
    if ssl is None:
        assert after["vrr"] < before["vrr"]
    else:  # the 2D SSL term moves the GIN's representation, VRR's (detached) target; its own term must drop
        assert after[ssl] < before[ssl]
        assert after["loss"] < before["loss"]


def test_roc_auc_matches_pairwise_reference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)  # rounded: ties happen
    pos, neg = s[y == 1], s[y == 0]
    ref = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(y, s) == pytest.approx(ref)
    assert math.isnan(roc_auc(np.ones(5), s[:5]))
    labels = np.array([[1, np.nan], [0, 1], [1, 1]], dtype=float)
    assert mean_roc_auc(labels, np.array([[0.9, 0.0], [0.1, 0.5], [0.8, 0.2]]))[1] == 1  # task 2: one class


def test_finetuning_on_bbbp_beats_majority_class():
    """Fine-tuning beats a majority-class predictor on BBBP's scaffold test split: ROC-AUC > 0.6 and a log-loss
    below that of predicting the training prevalence for everyone.

    Trained epoch by epoch until both hold, within a generous cap: after a fixed 3 epochs ROC-AUC ranged
    0.53-0.62 and the log-loss 0.82-1.17x the majority's depending on the seed and on torch's thread count
    (it used to be pinned to one thread); the criterion is typically met after one or two epochs."""
    torch.manual_seed(0)
    data = load_moleculenet("bbbp")
    train, _, test = scaffold_split(data.smiles)
    model = MoleculeClassifier(1, num_layers=3, emb_dim=64, dropout=0.2)
    opt = model.configure_optimizers()
    loader = DataLoader(labelled_graphs(data, train), batch_size=64, shuffle=True)
    y = data.labels[test, 0]
    # a majority-class predictor scores every molecule alike: ROC-AUC 0.5, and its best log-loss is that of
    # predicting the training prevalence for everyone (accuracy at a fixed 0.5 threshold depends on calibration
    # after a few epochs, so it is not the test)
    prevalence = float(np.nanmean(data.labels[train, 0]))
    majority = -np.mean(y * np.log(prevalence) + (1 - y) * np.log(1 - prevalence))
    history = []
    for epoch in range(1, 16):
        for b in loader:
            loss = model.masked_bce(model(b), b.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        probs = model.predict([data.smiles[i] for i in test]).numpy()[:, 0]
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        auc, log_loss = roc_auc(y, probs), -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        history.append((epoch, round(auc, 3), round(float(log_loss / majority), 3)))
        if auc > 0.6 and log_loss < majority:
            break
    assert auc > 0.6, history
    assert log_loss < majority, history
