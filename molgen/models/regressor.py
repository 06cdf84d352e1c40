"""PropMolFlow's GVP property regressor: the evaluator of conditional generation.

A GVP network (3 GVPConv layers, 256 scalars / 16 vectors, with position and edge updates; the same trunk as the
generator, :class:`~molgen.nn.molecule_net.GVPMoleculeNet`) reads atom types, bond orders (as edge features) and
coordinates -- not charges -- of a molecule, mean-pools the node scalars and predicts one property through an MLP.
It is trained on the *other* half of the training split (PropMolFlow: train_b), with MSE on the z-scored target,
Adam (1e-3, weight decay 1e-4) and ReduceLROnPlateau (factor 0.5, patience 10) over up to 1,000 epochs
(PropMolFlow ``propmolflow/property_regressor``; https://arxiv.org/abs/2505.21469).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.data import Batch

from molgen.conditioning import check_property
from molgen.data.graph import MoleculeVocab, to_graph
from molgen.data.molecule import Molecule
from molgen.errors import DataError
from molgen.nn.graph import edge_bond_types
from molgen.nn.molecule_net import GVPMoleculeNet, complete_graph


class GVPRegressor(pl.LightningModule):
    """Predict one scalar property of a 3D molecule with bonds.

    Args:
        vocab: :meth:`MoleculeVocab.as_dict`.
        property_name: the target (a key of ``molgen.conditioning.PROPERTIES``).
        property_mean, property_std: z-score statistics of the target on the regressor's training data.
        s_dim, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm: the GVP trunk.
        lr, weight_decay, lr_patience, lr_factor: Adam and ReduceLROnPlateau.
        lr_schedule: ``"plateau"`` (PropMolFlow's: ReduceLROnPlateau, suits its 1,000-epoch budget) or
            ``"cosine"`` (per step from ``lr`` to zero over the trainer's ``max_epochs`` / ``max_steps``: for a
            fixed budget of a few epochs, where a plateau never triggers).

    Shapes:
        forward(batch) -> ``[B]`` z-scored predictions.
    """

    def __init__(self, vocab: dict | None = None, property_name: str = "gap", property_mean: float = 0.0,
                 property_std: float = 1.0, s_dim: int = 256, v_dim: int = 16, edge_dim: int = 64, n_layers: int = 3,
                 rbf_dim: int = 32, rbf_max: float = 14.0, n_cp_feats: int = 4, message_norm: float = 100.0,
                 lr: float = 1e-3, weight_decay: float = 1e-4, lr_patience: int = 10, lr_factor: float = 0.5,
                 lr_schedule: str = "plateau"):
        super().__init__()
        self.save_hyperparameters()
        check_property(property_name)
        if lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"lr_schedule={lr_schedule!r}: expected 'plateau' or 'cosine'")
        self.vocab = MoleculeVocab.from_dict(vocab) if vocab else MoleculeVocab()
        self.node_embedding = nn.Sequential(nn.Linear(self.vocab.n_atom_types, s_dim), nn.SiLU(),
                                            nn.Linear(s_dim, s_dim), nn.LayerNorm(s_dim))
        self.edge_embedding = nn.Sequential(nn.Linear(self.vocab.n_bond_types, edge_dim), nn.SiLU(),
                                            nn.Linear(edge_dim, edge_dim), nn.LayerNorm(edge_dim))
        self.trunk = GVPMoleculeNet(s_dim, v_dim, edge_dim, n_layers, rbf_dim, rbf_max, n_cp_feats, message_norm)
        self.readout = nn.Sequential(nn.Linear(s_dim, s_dim), nn.SiLU(), nn.Linear(s_dim, 1))

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(self.hparams)

    @property
    def property_name(self) -> str:
        """The property this regressor predicts."""
        return self.hparams.property_name

    def forward(self, batch) -> torch.Tensor:
        idx, n_mol = batch.batch, batch.num_graphs
        edge_index, _ = complete_graph(idx, n_mol)                                         # [2, E]
        e = edge_bond_types(edge_index, batch.bond_index, batch.bond_type, idx.shape[0])       # [E]
        h = self.node_embedding(F.one_hot(batch.atom_type, self.vocab.n_atom_types).float())  # [n, S]
        e = self.edge_embedding(F.one_hot(e, self.vocab.n_bond_types).float())            # [E, Ed]
        h, _, _ = self.trunk(h, batch.pos, e, edge_index)                                  # [n, S]
        pooled = torch.zeros(n_mol, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, idx, h)
        pooled = pooled / torch.bincount(idx, minlength=n_mol).clamp(min=1).unsqueeze(-1)  # [B, S] mean
        return self.readout(pooled).squeeze(-1)                                            # [B]

    def _z(self, batch) -> torch.Tensor:
        return (batch.value.reshape(-1) - self.hparams.property_mean) / self.hparams.property_std

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self(batch), self._z(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.num_graphs)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        pred = self(batch)
        self.log("val/loss", F.mse_loss(pred, self._z(batch)), prog_bar=True, batch_size=batch.num_graphs)
        self.log("val/mae", (pred - self._z(batch)).abs().mean() * self.hparams.property_std,
                 batch_size=batch.num_graphs)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.get("lr_schedule", "plateau") == "cosine":
            from molgen.nn.lr_schedules import lr_schedule
            return lr_schedule(opt, "cosine", self._trainer, option="regressor.lr_schedule")
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=self.hparams.lr_factor,
                                                           patience=self.hparams.lr_patience)
        has_val = self.trainer is not None and self.trainer.limit_val_batches != 0
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch",
                                                   "monitor": "val/loss" if has_val else "train/loss"}}

    @torch.no_grad()
    def predict(self, molecules: list[Molecule], batch_size: int = 256) -> np.ndarray:
        """Predicted property (user units) per molecule; NaN for molecules the vocabulary cannot encode.

        Returns:
            ``[len(molecules)]`` float64.
        """
        out = np.full(len(molecules), np.nan)
        graphs, where = [], []
        for k, m in enumerate(molecules):
            try:
                graphs.append(to_graph(m, self.vocab))
                where.append(k)
            except DataError:
                continue
        was_training = self.training
        self.eval()
        for s in range(0, len(graphs), batch_size):
            batch = Batch.from_data_list(graphs[s:s + batch_size]).to(self.device)
            z = self(batch).double().cpu().numpy()
            out[where[s:s + batch_size]] = z * self.hparams.property_std + self.hparams.property_mean
        self.train(was_training)
        return out

    def predict_dataset(self, dataset, batch_size: int = 256) -> np.ndarray:
        """Predictions (user units) for every item of a :class:`~molgen.data.graph.GraphDataset`-like data set."""
        from torch_geometric.loader import DataLoader

        was_training = self.training
        self.eval()
        preds = []
        with torch.no_grad():
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                preds.append(self(batch.to(self.device)).double().cpu())
        self.train(was_training)
        z = torch.cat(preds).numpy() if preds else np.zeros(0)
        return z * self.hparams.property_std + self.hparams.property_mean


def per_atom_count_baseline(n_train: np.ndarray, y_train: np.ndarray, n_eval: np.ndarray) -> np.ndarray:
    """EDM's "#Atoms" row as a closed form: the median training value per atom count (the L1-optimal predictor
    from N alone; EDM fits an MLP on N with an L1 loss), falling back to the overall median for unseen N."""
    n_train, y_train, n_eval = np.asarray(n_train), np.asarray(y_train, dtype=float), np.asarray(n_eval)
    overall = float(np.median(y_train))
    table = {int(n): float(np.median(y_train[n_train == n])) for n in np.unique(n_train)}
    return np.array([table.get(int(n), overall) for n in n_eval])
