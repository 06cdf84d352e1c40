r"""PropMolFlow: property-guided 3D molecule generation by SE(3) flow matching (Zeng, Jin et al. 2025,
https://arxiv.org/abs/2505.21469), built on FlowMol2 / FlowMol-CTMC (Dunn & Koes, https://arxiv.org/abs/2411.16644).

A molecule is (positions x, atom types a, formal charges c, bond orders e on every atom pair). The model learns
one flow from a prior to the data for all four jointly:

* x: centred Gaussian prior, aligned to the data (Hungarian + Kabsch), straight path
  :math:`x_t = (1-t)x_0 + t x_1` (:mod:`molgen.generative.gaussian_path`);
* a, c, e: masking CTMC, every token masked at t=0, revealed with probability t (:mod:`molgen.generative.masking_ctmc`);
* the network predicts the endpoint :math:`(\hat x_1, p(a_1), p(c_1), p(e_1))` (:class:`EndpointNet`); the loss is
  :math:`3\,\mathrm{MSE}(\hat x_1, x_1) + 0.4\,\mathrm{CE}_a + 1\,\mathrm{CE}_c + 2\,\mathrm{CE}_e`, the cross
  entropies on masked tokens only;
* with a property, its embedding enters the initial node features (:mod:`molgen.conditioning`).

Sampling integrates positions with Euler (or Heun) and the categorical CTMC with stochasticity ``eta`` = 10 and
temperature 0.05, 100 steps by default.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from rdkit import Chem
from torch.nn import functional as F
from tqdm.auto import tqdm

from molgen.conditioning import PropertyEmbedding, PropertySampler, best_of_k, check_property
from molgen.data.graph import MoleculeVocab, from_dense
from molgen.data.molecule import ELEMENTS, NEUTRAL_VALENCES, BondOrder, Molecule
from molgen.errors import ConfigError
from molgen.generative import GaussianPath, MaskingCTMC, align_prior, centred_gaussian, get_schedule, get_solver
from molgen.generative.solvers import time_grid
from molgen.generative.valence import decision_scores, valence_decode

_PERIODIC = Chem.GetPeriodicTable()
#: valence decoding: a bond may be introduced only within this multiple of the two covalent radii
BOND_REACH = 1.3
from molgen.nn.graph import edge_bond_types, symmetric_edges, upper_edges
from molgen.nn.molecule_net import complete_graph
from molgen.spec import build

#: The paper's endpoint network (FlowMol2's GVP trunk, :class:`~molgen.models.propmolflow.net.EndpointNet`) with
#: its QM9 sizes: the ``backbone`` spec used when none is given (``molgen/configs/model/backbone/gvp.yaml``).
GVP_BACKBONE = {"_target_": "molgen.models.propmolflow.net.EndpointNet", "v_dim": 16, "n_layers": 8,
                "n_cp_feats": 4, "message_norm": 100.0}
GAUNT_BACKBONE = "molgen.models.propmolflow.net.GauntEndpointNet"


def upgrade_args(args: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments recorded before the backbone was injected (flat ``v_dim``, ``n_layers``,
    ``n_cp_feats``, ``message_norm``, ``backbone="gvp"|"gaunt"`` and ``gaunt_*`` keys: the shipped
    ``propmolflow-qm9`` and format-1 checkpoints) in today's layout, with the backbone as a spec."""
    args = dict(args)
    if isinstance(args.get("backbone"), Mapping):
        return args
    name = args.pop("backbone", "gvp")
    gvp = {k: args.pop(k) for k in ("v_dim", "n_layers", "n_cp_feats", "message_norm") if k in args}
    gaunt = {k[len("gaunt_"):]: args.pop(k) for k in list(args) if k.startswith("gaunt_")}
    if name == "gvp":
        args["backbone"] = {**GVP_BACKBONE, **gvp}
    elif name == "gaunt":
        renamed = {"lmax": "lmax", "hidden": "hidden", "layers": "n_layers", "correlation": "correlation"}
        args["backbone"] = {"_target_": GAUNT_BACKBONE, **{renamed[k]: v for k, v in gaunt.items()}}
    else:
        raise ConfigError(f"model.backbone={name}: unknown backbone (choose from gvp, gaunt)")
    return args


