r"""SiLD: SE(3)-invariant latent diffusion for 3D molecules (GeoLDM-style), and its EDM-like ablation.

GeoLDM (Xu et al., ICML 2023, https://arxiv.org/abs/2305.01140) in two phases:

1. **Autoencoder.** An equivariant encoder maps a molecule (positions, atom types, formal charges) to one latent
   point per atom, an equivariant position :math:`z_x \in \mathbb R^3` (zero centre of mass) and ``k`` invariant
   scalars :math:`z_h`; a decoder maps latents back to positions, types and charges. Loss:
   :math:`\|\hat x - x\|^2 + \mathrm{CE}(\text{types}) + \mathrm{CE}(\text{charges}) + \beta\,\mathrm{KL}(q\|\mathcal N(0, I))`
   with GeoLDM's :math:`\beta = 0.01`. Unlike the released GeoLDM (whose encoder stays random and frozen; its
   issue #3), the encoder is trained. A :class:`~molgen.models.sild.nets.BondHead` learns bond orders from
   (types, charges, geometry) on the training molecules, with positions jittered so it tolerates decoded
   geometry; it turns any decoded molecule into a bonded RDKit molecule.
2. **Latent diffusion.** :class:`~molgen.generative.equivariant_diffusion.EquivariantDiffusion` (EDM:
   ``polynomial_2``, 1000 steps, epsilon prediction) on posterior samples of the frozen encoder, with an
   equivariant denoiser.

``encoder=None`` is the ablation: the same diffusion directly on raw per-atom features (scaled one-hot types
and charges, EDM's representation), decoded by argmax; the same bond head assigns bonds. With ``raw_bonds``
(flow prior, GVP denoiser) the ablation generates the bonds too, as scaled one-hot bond orders per atom pair: the
raw-feature twin of edge latents, so the latent's worth is measured with everything else equal.

Sampling (:meth:`SiLD.sample`): number of atoms (and target value, if conditional) from the training histograms
(:class:`molgen.conditioning.PropertySampler`), reverse diffusion, decode, bond head -> RDKit ``Mol`` objects.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from molgen.conditioning import PropertyEmbedding, PropertySampler, best_of_k, guided
from molgen.data.graph import MoleculeVocab, from_dense
from molgen.data.molecule import Molecule
from molgen.errors import CheckpointError, ConfigError
from molgen.generative.equivariant_diffusion import EquivariantDiffusion
from molgen.generative.equivariant_flow import EquivariantFlow
from molgen.generative.gaussian_path import centred_gaussian, remove_mean
from molgen.models.sild.nets import (BondDecoder, BondHead, EdgeLatentEncoder, EquivariantDenoiser, GVPLatentDenoiser,
                                     LatentDecoder)
from molgen.nn.graph import edge_bond_types, upper_edges
from molgen.nn.molecule_net import complete_graph
from molgen.spec import build

#: The default encoder: an EGNN posterior (GeoLDM's, one layer); ``hidden`` follows the model's ``ae_hidden``.
EGNN_ENCODER = {"_target_": "molgen.models.sild.nets.LatentEncoder", "n_layers": 1}
GAUNT_ENCODER = "molgen.models.sild.nets.GauntLatentEncoder"


def upgrade_args(args: dict) -> dict:
    """Constructor arguments recorded before the encoder was injected (``encoder="egnn"|"gaunt"|"none"``,
    ``encoder_layers`` and ``gaunt_*`` keys) in today's layout, with the encoder as a spec (or None)."""
    args = dict(args)
    name = args.get("encoder", "egnn")
    if name is None or isinstance(name, Mapping):
        return args
    layers = args.pop("encoder_layers", 1)
    gaunt = {k[len("gaunt_"):]: args.pop(k) for k in list(args) if k.startswith("gaunt_")}
    if name == "egnn":
        args["encoder"] = {**EGNN_ENCODER, "hidden": args.get("ae_hidden", 64), "n_layers": layers}
    elif name == "gaunt":
        renamed = {"lmax": "lmax", "hidden": "hidden", "layers": "n_layers", "correlation": "correlation"}
        args["encoder"] = {"_target_": GAUNT_ENCODER, **{renamed[k]: v for k, v in gaunt.items()}}
    elif name == "none":
        args["encoder"] = None
    else:
        raise ConfigError(f"model.encoder={name}: unknown encoder (choose from egnn, gaunt, none)")
    return args

PHASES = ("autoencoder", "diffusion")
PRIORS = ("diffusion", "flow")
DENOISERS = ("egnn", "gvp")


