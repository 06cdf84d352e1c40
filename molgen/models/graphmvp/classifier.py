"""Fine-tuning a (pretrained) GIN on MoleculeNet classification, and the inference objects users hold.

* :class:`MoleculeClassifier`: GIN -> mean pool -> dropout-free linear head ``[B, T]`` logits, trained with
  BCE on the labelled entries only (GraphMVP's protocol: Adam 1e-3, dropout 0.5, batch 256, 100 epochs).
  Validation runs on two loaders, ``[valid, test]``; the module logs the mean ROC-AUC over tasks with both
  classes present (:func:`mean_roc_auc`) and ``val/loss = 1 - valid ROC-AUC``, so the shared trainer's
  ``best.ckpt`` is the best-validation epoch, the paper's model selection, and it records the test ROC-AUC of
  that epoch (``best_scores``).
* :meth:`MoleculeClassifier.predict` ``(smiles) -> probabilities [n, T]``.
* :class:`GraphMVPEncoder` ``.embed(smiles) -> [n, d]``: the pretrained 2D encoder (mean-pooled GIN).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from torch_geometric.data import Batch

from molgen.data.moleculenet import GIN_FEATURES, mol_to_graph, parse_smiles
from molgen.errors import DataError
from molgen.nn.gin import GIN


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half), i.e. the Mann-Whitney U statistic / (n_pos n_neg).

    Returns NaN when ``y_true`` holds only one class.
    """
    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_task_roc_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``[T]`` ROC-AUC per task over the labelled rows (NaN labels ignored); NaN where a task has one class."""
    out = np.full(labels.shape[1], np.nan)
    for t in range(labels.shape[1]):
        known = ~np.isnan(labels[:, t])
        out[t] = roc_auc(labels[known, t], scores[known, t])
    return out


def mean_roc_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Mean ROC-AUC over tasks whose labelled rows hold both classes, and how many tasks that is."""
    aucs = per_task_roc_auc(labels, scores)
    ok = ~np.isnan(aucs)
    return (float(aucs[ok].mean()) if ok.any() else float("nan")), int(ok.sum())


def graphs_of(smiles: Sequence[str], invalid: str = "raise") -> tuple[list, list[int]]:
    """2D graphs of SMILES for inference and the indices they belong to. ``invalid="raise"``: DataError naming
    the first SMILES RDKit cannot parse and its index; ``"nan"``: such SMILES are left out (their rows become NaN
    in :meth:`GraphMVPEncoder.embed` / :meth:`MoleculeClassifier.predict`)."""
    if invalid not in ("raise", "nan"):
        raise ValueError(f"invalid={invalid!r}: choose 'raise' or 'nan'")
    graphs, index = [], []
    for i, s in enumerate(smiles):
        mol = parse_smiles(s) if isinstance(s, str) else None
        if mol is None:
            if invalid == "raise":
                raise DataError(f"SMILES #{i} {s!r} cannot be parsed by RDKit (invalid='nan' gives a NaN row instead)")
            continue
        graphs.append(mol_to_graph(mol))
        index.append(i)
    return graphs, index


def _rows(values: list[torch.Tensor], index: list[int], n: int, dim: int) -> torch.Tensor:
    """``[n, dim]`` with the computed rows at ``index`` and NaN elsewhere."""
    out = torch.full((n, dim), float("nan"))
    if values:
        out[torch.tensor(index, dtype=torch.long)] = torch.cat(values).to(out.dtype)
    return out