def bond_tokens(edge_index: torch.Tensor, num_nodes: int, bond_index: torch.Tensor,
                bond_type: torch.Tensor) -> torch.Tensor:
    """Bond order (0 = none) of every edge of ``edge_index``: :func:`molgen.nn.graph.edge_bond_types` with this
    module's former argument order (kept for its importers). ``[E]``."""
    return edge_bond_types(edge_index, bond_index, bond_type, num_nodes)


def self_condition_inputs(x1_hat: torch.Tensor, a_logits: torch.Tensor, c_logits: torch.Tensor,
                          e_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """An endpoint prediction as the next call's ``self_cond``: positions and class probabilities, detached."""
    return (x1_hat.detach(), a_logits.detach().softmax(-1), c_logits.detach().softmax(-1),
            e_logits.detach().softmax(-1))


class PropMolFlow(pl.LightningModule):
    """The PropMolFlow generator (defaults = the paper's QM9 model).

    Args:
        vocab: :meth:`MoleculeVocab.as_dict` (elements, charges, bond types).
        s_dim, edge_dim: node scalars (256) and edge features (128), shared by every backbone.
        rbf_dim, rbf_max: distance RBF (32 on [0, 14] Angstrom).
        backbone: the endpoint network as a spec ``{"_target_": class path, **its own arguments}``, built with
            the vocabulary sizes, ``s_dim``, ``edge_dim``, ``rbf_dim``, ``rbf_max`` and the property embedding
            (default :data:`GVP_BACKBONE`: the paper's GVP network, 16 vectors, 8 layers, 4 cross-product
            features, message norm 100; ``molgen.models.propmolflow.net.GauntEndpointNet`` with ``lmax``,
            ``hidden``, ``n_layers``, ``correlation`` for the Gaunt trunk).
        weight_x, weight_a, weight_c, weight_e: loss weights (3.0, 0.4, 1.0, 2.0).
        property_name: conditioning property (one of ``molgen.conditioning.PROPERTIES``) or None.
        embedding: property embedding method (concatenate, sum, multiply, concatenate_sum, concatenate_multiply).
        gaussian_expansion: embed the raw property through 5 fixed Gaussians instead of z-scoring it.
        property_mean, property_std: z-score statistics of the property (user units).
        max_atoms, n_bins: size of the (N, value) sampler histograms (fill with ``model.sampler.fit``).
        lr, weight_decay: Adam (2.5e-4, 1e-12).
        align_prior: Hungarian + Kabsch alignment of the prior to the data during training.
        schedule: interpolant schedule name (linear).
        stochasticity, temperature: CTMC sampling defaults (10, 0.05).
        self_condition: self-conditioning (FlowMol3): in training, half of the batches first predict the endpoint
            without gradients and feed that prediction back as input; in sampling, each step gets the previous
            step's prediction. Costs ~1.2x per training step, nothing at sampling.
        self_condition_lag: with self-conditioning, make the first (no-gradient) prediction at an earlier time
            ``s = t - U(0, lag)`` of the same path (positions on the same line, tokens masked further, see
            :meth:`MaskingCTMC.mask_more`), as a sampler with steps of up to ``lag`` feeds the previous step's
            prediction forward; 0 (FlowMol3's): the first prediction is made at ``t`` itself.
        property_dropout: classifier-free guidance (Ho & Salimans 2022): in training, the property of this share
            of the molecules is replaced by a learned "no property" embedding, so the same network also predicts
            unconditionally; sampling with ``guidance = w`` then uses ``u + w (c - u)`` of the two predictions
            (positions and the categorical logits). 0: no null embedding (guidance unavailable).
    """

    def __init__(self, vocab: dict | None = None, s_dim: int = 256, edge_dim: int = 128, rbf_dim: int = 32,
                 rbf_max: float = 14.0, backbone: Mapping[str, Any] | None = None, weight_x: float = 3.0,
                 weight_a: float = 0.4, weight_c: float = 1.0, weight_e: float = 2.0, property_name: str | None = None,
                 embedding: str = "concatenate", gaussian_expansion: bool = False, property_mean: float = 0.0,
                 property_std: float = 1.0, max_atoms: int = 29, n_bins: int = 1000, lr: float = 2.5e-4,
                 weight_decay: float = 1e-12, align_prior: bool = True, schedule: str = "linear",
                 stochasticity: float = 10.0, temperature: float = 0.05, self_condition: bool = False,
                 property_dropout: float = 0.0, self_condition_lag: float = 0.0):
        super().__init__()
        if backbone is not None and not isinstance(backbone, Mapping):
            raise ConfigError(f"model.backbone={backbone}: not a backbone spec (a mapping with a _target_ class; "
                              "choose one with model/backbone=gvp|gvp_small|gaunt)")
        backbone = dict(backbone or GVP_BACKBONE)
        self.save_hyperparameters()
        self.hparams.backbone = backbone
        self.vocab = MoleculeVocab.from_dict(vocab) if vocab else MoleculeVocab()
        if property_name is not None:
            check_property(property_name)
        self.property_name = property_name
        if not 0.0 <= self_condition_lag <= 1.0:
            raise ConfigError(f"model.self_condition_lag={self_condition_lag}: must be in [0, 1]")
        if not 0.0 <= property_dropout < 1.0:
            raise ConfigError(f"model.property_dropout={property_dropout}: must be in [0, 1)")
        prop = (PropertyEmbedding(property_name, s_dim, embedding, gaussian_expansion, property_mean, property_std,
                                  null_token=property_dropout > 0) if property_name else None)
        extra = {"self_condition": True} if self_condition else {}
        self.net = build(backbone, n_atom_types=self.vocab.n_atom_types, n_charges=self.vocab.n_charges,
                         n_bond_types=self.vocab.n_bond_types, s_dim=s_dim, edge_dim=edge_dim, rbf_dim=rbf_dim,
                         rbf_max=rbf_max, property_embedding=prop, **extra)
        self.sampler = PropertySampler(max_atoms, n_bins, conditional=property_name is not None)
        sched = get_schedule(schedule)
        self.path = GaussianPath(sched)
        self.ctmc = {"a": MaskingCTMC(self.vocab.n_atom_types, sched), "c": MaskingCTMC(self.vocab.n_charges, sched),
                     "e": MaskingCTMC(self.vocab.n_bond_types, sched)}
        self.weights = {"x": weight_x, "a": weight_a, "c": weight_c, "e": weight_e}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "PropMolFlow":
        """Rebuild from a checkpoint of any format (older layouts through :func:`upgrade_args`)."""
        model = cls(**upgrade_args(ckpt["molgen"]["model_args"]))
        model.load_state_dict(ckpt["state_dict"])
        return model

    @property
    def model_args(self) -> dict[str, Any]:
        """Plain constructor arguments (weights-only safe) that rebuild this model."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.hparams.items()}

    @property
    def conditional(self) -> bool:
        return self.property_name is not None

    # ------------------------------------------------------------------------------------------ training
    def _values(self, batch) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if not hasattr(batch, "value"):
            raise ValueError(f"conditional model on '{self.property_name}': batches need a 'value' field "
                             "(wrap the data set with molgen.models.propmolflow.model.WithProperty)")
        return batch.value.reshape(-1)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        """The training objective on a PyG batch of clean molecules; returns the weighted loss and its terms."""
        n_mol = batch.num_graphs
        idx = batch.batch                                                              # [n]
        # sample t per molecule and the prior, aligned to the data
        t = torch.rand(n_mol, device=self.device)                                      # [B]
        t_atom = t[idx]                                                                # [n]
        x1 = batch.pos                                                                 # [n, 3], centred
        x0 = centred_gaussian(idx, num_graphs=n_mol).to(x1)                            # [n, 3]
        if self.hparams.align_prior:
            x0 = align_prior(x0, x1, idx)
        # interpolate: positions on the straight path, categorical features masked with prob 1 - t
        x_t = self.path.sample(x0, x1, t_atom).x_t                                     # [n, 3]
        a_t = self.ctmc["a"].corrupt(batch.atom_type, t_atom)                          # [n]
        c_t = self.ctmc["c"].corrupt(batch.charge, t_atom)                             # [n]
        edge_index, reverse = complete_graph(idx, n_mol)                               # [2, E], [E]
        upper = upper_edges(edge_index)
        t_pair = t[idx[edge_index[0][upper]]]                                          # [E_u]
        e1 = edge_bond_types(edge_index, batch.bond_index, batch.bond_type, x1.shape[0])[upper]  # [E_u]
        e_t_upper = self.ctmc["e"].corrupt(e1, t_pair)                                 # [E_u]
        e_t = symmetric_edges(e_t_upper, edge_index, reverse)                          # [E]
        # predict the endpoint (self-conditioning: half of the batches on a first prediction made without gradients)
        value = self._values(batch)
        if value is not None and self.hparams.get("property_dropout", 0.0) > 0:   # classifier-free guidance
            drop = torch.rand(value.shape, device=value.device) < self.hparams.property_dropout
            value = value.masked_fill(drop, float("nan"))
        self_cond = None
        if self.hparams.self_condition and bool(torch.rand(()) < 0.5):
            lag = float(self.hparams.get("self_condition_lag", 0.0))
            with torch.no_grad():
                if lag > 0:   # the prediction a sampler's previous step would feed forward
                    s = (t - lag * torch.rand(n_mol, device=t.device)).clamp(min=0.0)            # [B]
                    s_atom = s[idx]
                    a_s = self.ctmc["a"].mask_more(a_t, t_atom, s_atom)
                    c_s = self.ctmc["c"].mask_more(c_t, t_atom, s_atom)
                    e_s = symmetric_edges(self.ctmc["e"].mask_more(e_t_upper, t_pair, s[idx[edge_index[0][upper]]]),
                                          edge_index, reverse)
                    first = self.net(a_s, c_s, self.path.sample(x0, x1, s_atom).x_t, s_atom, idx, edge_index,
                                     reverse, e_s, value, n_mol)
                else:
                    first = self.net(a_t, c_t, x_t, t_atom, idx, edge_index, reverse, e_t, value, n_mol)
                self_cond = self_condition_inputs(*first)
        extra = {"self_cond": self_cond} if self.hparams.self_condition else {}
        x1_hat, a_logits, c_logits, e_logits = self.net(a_t, c_t, x_t, t_atom, idx, edge_index, reverse, e_t,
                                                        value, n_mol, **extra)
        # losses: MSE on positions, cross-entropy on the still-masked tokens
        losses = {"x": F.mse_loss(x1_hat, x1)}
        for key, logits, x_tok, target in (("a", a_logits, a_t, batch.atom_type), ("c", c_logits, c_t, batch.charge),
                                            ("e", e_logits, e_t_upper, e1)):
            masked = self.ctmc[key].is_masked(x_tok)
            losses[key] = F.cross_entropy(logits[masked], target[masked]) if masked.any() else logits.sum() * 0
        losses["loss"] = sum(self.weights[k] * losses[k] for k in ("x", "a", "c", "e"))
        return losses

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        losses = self(batch)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch.num_graphs)
        self.log_dict({f"train/loss_{k}": losses[k] for k in "xace"}, batch_size=batch.num_graphs)
        return losses["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        losses = self(batch)
        self.log("val/loss", losses["loss"], prog_bar=True, batch_size=batch.num_graphs)
        self.log_dict({f"val/loss_{k}": losses[k] for k in "xace"}, batch_size=batch.num_graphs)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_molecules(self, n_atoms: list[int], values: list[float] | None = None, steps: int = 100,
                         solver: str = "euler", seed: int = 0, batch_size: int = 100,
                         stochasticity: float | None = None, temperature: float | None = None,
                         progress: bool = True, self_condition: bool = True,
                         grid_power: float = 1.0, guidance: float = 1.0, rerank: int = 1,
                         predictor=None, valence_decode: bool = False, net_charge: int | None = 0) -> list[Molecule]:
        """Generate one molecule per entry of ``n_atoms`` (deterministic given ``seed``).

        Args:
            n_atoms: atom count of each molecule.
            values: target property value per molecule (user units); required by a conditional model.
            steps: integration steps on the uniform grid from t=0 to t=1.
            solver: "euler" or "heun" (positions; the CTMC always takes Euler steps).
            seed: seeds every random draw (prior, CTMC jumps).
            batch_size: molecules integrated together.
            stochasticity, temperature: CTMC settings (default: the model's, 10 and 0.05).
            grid_power: time grid ``t_k = 1 - (1 - k/steps) ** grid_power`` (1: uniform; > 1: finer steps near
                t = 1, see :func:`molgen.generative.solvers.time_grid`).
            self_condition: feed each step's prediction into the next (a self-conditioned model only; False
                samples it as if it had no previous prediction: an ablation).
            guidance: classifier-free guidance weight ``w`` (1: the conditional prediction alone; > 1 pushes
                harder towards the target; needs a model trained with ``property_dropout``; two network
                evaluations per step).
            rerank: candidates drawn per molecule (conditional models): ``rerank`` molecules are generated for each
                (N, target) and the one ``predictor`` puts closest to the target is kept (candidates it cannot
                encode rank last); ``rerank`` times the sampling cost. 1: no selection.
            predictor: a property regressor (:class:`~molgen.models.regressor.GVPRegressor`, e.g.
                ``molgen.load("propmolflow-qm9-gap-predictor")``) for the model's property, trained on the generator's own half (never
                on the data that evaluates it); needed when ``rerank > 1``.
            valence_decode: decide the tokens of the last step jointly: each molecule's atom types, charges and bond
                orders become the assignment the network's last prediction finds most probable such that every
                atom keeps a neutral valence (explicit valence - formal charge), the molecule the net charge
                ``net_charge`` and its atoms one connected molecule; a bond may be introduced only where the
                generated geometry puts the two atoms within 1.3x their covalent radii (where no such bond joins
                the fragments, they are kept: ``last_decode["fragmented"]``). A token decided in an earlier step
                changes only where the rule needs it, at a cost of at least 4.6 nats
                (:mod:`molgen.generative.valence`). A molecule with no such assignment keeps its sampled tokens.
                For few-step sampling, where many dependent tokens are decided in the same step.
            net_charge: the net charge a decoded molecule must have (0: neutral, as every QM9 molecule is); None
                keeps each molecule's sampled net charge.

        Returns:
            :class:`~molgen.data.molecule.Molecule` list; ``properties`` holds the target value when conditional.
        """
        if int(rerank) > 1:
            kw = dict(steps=steps, solver=solver, seed=seed, batch_size=batch_size, stochasticity=stochasticity,
                      temperature=temperature, progress=progress, self_condition=self_condition,
                      grid_power=grid_power, guidance=guidance, valence_decode=valence_decode, net_charge=net_charge)
            return best_of_k(lambda sizes, targets: self.sample_molecules(sizes, targets, **kw), n_atoms, values,
                             int(rerank), predictor, self.property_name if self.conditional else None)
        if self.conditional and (values is None or len(values) != len(n_atoms)):
            raise ConfigError(f"a model conditioned on '{self.property_name}' needs one target value per molecule")
        if not self.conditional and values is not None:
            raise ConfigError("this model is unconditional: it takes no property values")
        if any(int(n) < 1 for n in n_atoms):
            raise ConfigError("every molecule needs at least one atom")
        if float(guidance) != 1.0 and not (self.conditional and self.hparams.get("property_dropout", 0.0) > 0):
            raise ConfigError(f"guidance={guidance}: this model was not trained with property dropout "
                              "(model.property_dropout > 0), so it has no unconditional prediction to guide with")
        eta = self.hparams.stochasticity if stochasticity is None else stochasticity
        temp = self.hparams.temperature if temperature is None else temperature
        step_solver, grid = get_solver(solver), time_grid(steps, grid_power)
        gen = torch.Generator().manual_seed(int(seed))
        was_training = self.training
        self.eval()
        out: list[Molecule] = []
        counts = {"molecules": 0, "changed": 0, "fragmented": 0, "kept": 0}
        chunks = [list(range(k, min(k + batch_size, len(n_atoms)))) for k in range(0, len(n_atoms), batch_size)]
        bar = tqdm(total=len(chunks) * steps, desc="sampling", unit="step", disable=not progress)
        for chunk in chunks:
            sizes = [int(n_atoms[k]) for k in chunk]
            vals = [float(values[k]) for k in chunk] if values is not None else None
            out += self._sample_batch(sizes, vals, grid, step_solver, eta, temp, gen, bar, self_condition,
                                      float(guidance), counts if valence_decode else None, net_charge)
        bar.close()
        self.train(was_training)
        #: what the valence decoding did in the last call: molecules decoded, changed, decoded but left in
        #: fragments, kept as sampled (no valid assignment)
        self.last_decode = counts if valence_decode else None
        return out

    def _sample_batch(self, sizes, vals, grid, step_solver, eta, temp, gen, bar,
                      feed_back: bool = True, guidance: float = 1.0, decode: dict | None = None,
                      net_charge: int | None = 0) -> list[Molecule]:
        dev = self.device
        n_mol = len(sizes)
        idx = torch.repeat_interleave(torch.arange(n_mol), torch.tensor(sizes)).to(dev)     # [n]
        edge_index, reverse = complete_graph(idx, n_mol)
        upper = upper_edges(edge_index)
        value = torch.tensor(vals, device=dev) if vals is not None else None
        x = centred_gaussian(idx, gen, n_mol).to(dev)                                      # [n, 3]
        a, c = self.ctmc["a"].prior((idx.shape[0],), dev), self.ctmc["c"].prior((idx.shape[0],), dev)
        e_up = self.ctmc["e"].prior((int(upper.sum()),), dev)                              # [E_u]
        n_steps = len(grid) - 1
        sc = [None]  # the latest endpoint prediction, fed back when the model is self-conditioned
        for k in range(n_steps):
            t, s = grid[k], grid[k + 1]
            e_t = symmetric_edges(e_up, edge_index, reverse)

            def net(x_in: torch.Tensor, t_atom: torch.Tensor, v: torch.Tensor | None):
                if self.hparams.get("self_condition"):
                    return self.net(a, c, x_in, t_atom, idx, edge_index, reverse, e_t, v, n_mol, self_cond=sc[0])
                # backbones without self-conditioning need not know the argument
                return self.net(a, c, x_in, t_atom, idx, edge_index, reverse, e_t, v, n_mol)

            def predict(x_in: torch.Tensor, time: float):
                t_atom = torch.full((idx.shape[0],), time, device=dev)
                out = net(x_in, t_atom, value)
                if guidance != 1.0:  # classifier-free guidance: u + w (c - u), logits in log-probability space
                    uncond = net(x_in, t_atom, torch.full_like(value, float("nan")))
                    out = (uncond[0] + guidance * (out[0] - uncond[0]),
                           *(torch.log_softmax(lu, -1) + guidance * (torch.log_softmax(lc_, -1) - torch.log_softmax(lu, -1))
                             for lc_, lu in zip(out[1:], uncond[1:])))
                if self.hparams.get("self_condition") and feed_back:
                    sc[0] = self_condition_inputs(*out)
                x1_hat, la, lc, le = out
                return x1_hat, (la, lc, le)

            x, (la, lc, le) = step_solver.step(predict, self.path, x, t, s)
            last = k == n_steps - 1
            if last and decode is not None:
                scores = [decision_scores(tok, lg, self.ctmc[key].mask_index)
                          for key, tok, lg in (("a", a, la), ("c", c, lc), ("e", e_up, le))]
            a = self.ctmc["a"].step(a, la, t, s - t, eta, temp, last, gen)
            c = self.ctmc["c"].step(c, lc, t, s - t, eta, temp, last, gen)
            e_up = self.ctmc["e"].step(e_up, le, t, s - t, eta, temp, last, gen)
            bar.update(1)
        # decode: dense bond matrix per molecule from the upper-triangle tokens
        x, a, c = x.cpu(), a.cpu(), c.cpu()
        src, dst = edge_index[:, upper].cpu()
        e_up = e_up.cpu()
        mols = []
        ptr = [0]
        for n in sizes:
            ptr.append(ptr[-1] + n)
        mol_of_edge = idx.cpu()[src]
        if decode is not None:
            self._valence_decode(scores, x, a, c, e_up, src, dst, mol_of_edge, ptr, decode, net_charge)
        for m, n in enumerate(sizes):
            sel = mol_of_edge == m
            dense = torch.zeros(n, n, dtype=torch.long)
            dense[src[sel] - ptr[m], dst[sel] - ptr[m]] = e_up[sel]
            props = {self.property_name: vals[m]} if vals is not None else {}
            mols.append(from_dense(x[ptr[m]:ptr[m + 1]], a[ptr[m]:ptr[m + 1]], c[ptr[m]:ptr[m + 1]], dense,
                                   self.vocab, props))
        return mols

    def _valence_decode(self, scores, x, a, c, e_up, src, dst, mol_of_edge, ptr, counts: dict,
                        net_charge: int | None) -> None:
        """Replace, in place, each molecule's sampled tokens by :func:`~molgen.generative.valence.valence_decode`'s
        assignment (scores from the last step); molecules without one keep theirs. Adds to ``counts``."""
        vocab = self.vocab
        valences = [NEUTRAL_VALENCES.get(ELEMENTS[z], ()) for z in vocab.elements]
        orders = [0.0] + [BondOrder(k).valence for k in range(1, vocab.n_bond_types)]
        sa, sc, se = scores
        # a bond may only be introduced between atoms the generated geometry puts within 1.3x the sum of their
        # covalent radii (types as sampled), so the decoding cannot bond atoms that are apart
        radius = torch.tensor([_PERIODIC.GetRcovalent(int(z)) for z in vocab.elements], dtype=x.dtype)[a]
        near = (x[src] - x[dst]).norm(dim=-1) <= BOND_REACH * (radius[src] + radius[dst])
        for m in range(len(ptr) - 1):
            lo, hi = ptr[m], ptr[m + 1]
            sel = (mol_of_edge == m).nonzero().squeeze(1)
            pairs = torch.stack([src[sel] - lo, dst[sel] - lo], 1).numpy()
            args = (sa[lo:hi], sc[lo:hi], se[sel.numpy()], pairs, valences, list(vocab.charges), orders,
                    int(sum(vocab.charges[int(q)] for q in c[lo:hi])) if net_charge is None else int(net_charge))
            counts["molecules"] += 1
            can = near[sel].numpy()
            best = valence_decode(*args, connected=True, can_bond=can)   # one molecule where the geometry allows
            if best is None:
                best = valence_decode(*args, can_bond=can)
                counts["fragmented"] += best is not None
            if best is None:
                counts["kept"] += 1
                continue
            new = [torch.from_numpy(b) for b in best]
            counts["changed"] += int(not (torch.equal(new[0], a[lo:hi]) and torch.equal(new[1], c[lo:hi])
                                and torch.equal(new[2], e_up[sel])))
            a[lo:hi], c[lo:hi], e_up[sel] = new

    def sample(self, n: int, condition: dict[str, float] | None = None, steps: int = 100, seed: int = 0,
               solver: str = "euler", batch_size: int = 100, progress: bool = True, guidance: float = 1.0,
               rerank: int = 1, predictor=None, valence_decode: bool = False, net_charge: int | None = 0) -> list:
        """Generate ``n`` molecules as RDKit ``Mol`` objects with a 3D conformer.

        Args:
            n: number of molecules.
            condition: ``{property: value}`` in user units (e.g. ``{"gap": 6.8}`` eV); atom counts are drawn from the
                training molecules with values near the target (p(N | value)). None: unconditional model -> N from the histogram; conditional model -> (N, value)
                drawn jointly from the training data (PropMolFlow's in-distribution protocol).
            steps, seed, solver, batch_size, guidance, rerank, predictor, valence_decode, net_charge: see
                :meth:`sample_molecules`
                (``rerank=4, predictor=molgen.load("propmolflow-qm9-gap-predictor")``: the best of 4 candidates
                per molecule).

        Example:
            >>> mols = model.sample(8, condition={"gap": 6.8}, steps=100, seed=0)   # doctest: +SKIP
        """
        gen = torch.Generator().manual_seed(int(seed) + 7919)  # independent of the integration stream
        if condition:
            if not self.conditional:
                raise ConfigError(f"this model is unconditional; it cannot take condition={condition}")
            if set(condition) != {self.property_name}:
                raise ConfigError(f"this model is conditioned on '{self.property_name}', got condition keys "
                                  f"{sorted(condition)}")
        sizes, values = self.sampler.draw(n, float(condition[self.property_name]) if condition else None, gen)
        mols = self.sample_molecules(sizes, values, steps=steps, solver=solver, seed=seed, batch_size=batch_size,
                                     progress=progress, guidance=guidance, rerank=rerank, predictor=predictor,
                                     valence_decode=valence_decode, net_charge=net_charge)
        return [m.to_rdkit() for m in mols]


class WithProperty(torch.utils.data.Dataset):
    """A :class:`~molgen.data.graph.GraphDataset` view whose items carry ``value`` = one property (``[1]``) and
    that skips molecules where it is missing (NaN)."""

    def __init__(self, dataset, property_name: str | None):
        self.dataset, self.property_name = dataset, property_name
        if property_name is None:
            self.index = list(range(len(dataset)))
            return
        if property_name not in dataset.property_names:
            raise ConfigError(f"property '{property_name}' not in the data set (has {', '.join(dataset.property_names)})")
        self.column = dataset.property_names.index(property_name)
        ok = torch.isfinite(dataset.properties()[:, self.column])
        self.index = ok.nonzero().flatten().tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        d = self.dataset[self.index[i]]
        if self.property_name is not None:
            d.value = d.y[:, self.column].reshape(1)
        return d
