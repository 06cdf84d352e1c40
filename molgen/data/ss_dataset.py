"""Tensors for CPDiffusion-SS training: one item per protein (tokens, SS elements, SS graph) and their collation.

An item holds the sequence tokens, the per-residue 3-state SS, the element index of each residue, and the SS
graph (element types, centred element centroids divided by ``pos_scale``, edges, 1/distance). :func:`collate`
pads the sequences and concatenates the graphs PyG-style (``batch`` vector, offset ``edge_index``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from molgen.data.proteins import SS3, Protein, ss_graph
from molgen.data.protein_tokens import BOS, EOS, PAD, encode


def protein_item(p: Protein, pos_scale: float = 1.0, features: torch.Tensor | None = None) -> dict:
    """Tensors of one protein (its ``ss8`` must be assigned); ``features`` ``(L, F)``: per-residue features
    computed beforehand (e.g. by ProteinMPNN's structure encoder), kept as the item's ``features``."""
    g = ss_graph(p)
    pos = g.pos - g.pos.mean(axis=0, keepdims=True)
    extra = {}
    if features is not None:
        if len(features) != len(p.sequence):
            raise ValueError(f"{p.name}: {len(features)} feature rows for {len(p.sequence)} residues")
        extra["features"] = torch.as_tensor(features, dtype=torch.float32)                # (L, F)
    return {**extra,
        "name": p.name,
        "tokens": torch.tensor(encode(p.sequence), dtype=torch.long),                      # (L,)
        "ss_res": torch.tensor([SS3.index(c) for c in p.ss3], dtype=torch.long),          # (L,)
        "element": torch.from_numpy(np.repeat(np.arange(g.num_nodes), g.lengths)),        # (L,)
        "elem_ss": torch.tensor([SS3.index(c) for c in g.ss], dtype=torch.long),          # (N,)
        "pos": torch.from_numpy(pos / pos_scale).float(),                                  # (N, 3)
        "edge_index": torch.from_numpy(g.edge_index),                                      # (2, E)
        "edge_attr": torch.from_numpy(g.edge_attr).float(),                                # (E,)
    }


def graph_item(ss: str, pos: np.ndarray, edge_index: np.ndarray, edge_attr: np.ndarray, pos_scale: float,
               lengths: np.ndarray | None = None) -> dict:
    """An item with only the SS graph (for sampling from a template); ``lengths``: residues per element (the
    plan of a plan-aligned decoder), kept as ``elem_len``."""
    pos = pos - pos.mean(axis=0, keepdims=True)
    extra = {} if lengths is None else {"elem_len": torch.as_tensor(np.asarray(lengths), dtype=torch.long)}
    return {**extra, "elem_ss": torch.tensor([SS3.index(c) for c in ss], dtype=torch.long),
            "pos": torch.from_numpy(pos / pos_scale).float(),
            "edge_index": torch.from_numpy(np.asarray(edge_index)).long(),
            "edge_attr": torch.from_numpy(np.asarray(edge_attr)).float()}


def position_scale(proteins: list[Protein]) -> float:
    """Mean per-axis standard deviation of centred element centroids over the proteins (paper's normalisation)."""
    stds = []
    for p in proteins:
        pos = ss_graph(p).pos
        if len(pos) > 1:
            stds.append(pos.std(axis=0).mean())
    return float(np.mean(stds)) if stds else 1.0


def crop_item(item: dict, max_residues: int, generator: torch.Generator | None = None) -> dict:
    """A random window of whole consecutive SS elements with at most ``max_residues`` residues.

    Keeps every element complete (one element longer than the window is kept whole), so the pooled latents
    and the decoder targets of a crop are those of real elements; the SS sub-graph keeps the edges inside it.
    """
    n_res = len(item["tokens"])
    if n_res <= max_residues:
        return item
    lengths = torch.bincount(item["element"], minlength=len(item["elem_ss"]))
    first = int(torch.randint(0, len(lengths), (1,), generator=generator))
    last, total = first, int(lengths[first])
    while last + 1 < len(lengths) and total + int(lengths[last + 1]) <= max_residues:
        last += 1
        total += int(lengths[last])
    while first > 0 and total + int(lengths[first - 1]) <= max_residues:
        first -= 1
        total += int(lengths[first])
    r0 = int(lengths[:first].sum())
    r1 = r0 + total
    src, dst = item["edge_index"]
    keep = (src >= first) & (src <= last) & (dst >= first) & (dst <= last)
    out = dict(item)
    out.update(tokens=item["tokens"][r0:r1], ss_res=item["ss_res"][r0:r1], element=item["element"][r0:r1] - first,
               elem_ss=item["elem_ss"][first:last + 1], pos=item["pos"][first:last + 1],
               edge_index=item["edge_index"][:, keep] - first, edge_attr=item["edge_attr"][keep])
    if "latents" in item:
        out["latents"] = item["latents"][first:last + 1]
    if "features" in item:
        out["features"] = item["features"][r0:r1]
    return out


class ProteinSSDataset(Dataset):
    """A list of protein items; ``latents`` (per protein ``(N, D)``) can be attached for diffusion training.

    Args:
        items: from :func:`protein_item`.
        crop: if set, each access returns a random window of whole elements of at most ``crop`` residues
            (:func:`crop_item`; used for the sequence phases, to bound the attention cost on a CPU).
    """

    def __init__(self, items: list[dict], crop: int | None = None):
        self.items, self.crop = items, crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return crop_item(self.items[i], self.crop) if self.crop else self.items[i]


def collate(items: list[dict]) -> dict:
    """Batch items. Shapes (B proteins, L max length, N total elements, E total edges):

    tokens/ss_res ``(B, L)`` (PAD / -100 padded), mask ``(B, L)``, element ``(B, L)`` global element index
    (-1 on padding), dec_in/dec_out ``(B, L+1)`` decoder input (``<bos>`` + seq) and target (seq + ``<eos>``,
    -100 padded), elem_ss ``(N,)``, pos ``(N, 3)``, batch ``(N,)``, edge_index ``(2, E)``, edge_attr ``(E,)``,
    latents ``(N, D)`` and features ``(B, L, F)`` (zero padded) if the items have them.
    """
    out: dict = {"names": [it.get("name", "") for it in items]}
    offsets = np.cumsum([0] + [len(it["elem_ss"]) for it in items])
    if "tokens" in items[0]:
        B, L = len(items), max(len(it["tokens"]) for it in items)
        tokens = torch.full((B, L), PAD, dtype=torch.long)
        ss_res = torch.full((B, L), -100, dtype=torch.long)
        element = torch.full((B, L), -1, dtype=torch.long)
        dec_in = torch.full((B, L + 1), PAD, dtype=torch.long)
        dec_out = torch.full((B, L + 1), -100, dtype=torch.long)
        for b, it in enumerate(items):
            n = len(it["tokens"])
            tokens[b, :n] = it["tokens"]
            ss_res[b, :n] = it["ss_res"]
            element[b, :n] = it["element"] + int(offsets[b])
            dec_in[b, 0] = BOS
            dec_in[b, 1:n + 1] = it["tokens"]
            dec_out[b, :n] = it["tokens"]
            dec_out[b, n] = EOS
        out.update(tokens=tokens, mask=tokens != PAD, ss_res=ss_res, element=element, dec_in=dec_in, dec_out=dec_out)
        if "features" in items[0]:
            features = torch.zeros(B, L, items[0]["features"].shape[-1])
            for b, it in enumerate(items):
                features[b, :len(it["features"])] = it["features"]
            out["features"] = features
    out["elem_ss"] = torch.cat([it["elem_ss"] for it in items])
    out["pos"] = torch.cat([it["pos"] for it in items])
    out["batch"] = torch.cat([torch.full((len(it["elem_ss"]),), b, dtype=torch.long) for b, it in enumerate(items)])
    out["edge_index"] = torch.cat([it["edge_index"] + int(offsets[b]) for b, it in enumerate(items)], dim=1)
    out["edge_attr"] = torch.cat([it["edge_attr"] for it in items])
    if "latents" in items[0]:
        out["latents"] = torch.cat([it["latents"] for it in items])
    if "elem_len" in items[0]:
        out["elem_len"] = torch.cat([it["elem_len"] for it in items])
    return out