class MoleculeClassifier(pl.LightningModule):
    """GIN + linear head for multi-task binary classification.

    Args:
        num_tasks: ``T`` output logits.
        num_layers, emb_dim: the GIN (5, 300).
        dropout: GIN dropout (0.5 in the fine-tuning protocol).
        lr, weight_decay: Adam (1e-3, 0).
        task_names: names of the ``T`` tasks (kept in the checkpoint for :meth:`predict` users).

    Shapes:
        forward(batch) -> logits ``[B, T]``; predict(smiles) -> probabilities ``[n, T]``.
    """

    def __init__(self, num_tasks: int, num_layers: int = 5, emb_dim: int = 300, dropout: float = 0.5,
                 lr: float = 1e-3, weight_decay: float = 0.0, task_names: Sequence[str] = ()):
        super().__init__()
        self.save_hyperparameters()
        self.task_names = list(task_names)
        self.gin = GIN(num_layers, emb_dim, dropout, **GIN_FEATURES)
        self.head = nn.Linear(emb_dim, num_tasks)
        self._outputs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {0: [], 1: []}
        self.best_scores: dict[str, float] = {"val_roc_auc": float("-inf"), "test_roc_auc": float("nan"),
                                              "epoch": -1, "test_tasks": 0}
        self.history: list[dict[str, float]] = []

    def forward(self, data) -> torch.Tensor:
        return self.head(self.gin.embed_graph(data))

    @staticmethod
    def masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """BCE with logits over the labelled entries of ``y`` (NaN = missing)."""
        known = ~torch.isnan(y)
        return F.binary_cross_entropy_with_logits(logits[known], y[known])

    def training_step(self, data, batch_idx: int) -> torch.Tensor:
        loss = self.masked_bce(self(data), data.y)
        self.log("train/loss", loss, batch_size=int(data.num_graphs), prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, data, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._outputs.setdefault(dataloader_idx, []).append((self(data).detach().cpu(), data.y.cpu()))

    def on_validation_epoch_end(self) -> None:
        scores = {}
        for k, name in ((0, "val"), (1, "test")):
            outs = self._outputs.get(k) or []
            if not outs:
                continue
            logits = torch.cat([o[0] for o in outs]).numpy()
            y = torch.cat([o[1] for o in outs]).numpy()
            scores[name], scores[f"{name}_tasks"] = mean_roc_auc(y, logits)
            self._outputs[k] = []
        val = scores.get("val", float("nan"))
        val_loss = 1.0 - val if np.isfinite(val) else 1.0
        self.log("val/loss", val_loss, prog_bar=True)
        self.log("val/roc_auc", val if np.isfinite(val) else 0.0)
        if "test" in scores and np.isfinite(scores["test"]):
            self.log("test/roc_auc", scores["test"])
        if self.trainer is not None and self.trainer.sanity_checking:
            return
        self.history.append({"epoch": int(self.current_epoch), "val_roc_auc": val,
                             "test_roc_auc": scores.get("test", float("nan"))})
        if np.isfinite(val) and val > self.best_scores["val_roc_auc"]:
            self.best_scores = {"val_roc_auc": val, "test_roc_auc": scores.get("test", float("nan")),
                                "epoch": int(self.current_epoch), "test_tasks": int(scores.get("test_tasks", 0))}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["finetune_best"] = dict(self.best_scores)
        checkpoint["finetune_history"] = [dict(h) for h in self.history]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_scores = dict(checkpoint.get("finetune_best", self.best_scores))
        self.history = [dict(h) for h in checkpoint.get("finetune_history", [])]

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def model_args(self) -> dict[str, Any]:
        hp = dict(self.hparams)
        hp["task_names"] = [str(t) for t in hp.get("task_names", ())]
        return hp

    @torch.no_grad()
    def predict(self, smiles: Sequence[str], batch_size: int = 256, invalid: str = "raise") -> torch.Tensor:
        """Probabilities ``[n, T]`` (sigmoid of the logits) for SMILES strings; columns are ``task_names``.
        ``invalid``: as :meth:`GraphMVPEncoder.embed` ("raise", or "nan" rows)."""
        smiles = list(smiles)
        was = self.training
        self.eval()
        try:
            graphs, index = graphs_of(smiles, invalid)
            out = [torch.sigmoid(self(Batch.from_data_list(graphs[i : i + batch_size])))
                   for i in range(0, len(graphs), batch_size)]
        finally:
            self.train(was)
        return _rows(out, index, len(smiles), self.hparams.num_tasks)


class GraphMVPEncoder(nn.Module):
    """A pretrained 2D encoder: SMILES -> pooled GIN representations (frozen features).

    Args:
        num_layers, emb_dim: the GIN's size (5, 300).

    Example:
        >>> enc = GraphMVPEncoder(num_layers=2, emb_dim=16)
        >>> enc.embed(["CCO", "c1ccccc1"]).shape
        torch.Size([2, 64])
        >>> enc.embed(["CCO", "c1ccccc1"], readout="mean").shape
        torch.Size([2, 16])
    """

    def __init__(self, num_layers: int = 5, emb_dim: int = 300):
        super().__init__()
        self.gin = GIN(num_layers, emb_dim, dropout=0.0, **GIN_FEATURES)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "GraphMVPEncoder":
        """The encoder of an exported encoder or of a whole pretrainer checkpoint (its ``gin.*`` weights)."""
        args = ckpt["molgen"].get("model_args", {})
        model = cls(int(args.get("num_layers", 5)), int(args.get("emb_dim", 300)))
        model.gin.load_state_dict({k[len("gin."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("gin.")})
        return model

    @property
    def dim(self) -> int:
        return self.gin.emb_dim

    @torch.no_grad()
    def embed(self, smiles: Sequence[str], batch_size: int = 256, invalid: str = "raise",
              readout: str = "layers-mean-sum") -> torch.Tensor:
        """Float tensor ``[n, d]``, one row per SMILES, of frozen molecule representations (eval mode, BatchNorm
        running stats). ``invalid="raise"``: a SMILES RDKit cannot parse is one error naming it and its index;
        ``"nan"``: its row is NaN.

        ``readout`` (see :meth:`molgen.nn.gin.GIN.embed_graph`): ``"layers-mean-sum"`` (default; ``d = 2 x
        num_layers x emb_dim``, 3000): mean and sum over atoms of every layer's output, the readout whose linear
        probes scored best on the BBBP and BACE validation splits for both pretrained encoders (docs/graphmvp.md);
        ``"layers-sum"``; ``"mean"`` (``d = emb_dim``: the last layer's mean, what fine-tuning starts from)."""
        smiles = list(smiles)
        dim = self.gin.readout_dim(readout)
        was = self.training
        self.eval()
        try:
            graphs, index = graphs_of(smiles, invalid)
            out = [self.gin.embed_graph(Batch.from_data_list(graphs[i : i + batch_size]), readout)
                   for i in range(0, len(graphs), batch_size)]
        finally:
            self.train(was)
        return _rows(out, index, len(smiles), dim)
