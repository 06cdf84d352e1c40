"""The user-facing CPDiffusion-SS object returned by ``molgen.load``: ``designer.sample(template, n)``.

It bundles the trained :class:`~molgen.models.cpdiffusion_ss.model.CPDiffusionSS`, the offline SS oracle
(:class:`~molgen.models.cpdiffusion_ss.ss_predictor.SSPredictor`), the SS-composition baseline and the training sequences
(for novelty). ``sample`` reads a template (PDB/mmCIF path or :class:`~molgen.data.proteins.Protein`), runs DSSP,
builds its SS graph, generates sequences and returns Biopython ``SeqRecord`` objects whose ``annotations`` hold
the template's SS plan, the oracle's predicted SS of the design and the consistency scores.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from molgen.data.proteins import Protein, element_string, load_template, ss_elements, ss_graph
from molgen.data.ss_dataset import collate, graph_item
from molgen.errors import DataError
from molgen.evaluation.ss_metrics import ss_composition_mse, ss_identity
from molgen.models.cpdiffusion_ss.model import CPDiffusionSS
from molgen.data.protein_tokens import decode as decode_tokens
from molgen.models.cpdiffusion_ss.composition_baseline import SSCompositionSampler
from molgen.models.cpdiffusion_ss.ss_predictor import SSPredictor

METHODS = ("cpdiffusion_ss", "vanilla_decoder", "ss_composition")
ORACLE_NAME = "in-project sequence->SS3 predictor (conv + BiGRU, trained on the training chains' DSSP)"


class CPDiffusionSSDesigner:
    """Generate sequences that follow a template's secondary-structure plan.

    Args:
        model: the trained CPDiffusion-SS model.
        oracle: sequence -> SS3 predictor used to score designs (None: no scores).
        composition: the SS-composition baseline.
        train_sequences: training sequences (novelty reference).
        info: checkpoint metadata (``checkpoint["molgen"]``).
    """

    def __init__(self, model: CPDiffusionSS, oracle: SSPredictor | None = None,
                 composition: SSCompositionSampler | None = None, train_sequences: list[str] | None = None,
                 info: dict | None = None):
        self.model = model.eval()
        self.oracle = oracle.eval() if oracle is not None else None
        self.composition = composition
        self.train_sequences = list(train_sequences or [])
        self.info = info or {}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "CPDiffusionSSDesigner":
        return designer_from_checkpoint(ckpt)

    def eval(self) -> "CPDiffusionSSDesigner":
        """Inference mode for every network (the designer is always used in inference)."""
        self.model.eval()
        if self.oracle is not None:
            self.oracle.eval()
        return self

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"CPDiffusionSSDesigner({n / 1e6:.2f}M parameters, oracle={'yes' if self.oracle else 'no'})"

    @torch.no_grad()
    def sample(self, template: "str | Path | Protein", n: int = 10, method: str = "cpdiffusion_ss",
               sampler: str = "ddpm", steps: int | None = None, temperature: float = 1.0,
               max_len: int | None = None, batch_size: int = 50, seed: int = 0, chain: str | None = None,
               length_range: tuple[float, float] | None = (0.8, 1.2)):
        """Design ``n`` sequences for ``template``.

        Args:
            template: a PDB/mmCIF/json path or a :class:`Protein`.
            n: number of sequences.
            method: ``cpdiffusion_ss`` | ``vanilla_decoder`` (decoder fed random Gaussian latents, the paper's
                baseline) | ``ss_composition`` (the composition baseline) | ``proteinmpnn_<vanilla|soluble>_t<T>``
                (ProteinMPNN's published weights at sampling temperature T; :mod:`molgen.models.proteinmpnn`).
            sampler: ``ddpm`` (500-step ancestral, the paper's) or ``ddim`` (``steps`` steps, faster).
            temperature: decoder sampling temperature (paper: 1.0).
            max_len: cap on designed length (with ``length_range=None``; default 2 x template length + 20, at
                most 1024).
            seed: random seed (same seed, same designs).
            chain: the chain of a multi-chain template file (default: the first protein chain).
            length_range: designs are ``lo`` to ``hi`` times the template's length, by construction (the decoder
                may not end a sequence before ``lo`` and ends it at ``hi``); None: free length up to ``max_len``.
                The SS-composition baseline then takes the template's element lengths. A plan-aligned model
                (``plan_decoder``) always designs the template's length, element by element.

        Returns:
            ``list[Bio.SeqRecord.SeqRecord]``; ``annotations`` has ``template``, ``method``, ``ss_plan``
            (template element string), ``template_ss3``, ``predicted_ss3`` and ``predicted_elements`` (oracle),
            ``ss_identity`` and ``ss_composition_mse`` (x100) against the plan, ``oracle``, ``seconds``.
        """
        from Bio.Seq import Seq
        from Bio.SeqRecord import SeqRecord

        from molgen.models import proteinmpnn

        mpnn = proteinmpnn.parse_method(method)
        if method not in METHODS and mpnn is None:
            raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)} or "
                             "proteinmpnn_<vanilla|soluble>_t<temperature>)")
        if n < 1:
            raise DataError(f"n={n}: ask for at least one sequence")
        protein = load_template(template, chain)
        g = ss_graph(protein)
        min_len = 1
        if length_range is not None:
            lo, hi = (float(v) for v in length_range)
            if not 0 < lo <= hi:
                raise DataError(f"length_range={tuple(length_range)}: need 0 < lo <= hi")
            if not lo <= 1.0 <= hi and self.model.decoder.plan and method in ("cpdiffusion_ss", "vanilla_decoder"):
                raise DataError(f"length_range={tuple(length_range)}: this model designs the template's length "
                                "element by element (plan_decoder); give a range that includes 1 or None")
            min_len, max_len = max(1, int(np.ceil(lo * len(protein)))), max(1, int(np.floor(hi * len(protein))))
        max_len = max_len or min(1024, 2 * len(protein) + 20)
        t0 = time.time()
        gen = torch.Generator().manual_seed(seed)
        seqs: list[str] = []
        if mpnn is not None:  # the baseline: ProteinMPNN on the template's backbone (its length by nature)
            seqs = proteinmpnn.load(mpnn[0]).sample(protein.coords, n, temperature=mpnn[1], seed=seed,
                                                     batch_size=batch_size)
        elif method == "ss_composition":
            if self.composition is None:
                raise DataError("this checkpoint has no SS-composition baseline statistics")
            lengths = [len(e) for e in ss_elements(protein.ss3)] if length_range is not None else None
            if lengths is not None and len(lengths) != len(g.ss):
                lengths = None  # the graph merged or dropped elements: fall back to drawn lengths
            seqs = self.composition.sample(g.ss, n, seed, lengths)
        else:
            scale = float(self.model.hparams.pos_scale)
            item = graph_item(g.ss, g.pos, g.edge_index, g.edge_attr, scale, g.lengths)
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                batch = collate([item] * b)
                if method == "cpdiffusion_ss":
                    latents = self.model.sample_latents(batch, sampler, steps, gen)
                else:
                    z = torch.randn((len(batch["elem_ss"]), self.model.hparams.latent_dim), generator=gen)
                    latents = self.model.destandardize(z)
                ids = self.model.decode(batch, latents, max_len=max_len, temperature=temperature, generator=gen,
                                        min_len=min_len)
                seqs += [decode_tokens(s) for s in ids]
        seconds = time.time() - t0
        predicted = self.oracle.predict_ss3(seqs) if self.oracle is not None else [None] * len(seqs)
        plan = g.ss
        records = []
        for i, (s, ss) in enumerate(zip(seqs, predicted)):
            ann = {"template": protein.name, "method": method, "sampler": sampler if method == "cpdiffusion_ss" else "",
                   "ss_plan": plan, "template_ss3": protein.ss3, "template_sequence": protein.sequence, "length": len(s), "seconds": seconds / len(seqs)}
            if ss is not None:
                elements = element_string(ss)
                ann.update(predicted_ss3=ss, predicted_elements=elements, oracle=ORACLE_NAME,
                           ss_identity=ss_identity(elements, plan),
                           ss_composition_mse=100 * ss_composition_mse(elements, plan))
            records.append(SeqRecord(Seq(s), id=f"{protein.name}_{method}_{i}", description=f"plan={plan}",
                                     annotations=ann))
        return records


def designer_from_checkpoint(ckpt: dict) -> CPDiffusionSSDesigner:
    """Rebuild the designer from a weights-only checkpoint dict (what :func:`molgen.checkpoint.build_model` calls)."""
    info = ckpt["molgen"]
    model = CPDiffusionSS(**info["model_args"])
    # an ESM2-based model stores no encoder weights: they come from the local fair-esm cache
    model.load_state_dict(ckpt["state_dict"], strict=not info["model_args"].get("esm_model"))
    oracle = None
    if "oracle_state_dict" in ckpt:
        oracle = SSPredictor(**info.get("oracle_args", {}))
        oracle.load_state_dict(ckpt["oracle_state_dict"])
    comp = info.get("composition")
    composition = SSCompositionSampler(np.array(comp["aa_freq"]), np.array(comp["length_hist"])) if comp else None
    return CPDiffusionSSDesigner(model, oracle, composition, info.get("train_sequences"), info)