class SiLD(pl.LightningModule):
    """The SiLD model (both phases) as one LightningModule; :attr:`phase` picks what ``training_step`` trains.

    Args:
        vocab: :meth:`MoleculeVocab.as_dict` (QM9's by default).
        encoder: the equivariant encoder as a spec ``{"_target_": class path, **its arguments}``, built with the
            atom-feature size and ``latent_dim`` (default :data:`EGNN_ENCODER` at width ``ae_hidden``;
            ``molgen.models.sild.nets.GauntLatentEncoder`` with ``lmax``, ``hidden``, ``n_layers``,
            ``correlation`` for the Gaunt encoder; the decoder stays an EGNN), or None: the EDM-like ablation,
            diffusion on raw features.
        latent_dim: ``k`` invariant latent scalars per atom (GeoLDM: 1-2).
        ae_hidden, decoder_layers: autoencoder EGNN sizes (GeoLDM: 9-layer decoder).
        bond_hidden, bond_layers: bond head size.
        denoiser_hidden, denoiser_layers: denoiser EGNN size (EDM/GeoLDM: 256, 9).
        timesteps: diffusion steps ``T`` (1000).
        kl_weight: :math:`\\beta` (GeoLDM: 0.01).
        bond_noise: std (Angstrom) of the position jitter when training the bond head.
        feature_scale: scale of the one-hot features in the raw ablation (EDM: 0.25).
        property_name: conditioning property (one of :data:`molgen.conditioning.PROPERTIES`) or None.
        embedding, gaussian_expansion, property_mean, property_std: see :class:`PropertyEmbedding`.
        max_atoms: largest molecule of the atom-count histogram.
        lr: learning rate of the current phase (set by the train stage).
        prior: the latent generative process: ``diffusion`` (GeoLDM's: EDM, ``timesteps`` levels, epsilon
            prediction) or ``flow`` (:class:`~molgen.generative.equivariant_flow.EquivariantFlow`: straight-line
            flow matching with OT-aligned prior, endpoint prediction, 50-100 sampling steps).
        edge_latent_dim: ``d_e`` invariant latent scalars per atom pair (0: none, GeoLDM's layout). With edge
            latents the bonds are part of the latent point cloud: encoded from the bond orders
            (:class:`~molgen.models.sild.nets.EdgeLatentEncoder`), generated by the prior with the atoms and
            decoded by :class:`~molgen.models.sild.nets.BondDecoder` (the geometry-only bond head is not used).
            Needs ``prior=flow`` and ``denoiser=gvp``.
        raw_bonds: the raw ablation (``encoder=None``) with bonds in the generated point cloud: each atom pair
            carries its bond order one-hot, scaled by ``feature_scale``, flowed with the atoms and decoded by argmax
            (no bond head; needs ``prior=flow`` and ``denoiser=gvp``).
        self_condition: self-conditioning of the GVP flow prior (FlowMol3, as PropMolFlow's ``self_condition``):
            half of the training batches first predict the endpoint without gradients and feed it back
            (positions, node and pair latents; :class:`~molgen.nn.self_condition.SelfConditionInputs`); sampling
            feeds every step's prediction into the next at no extra network cost. Zero-initialised: warm-starting
            from a prior without it is exact.
        prior_lr_schedule, prior_lr_decay: the prior phase's learning rate over its steps
            (:func:`molgen.nn.lr_schedules.lr_schedule`): ``constant`` (GeoLDM's), ``cosine`` to zero, or ``wsd``
            (constant, then linear to zero over the last ``prior_lr_decay`` of ``trainer.diffusion.max_steps``).
        prior_latents: what the prior learns to generate: ``sample`` (GeoLDM's: a draw from the encoder's
            posterior) or ``mean`` (the posterior mean). With a small KL weight the channels the decoder does not use
            collapse to the prior (sigma ~ 1), and a draw makes them pure noise the prior must model; so do the
            pair latents of non-bonded pairs (``scripts/sild_latent_stats.py`` shows both). The decoder, trained
            with ``latent_noise``, reads means (and means plus that noise) losslessly.
        latent_noise: std of Gaussian noise added to every latent before decoding while the autoencoder trains, so
            the decoder tolerates the prior's imperfect samples (0: none).
        denoiser: the prior's network: ``egnn`` (EDM/GeoLDM's) or ``gvp``
            (:class:`~molgen.models.sild.nets.GVPLatentDenoiser`, PropMolFlow's trunk; ``prior=flow`` only).
        denoiser_v_dim, denoiser_edge_dim: the GVP denoiser's vector and edge channels.
        property_dropout: classifier-free guidance (Ho & Salimans 2022, as PropMolFlow's): in the prior's training,
            the property of this share of the molecules is replaced by a learned null embedding, so the prior also
            learns the unconditional distribution; sampling with ``guidance = w`` then follows ``u + w (c - u)`` of
            the two predictions (endpoints for the flow prior, noise for the diffusion prior). 0: no null embedding.
    """

    def __init__(self, vocab: dict | None = None, encoder: Mapping | None = EGNN_ENCODER, latent_dim: int = 2,
                 ae_hidden: int = 64, decoder_layers: int = 4, bond_hidden: int = 64, bond_layers: int = 2,
                 denoiser_hidden: int = 128, denoiser_layers: int = 6, timesteps: int = 1000, kl_weight: float = 0.01,
                 bond_noise: float = 0.05, feature_scale: float = 0.25, property_name: str | None = None,
                 embedding: str = "concatenate", gaussian_expansion: bool = False, property_mean: float = 0.0,
                 property_std: float = 1.0, max_atoms: int = 29, lr: float = 1e-3, prior: str = "diffusion",
                 edge_latent_dim: int = 0, latent_noise: float = 0.0, denoiser: str = "egnn", denoiser_v_dim: int = 8,
                 denoiser_edge_dim: int = 32, raw_bonds: bool = False, self_condition: bool = False,
                 prior_lr_schedule: str = "constant", prior_lr_decay: float = 0.2, prior_latents: str = "sample",
                 property_dropout: float = 0.0):
        super().__init__()
        if encoder is not None and not isinstance(encoder, Mapping):
            raise ConfigError(f"model.encoder={encoder}: not an encoder spec (a mapping with a _target_ class; "
                              "choose one with model/encoder=egnn|gaunt, or model=sild_raw for none)")
        if encoder is EGNN_ENCODER:
            encoder = {**EGNN_ENCODER, "hidden": ae_hidden}
        encoder = dict(encoder) if encoder is not None else None
        self.save_hyperparameters()
        self.hparams.encoder = encoder
        self.vocab = MoleculeVocab.from_dict(vocab) if vocab else MoleculeVocab()
        self.n_types, self.n_charges = self.vocab.n_atom_types, self.vocab.n_charges
        atom_dim = self.n_types + self.n_charges
        self.latent = encoder is not None
        self.feat_dim = latent_dim if self.latent else atom_dim
        if prior not in PRIORS:
            raise ConfigError(f"model.prior={prior}: choose from {', '.join(PRIORS)}")
        if prior_latents not in ("sample", "mean"):
            raise ConfigError(f"model.prior_latents={prior_latents}: choose from sample, mean")
        if denoiser not in DENOISERS:
            raise ConfigError(f"model.denoiser={denoiser}: choose from {', '.join(DENOISERS)}")
        if denoiser == "gvp" and prior != "flow":
            raise ConfigError("model.denoiser=gvp predicts endpoints: it needs model.prior=flow")
        if edge_latent_dim and (denoiser != "gvp" or not self.latent):
            raise ConfigError(f"model.edge_latent_dim={edge_latent_dim}: edge latents need an encoder and "
                              "model.denoiser=gvp (with model.prior=flow); the EGNN denoiser has no edge outputs")
        if raw_bonds and (self.latent or denoiser != "gvp"):
            raise ConfigError("model.raw_bonds=true is the raw ablation's bonds: it needs model.encoder=null and "
                              "model.denoiser=gvp (with model.prior=flow); with an encoder use model.edge_latent_dim")
        if not 0.0 <= property_dropout < 1.0:
            raise ConfigError(f"model.property_dropout={property_dropout}: must be in [0, 1)")
        if self_condition and denoiser != "gvp":
            raise ConfigError("model.self_condition=true feeds back the GVP flow prior's endpoint: it needs "
                              "model.denoiser=gvp (with model.prior=flow)")
        self.edge_latent_dim = int(edge_latent_dim)
        self.raw_bonds = bool(raw_bonds)
        #: invariant channels per atom pair in the generated point cloud (0: bonds come from the bond head)
        self.edge_dim = self.edge_latent_dim if self.latent else (self.vocab.n_bond_types if raw_bonds else 0)
        if self.latent:
            self.encoder = build(encoder, in_dim=atom_dim, latent_dim=latent_dim)
            self.decoder = LatentDecoder(latent_dim, self.n_types, self.n_charges, ae_hidden, decoder_layers)
        if self.edge_latent_dim:
            self.edge_encoder = EdgeLatentEncoder(self.vocab.n_bond_types, latent_dim, self.edge_latent_dim, ae_hidden)
            self.bond_decoder = BondDecoder(latent_dim, self.edge_latent_dim, self.vocab.n_bond_types, bond_hidden)
        elif not self.raw_bonds:
            self.bond_head = BondHead(atom_dim, self.vocab.n_bond_types, bond_hidden, bond_layers)
        prop = (PropertyEmbedding(property_name, denoiser_hidden, embedding, gaussian_expansion, property_mean,
                                  property_std, null_token=property_dropout > 0) if property_name else None)
        if denoiser == "gvp":
            self.denoiser = GVPLatentDenoiser(self.feat_dim, self.edge_dim, denoiser_hidden, denoiser_layers,
                                              denoiser_v_dim, denoiser_edge_dim, property_embedding=prop,
                                              self_condition=self_condition)
        else:
            self.denoiser = EquivariantDenoiser(self.feat_dim, denoiser_hidden, denoiser_layers, prop)
        self.diffusion = EquivariantDiffusion(timesteps)
        self.flow = EquivariantFlow() if prior == "flow" else None
        self.sampler = PropertySampler(max_atoms, conditional=property_name is not None)
        self.phase = "autoencoder"
        # a formal charge q is possible for element Z only if q <= Z (RDKit cannot even write H(+2))
        elements, charges = torch.tensor(self.vocab.elements), torch.tensor(self.vocab.charges)
        self.register_buffer("charge_allowed", charges.unsqueeze(0) <= elements.unsqueeze(1), persistent=False)
        self.property_column: int | None = None  # column of ``data.y`` holding the property (set for training)

    # ------------------------------------------------------------------ helpers
    @property
    def conditional(self) -> bool:
        return self.hparams.property_name is not None

    @property
    def property_name(self) -> str | None:
        """The conditioning property (None: unconditional), as PropMolFlow's ``property_name``."""
        return self.hparams.property_name

    def atom_features(self, atom_type: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        """One-hot types and charges ``[n, n_types + n_charges]``."""
        return torch.cat([F.one_hot(atom_type, self.n_types), F.one_hot(charge, self.n_charges)], -1).float()

    def _context(self, data) -> torch.Tensor | None:
        """The property per molecule ``[B]`` for the prior's loss; in training, ``property_dropout`` of it
        replaced by NaN (the null embedding: classifier-free guidance)."""
        if not self.conditional:
            return None
        if self.property_column is None:
            raise ConfigError("a conditional SiLD needs property_column set to train")
        value = data.y[:, self.property_column].float()
        p = float(self.hparams.get("property_dropout", 0.0))
        if p > 0 and self.training:
            value = value.masked_fill(torch.rand(value.shape, device=value.device) < p, float("nan"))
        return value

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "SiLD":
        """Rebuild a trained SiLD (autoencoder + latent diffusion) for sampling."""
        model = cls(**upgrade_args(ckpt["molgen"]["model_args"]))
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
        if missing or unexpected:
            raise CheckpointError(f"SiLD checkpoint does not match the model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")
        model.set_phase("diffusion")
        return model

    def set_phase(self, phase: str) -> None:
        """Select the trainable part: the autoencoder and bond head, or the denoiser."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase '{phase}' (choose from {', '.join(PHASES)})")
        self.phase = phase
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("denoiser.") == (phase == "diffusion"))

    # ------------------------------------------------------------------ autoencoder
    def encode(self, data, edge_index: torch.Tensor, sample: bool = True,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents ``(z_x [n,3], z_h [n,k])`` and the per-molecule-mean KL ``[B]`` (zeros without encoder)."""
        feats = self.atom_features(data.atom_type, data.charge)
        B = data.num_graphs
        if not self.latent:
            return data.pos, feats * self.hparams.feature_scale, data.pos.new_zeros(B)
        mu_x, mu_h, ls_x, ls_h = self.encoder(feats, data.pos, edge_index, data.batch, B)
        kl = 0.5 * ((mu_x ** 2).sum(-1) + 3 * torch.exp(2 * ls_x[:, 0]) - 3 - 6 * ls_x[:, 0])
        kl = kl + 0.5 * (mu_h ** 2 + torch.exp(2 * ls_h) - 1 - 2 * ls_h).sum(-1)     # [n]
        kl = data.pos.new_zeros(B).index_add_(0, data.batch, kl) / torch.bincount(data.batch, minlength=B)
        if not sample:
            return mu_x, mu_h, kl
        eps_x = centred_gaussian(data.batch, generator, B)
        eps_h = torch.randn(mu_h.shape, generator=generator).to(mu_h)
        return mu_x + torch.exp(ls_x) * eps_x, mu_h + torch.exp(ls_h) * eps_h, kl

    def encode_edges(self, data, pairs: torch.Tensor, z_h: torch.Tensor, sample: bool = True,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edge latents ``[P, d_e]`` of the atom pairs ``pairs [2, P]`` (``i < j``), their bond labels ``[P]`` and
        the per-molecule mean KL over pairs ``[B]`` (the raw ablation: scaled one-hot bond orders, KL 0)."""
        bonds = edge_bond_types(pairs, data.bond_index, data.bond_type, data.num_nodes)          # [P]
        if not self.latent:   # the raw ablation: scaled one-hot bond orders, exact
            feats = F.one_hot(bonds, self.vocab.n_bond_types).float() * self.hparams.feature_scale
            return feats, bonds, z_h.new_zeros(data.num_graphs)
        mu, log_sigma = self.edge_encoder(bonds, z_h, pairs)
        kl = 0.5 * (mu ** 2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum(-1)             # [P]
        eb, B = data.batch[pairs[0]], data.num_graphs
        kl = mu.new_zeros(B).index_add_(0, eb, kl) / torch.bincount(eb, minlength=B).clamp(min=1)
        if not sample:
            return mu, bonds, kl
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        return mu + torch.exp(log_sigma) * eps, bonds, kl

    def decode_bonds(self, z_e: torch.Tensor, z_h: torch.Tensor, z_x: torch.Tensor,
                     pairs: torch.Tensor) -> torch.Tensor:
        """Bond-order scores ``[P, n_bond_types]`` of the pairs ``pairs [2, P]`` from their pair channels: the bond
        decoder on edge latents, or the raw ablation's own one-hot channels (decoded by argmax)."""
        return self.bond_decoder(z_e, z_h, z_x, pairs) if self.latent else z_e

    @property
    def has_autoencoder(self) -> bool:
        """Whether the first phase has anything to train (the encoder/decoder, or the raw ablation's bond head)."""
        return self.latent or not self.raw_bonds

    def decode(self, z_x: torch.Tensor, z_h: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
               num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pos [n,3], type_logits [n,T], charge_logits [n,C])``; the ablation decodes by the feature blocks."""
        if self.latent:
            return self.decoder(z_x, z_h, edge_index, batch, num_graphs)
        return remove_mean(z_x, batch, num_graphs), z_h[:, :self.n_types], z_h[:, self.n_types:]

    def autoencoder_losses(self, data) -> dict[str, torch.Tensor]:
        """Reconstruction, KL and bond losses (means over the batch) and accuracies. Bonds: the geometry-only bond
        head on jittered true geometry, or, with edge latents, the bond decoder on the (noised) latents."""
        if not self.has_autoencoder:
            raise ConfigError("this SiLD (raw features with raw_bonds) has no autoencoder phase to train")
        edge_index = complete_graph(data.batch, data.num_graphs)[0]
        out: dict[str, torch.Tensor] = {}
        if self.latent:
            z_x, z_h, kl = self.encode(data, edge_index)
            if self.edge_latent_dim:
                pairs = edge_index[:, upper_edges(edge_index)]
                z_e, labels, kl_e = self.encode_edges(data, pairs, z_h)
                kl = kl + kl_e
            sd = float(self.hparams.latent_noise) if self.training else 0.0
            if sd > 0:   # the decoder learns to read latents as imperfect as the prior's samples
                z_x = z_x + sd * centred_gaussian(data.batch, None, data.num_graphs).to(z_x)
                z_h = z_h + sd * torch.randn_like(z_h)
                if self.edge_latent_dim:
                    z_e = z_e + sd * torch.randn_like(z_e)
            pos, type_logits, charge_logits = self.decode(z_x, z_h, edge_index, data.batch, data.num_graphs)
            out["pos"] = ((pos - data.pos) ** 2).sum(-1).mean()
            out["type"] = F.cross_entropy(type_logits, data.atom_type)
            out["charge"] = F.cross_entropy(charge_logits, data.charge)
            out["kl"] = kl.mean()
            out["type_acc"] = (type_logits.argmax(-1) == data.atom_type).float().mean()
        if self.edge_latent_dim:
            bond_logits = self.bond_decoder(z_e, z_h, z_x, pairs)
        else:
            jitter = torch.randn_like(data.pos) * self.hparams.bond_noise
            bond_logits = self.bond_head(self.atom_features(data.atom_type, data.charge), data.pos + jitter,
                                         edge_index)
            labels = edge_bond_types(edge_index, data.bond_index, data.bond_type, data.num_nodes)
        out["bond"] = F.cross_entropy(bond_logits, labels)
        out["bond_acc"] = (bond_logits.argmax(-1) == labels)[labels > 0].float().mean()
        total = out["bond"]
        if self.latent:
            total = total + out["pos"] + out["type"] + out["charge"] + self.hparams.kl_weight * out["kl"]
        out["loss"] = total
        return out

    @torch.no_grad()
    def reconstruction_metrics(self, loader) -> dict[str, float]:
        """Round-trip quality on a data loader with the posterior means: atom-type and charge accuracy, position
        RMSD (Angstrom, no alignment needed: the autoencoder is equivariant), molecules with every type right, and
        the bond head on the decoded molecule: class accuracy over all atom pairs and over the true bonds."""
        was = self.training
        self.eval()
        sums = dict(type=0.0, charge=0.0, sq=0.0, atoms=0, mol_types=0, mols=0, rmsd=0.0, bond=0.0, bonds=0,
                    true_bond=0.0, true_bonds=0)
        for data in loader:
            ei = complete_graph(data.batch, data.num_graphs)[0]
            z_x, z_h, _ = self.encode(data, ei, sample=False)
            pos, tl, cl = self.decode(z_x, z_h, ei, data.batch, data.num_graphs)
            ok = tl.argmax(-1) == data.atom_type
            sq = ((pos - data.pos) ** 2).sum(-1)
            B = data.num_graphs
            per_mol_sq = pos.new_zeros(B).index_add_(0, data.batch, sq) / torch.bincount(data.batch, minlength=B)
            wrong = torch.zeros(B, dtype=torch.long).index_add_(0, data.batch, (~ok).long())
            if self.edge_dim:   # bonds decoded from the pair channels (pairs i < j)
                pairs = ei[:, upper_edges(ei)]
                z_e, labels, _ = self.encode_edges(data, pairs, z_h, sample=False)
                bl = self.decode_bonds(z_e, z_h, z_x, pairs).argmax(-1)
            else:
                bl = self.bond_head(self.atom_features(tl.argmax(-1), cl.argmax(-1)), pos, ei).argmax(-1)
                labels = edge_bond_types(ei, data.bond_index, data.bond_type, data.num_nodes)
            sums["type"] += float(ok.sum()); sums["charge"] += float((cl.argmax(-1) == data.charge).sum())
            sums["sq"] += float(sq.sum()); sums["atoms"] += int(data.num_nodes)
            sums["rmsd"] += float(per_mol_sq.sqrt().sum()); sums["mols"] += B
            sums["mol_types"] += int((wrong == 0).sum())
            sums["bond"] += float((bl == labels).sum()); sums["bonds"] += int(labels.numel())
            sums["true_bond"] += float((bl == labels)[labels > 0].sum()); sums["true_bonds"] += int((labels > 0).sum())
        self.train(was)
        return {"atom_type_accuracy": sums["type"] / sums["atoms"], "charge_accuracy": sums["charge"] / sums["atoms"],
                "position_rmsd": (sums["sq"] / sums["atoms"]) ** 0.5, "position_rmsd_per_molecule": sums["rmsd"] / sums["mols"],
                "molecule_types_exact": sums["mol_types"] / sums["mols"], "edge_bond_accuracy": sums["bond"] / sums["bonds"],
                "bond_accuracy": sums["true_bond"] / max(sums["true_bonds"], 1)}

    # ------------------------------------------------------------------ diffusion
    def denoise(self, x_t, h_t, t, batch, num_graphs, context, edge_index=None):
        """The noise prediction on the complete graph (the
        :class:`~molgen.generative.equivariant_diffusion.Denoiser` protocol).

        :math:`\\hat\\epsilon = \\sigma_t z_t + f_\\theta(z_t, t)`: the network learns a residual on top of the exact
        prediction for standard-normal data. Near ``t = 1`` (:math:`\\alpha_T^2 = 10^{-5}`) the sampler divides
        prediction errors by :math:`\\alpha_t`, so :math:`\\hat\\epsilon` must equal :math:`z_t` almost exactly there;
        the skip term gives that from the first step instead of after long training. Equivariant: ``z_x`` is.
        """
        if edge_index is None:
            edge_index = complete_graph(batch, num_graphs)[0]
        schedule = self.diffusion.schedule
        sigma = schedule.sigma(schedule.level(t)).to(x_t.dtype)[batch].unsqueeze(-1)                # [n, 1]
        res_x, res_h = self.denoiser(x_t, h_t, t, batch, num_graphs, context, edge_index)
        return sigma * x_t + res_x, sigma * h_t + res_h

    def predict_endpoint(self, x_t, h_t, t, batch, num_graphs, context, edge_index=None, reverse=None, e_t=None,
                         self_cond=None):
        r"""The flow prior's endpoint prediction (the
        :class:`~molgen.generative.equivariant_flow.EndpointPredictor` protocol; ``t`` = flow time, 1 = data).

        EGNN denoiser: :math:`\hat z_1 = c(t)\,z_t + f_\theta(z_t, 1 - t)` with :math:`c(t) = t / ((1-t)^2 + t^2)`,
        the skip weight that is exact for unit-variance data (EDM's preconditioning for this path): the network
        learns a residual, and the denoiser sees the noise level ``1 - t`` as in the diffusion prior. GVP denoiser:
        its moved positions and its feature heads are the endpoints (PropMolFlow's parameterisation), with the
        edge latents' endpoint ``[P, d_e]`` as a third output when the model has them; ``self_cond`` = the previous
        prediction ``(x1, h1, e1)`` for a self-conditioned GVP denoiser (None: none yet)."""
        if edge_index is None:
            edge_index, reverse = complete_graph(batch, num_graphs)
        if isinstance(self.denoiser, GVPLatentDenoiser):
            x1, h1, e1 = self.denoiser(x_t, h_t, t, batch, num_graphs, context, edge_index, reverse, e_t,
                                       self_cond=self_cond)
            return (x1, h1) if e1 is None else (x1, h1, e1)
        c = (t / ((1 - t) ** 2 + t ** 2)).to(x_t.dtype)[batch].unsqueeze(-1)        # [n, 1]
        res_x, res_h = self.denoiser(x_t, h_t, 1 - t, batch, num_graphs, context, edge_index)
        return c * x_t + res_x, c * h_t + res_h

    def _flow_predictor(self, edge_index: torch.Tensor, reverse: torch.Tensor, feed_back: bool,
                        guidance: float = 1.0):
        """The flow's endpoint predictor on one batch's complete graph. Self-conditioned models: in training
        (``feed_back=False``) half of the calls first predict without gradients and feed that in; in sampling
        (``feed_back=True``) each call feeds in the previous call's prediction. ``guidance`` = w != 1 (sampling):
        ``u + w (c - u)`` of the conditional and the unconditional (null-embedding) endpoints, both from the same
        inputs; the guided endpoint is what is fed back."""
        sc_on = bool(self.hparams.get("self_condition"))
        last: list = [None]

        def endpoint(x_t, h_t, t, batch, num_graphs, context, e_t, sc):
            out = self.predict_endpoint(x_t, h_t, t, batch, num_graphs, context, edge_index, reverse, e_t,
                                        self_cond=sc)
            if guidance == 1.0:
                return out
            free = self.predict_endpoint(x_t, h_t, t, batch, num_graphs, torch.full_like(context, float("nan")),
                                         edge_index, reverse, e_t, self_cond=sc)
            return guided(out, free, guidance)

        def as_self_cond(out: tuple, n_pairs: int) -> tuple:
            x1, h1 = out[0].detach(), out[1].detach()
            e1 = out[2].detach() if len(out) > 2 else x1.new_zeros(n_pairs, 0)
            return x1, h1, e1

        def predictor(x_t, h_t, t, batch, num_graphs, context, e_t=None):
            if not sc_on:
                return endpoint(x_t, h_t, t, batch, num_graphs, context, e_t, None)
            n_pairs = int((edge_index[0] < edge_index[1]).sum())
            sc = last[0] if feed_back else None
            if not feed_back and bool(torch.rand(()) < 0.5):
                with torch.no_grad():
                    sc = as_self_cond(self.predict_endpoint(x_t, h_t, t, batch, num_graphs, context, edge_index,
                                                            reverse, e_t), n_pairs)
            out = endpoint(x_t, h_t, t, batch, num_graphs, context, e_t, sc)
            if feed_back:
                last[0] = as_self_cond(out, n_pairs)
            return out

        return predictor

    @torch.no_grad()
    def prior_targets(self, data, edge_index: torch.Tensor):
        """What the prior learns to generate for a batch: centred latent positions ``[n, 3]``, atom latents
        ``[n, k]``, pair latents ``[P, d_e]`` and their pairs ``[2, P]`` (``i < j``; both None without edge
        latents), drawn from the frozen encoder's posterior or its means (``prior_latents``)."""
        draw = self.hparams.get("prior_latents", "sample") == "sample"
        z_x, z_h, _ = self.encode(data, edge_index, sample=draw)
        z_x = remove_mean(z_x, data.batch, data.num_graphs)
        z_e = pairs = None
        if self.edge_dim:
            pairs = edge_index[:, upper_edges(edge_index)]
            z_e, _, _ = self.encode_edges(data, pairs, z_h, sample=draw)
        return z_x, z_h, z_e, pairs

    def diffusion_loss(self, data) -> torch.Tensor:
        """The latent prior's loss on the frozen encoder's latents (:meth:`prior_targets`), mean over the batch:
        EDM's L2 (``prior=diffusion``) or the flow's endpoint L2 (``prior=flow``; with edge latents, their endpoint
        L2 too)."""
        edge_index, reverse = complete_graph(data.batch, data.num_graphs)
        z_x, z_h, z_e, pairs = self.prior_targets(data, edge_index)

        def denoiser(x_t, h_t, t, batch, num_graphs, context):
            return self.denoise(x_t, h_t, t, batch, num_graphs, context, edge_index)

        if self.flow is not None:
            predictor = self._flow_predictor(edge_index, reverse, feed_back=False)
            return self.flow.loss(predictor, z_x, z_h, data.batch, data.num_graphs, self._context(data), e=z_e,
                                  edge_batch=None if pairs is None else data.batch[pairs[0]]).mean()
        return self.diffusion.loss(denoiser, z_x, z_h, data.batch, data.num_graphs, self._context(data)).mean()

    # ------------------------------------------------------------------ Lightning
    def _step(self, data, split: str) -> torch.Tensor:
        if self.phase == "autoencoder":
            losses = self.autoencoder_losses(data)
            for k, v in losses.items():
                self.log(f"{split}/{k}" if k == "loss" else f"{split}/ae_{k}", v, batch_size=data.num_graphs,
                         prog_bar=k in ("loss", "type_acc"))
            return losses["loss"]
        loss = self.diffusion_loss(data)
        self.log(f"{split}/loss", loss, batch_size=data.num_graphs, prog_bar=True)
        return loss

    def training_step(self, data, batch_idx: int) -> torch.Tensor:
        return self._step(data, "train")

    def validation_step(self, data, batch_idx: int) -> None:
        self._step(data, "val")

    def configure_optimizers(self):
        from molgen.nn.lr_schedules import lr_schedule

        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, amsgrad=True, weight_decay=1e-12)
        if self.phase != "diffusion":
            return opt
        return lr_schedule(opt, self.hparams.get("prior_lr_schedule", "constant"), self._trainer,
                           float(self.hparams.get("prior_lr_decay", 0.2)), option="model.prior_lr_schedule")

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_molecules(self, n_atoms: list[int], values: list[float] | None = None, steps: int | None = None,
                         sampler: str = "ancestral", seed: int = 0, batch_size: int = 100,
                         progress: bool = True, grid_power: float = 1.0, rerank: int = 1,
                         predictor=None, guidance: float = 1.0) -> list[Molecule]:
        """Generate one molecule per entry of ``n_atoms`` (deterministic given ``seed``).

        Args:
            n_atoms: atom count of each molecule.
            values: target property value per molecule (user units); required by a conditional model.
            steps: denoising steps (default: all ``T``; the flow prior: integration steps, default 100);
            sampler: ``ancestral`` or ``ddim`` (diffusion prior); ``euler`` or ``heun`` (flow prior; the
            diffusion samplers' names mean Euler there).
            seed: seeds every random draw; batch_size: molecules denoised together.
            grid_power: the flow prior's time grid :math:`t_k = 1 - (1 - k/K)^p` (1: uniform; > 1: finer steps
                near the data); the diffusion prior takes 1 only.
            rerank: candidates drawn per molecule (conditional models; :func:`molgen.conditioning.best_of_k`): the
                one ``predictor`` puts closest to the target is kept; ``rerank`` times the sampling cost.
            predictor: a property regressor for the model's property trained on the generator's half (e.g.
                ``molgen.load("propmolflow-qm9-gap-predictor")``: both QM9 generators train on the same half Da);
                needed when ``rerank > 1``.
            guidance: classifier-free guidance weight ``w`` (1: the conditional prediction alone; > 1 pushes
                harder towards the target; needs a model trained with ``property_dropout``; two network
                evaluations per step).
        """
        if int(rerank) > 1:
            kw = dict(steps=steps, sampler=sampler, seed=seed, batch_size=batch_size, progress=progress,
                      grid_power=grid_power, guidance=guidance)
            return best_of_k(lambda sizes, targets: self.sample_molecules(sizes, targets, **kw), n_atoms, values,
                             int(rerank), predictor, self.hparams.property_name if self.conditional else None)
        if grid_power != 1.0 and self.flow is None:
            raise ConfigError(f"sample.grid_power={grid_power}: only the flow prior (model.prior=flow) has a time grid")
        if self.conditional and (values is None or len(values) != len(n_atoms)):
            raise ConfigError(f"a model conditioned on '{self.hparams.property_name}' needs one value per molecule")
        if not self.conditional and values is not None:
            raise ConfigError("this model is unconditional: it takes no property values")
        if any(int(n) < 1 for n in n_atoms):
            raise ConfigError("every molecule needs at least one atom")
        guidance = float(guidance)
        if guidance != 1.0 and not (self.conditional and self.hparams.get("property_dropout", 0.0) > 0):
            raise ConfigError(f"guidance={guidance:g}: this model was not trained with property dropout "
                              "(model.property_dropout > 0), so it has no unconditional prediction to guide with")
        gen = torch.Generator().manual_seed(int(seed))
        was = self.training
        self.eval()
        out: list[Molecule] = []
        starts = range(0, len(n_atoms), batch_size)
        for k in tqdm(starts, desc="sampling batches", disable=not progress or len(starts) < 2):
            sizes = [int(v) for v in n_atoms[k:k + batch_size]]
            batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            B = len(sizes)
            ctx = torch.tensor(values[k:k + batch_size], dtype=torch.float32) if values is not None else None
            ei, rev = complete_graph(batch, B)
            pairs = ei[:, upper_edges(ei)]

            def denoiser(x_t, h_t, t, b, nb, c):
                eps = self.denoise(x_t, h_t, t, b, nb, c, ei)
                if guidance == 1.0:
                    return eps
                return guided(eps, self.denoise(x_t, h_t, t, b, nb, torch.full_like(c, float("nan")), ei), guidance)

            if self.flow is not None:
                endpoint = self._flow_predictor(ei, rev, feed_back=True, guidance=guidance)   # fresh feedback
                z = self.flow.sample(endpoint, batch, B, self.feat_dim, ctx, steps or 100,
                                     "euler" if sampler in ("ancestral", "ddim") else sampler, time_power=grid_power,
                                     generator=gen,
                                     progress=progress, edge_batch=batch[pairs[0]] if self.edge_dim else None,
                                     edge_dim=self.edge_dim)
                z_x, z_h = z[0], z[1]
            else:
                z_x, z_h = self.diffusion.sample(denoiser, batch, B, self.feat_dim, ctx, steps, sampler, gen,
                                                 progress=progress)
            pos, tl, cl = self.decode(z_x, z_h, ei, batch, B)
            types = tl.argmax(-1)
            charges = cl.masked_fill(~self.charge_allowed[types], float("-inf")).argmax(-1)
            ptr = np.concatenate([[0], np.cumsum(sizes)])
            dense = torch.zeros(int(ptr[-1]), int(ptr[-1]), dtype=torch.long)
            if self.edge_dim:   # bonds decoded from the generated pair channels
                bonds = self.decode_bonds(z[2], z_h, z_x, pairs).argmax(-1)                  # [P]
                dense[pairs[0], pairs[1]] = bonds
                dense[pairs[1], pairs[0]] = bonds
            else:
                bonds = self.bond_head(self.atom_features(types, charges), pos, ei).argmax(-1)   # [E]
                dense[ei[0], ei[1]] = bonds
            for m in range(B):
                a, b = int(ptr[m]), int(ptr[m + 1])
                props = {self.hparams.property_name: float(ctx[m])} if ctx is not None else None
                # the upper triangle of a symmetric head's argmax; ties between (i,j) and (j,i) cannot differ
                out.append(from_dense(pos[a:b], types[a:b], charges[a:b], dense[a:b, a:b], self.vocab, props))
        self.train(was)
        return out

    def sample(self, n: int, condition: dict[str, float] | None = None, steps: int | None = None, seed: int = 0,
               sampler: str = "ancestral", batch_size: int = 100, progress: bool = True,
               grid_power: float = 1.0, rerank: int = 1, predictor=None, guidance: float = 1.0) -> list:
        """Generate ``n`` molecules as RDKit ``Mol`` objects with a 3D conformer.

        Args:
            n: number of molecules.
            condition: ``{property: value}`` (user units) for a conditional model; atom counts are drawn from the
                training molecules with values near the target (p(N | value), as PropMolFlow's). None: N (and, if
                conditional, the value) drawn from the training data.
            steps: denoising steps (default all 1000; the flow prior: integration steps, default 100);
            sampler: ``ancestral`` | ``ddim`` (diffusion prior), ``euler`` | ``heun`` (flow prior); seed: RNG seed;
            grid_power, rerank, predictor, guidance: see :meth:`sample_molecules` (``rerank=4,
                predictor=molgen.load("propmolflow-qm9-gap-predictor")``: the best of 4 candidates per molecule).

        Example:
            >>> mols = molgen.load("sild-qm9").sample(8, steps=200, seed=0)   # doctest: +SKIP
        """
        gen = torch.Generator().manual_seed(int(seed) + 7919)
        values = None
        if condition:
            if not self.conditional:
                raise ConfigError(f"this model is unconditional; it cannot take condition={condition}")
            if set(condition) != {self.hparams.property_name}:
                raise ConfigError(f"this model is conditioned on '{self.hparams.property_name}', got condition "
                                  f"keys {sorted(condition)}")
        sizes, values = self.sampler.draw(n, float(condition[self.hparams.property_name]) if condition else None, gen)
        mols = self.sample_molecules(sizes, values, steps, sampler, seed, batch_size, progress, grid_power,
                                     rerank=rerank, predictor=predictor, guidance=guidance)
        return [m.to_rdkit() for m in mols]
