"""Sequence -> 3-state secondary structure predictor: the offline oracle for CPDiffusion-SS's SS consistency.

The paper folds each design with ESMFold and runs DSSP; without ESMFold weights offline, molgen trains this small
predictor on the training chains' DSSP (3-state) and reports its Q3 on the held-out test chains, so the designs'
SS comes from a model that never saw the plan. Architecture: token embedding -> 3 residual 1-D convolutions
(kernel 9) -> bidirectional GRU -> per-residue 3-way softmax (in the spirit of PSIPRED-free single-sequence
predictors; single-sequence Q3 is typically 60-70 % at scale).
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from molgen.data.proteins import SS3
from molgen.data.protein_tokens import PAD, VOCAB, encode, pad_batch


class SSPredictor(pl.LightningModule):
    """Per-residue H/E/C classifier.

    Args:
        dim: embedding / convolution width.
        hidden: GRU hidden size per direction.
        dropout: dropout between blocks.
        lr: AdamW learning rate.

    Shapes:
        tokens ``(B, L)``, mask ``(B, L)`` -> logits ``(B, L, 3)``.
    """

    def __init__(self, dim: int = 64, hidden: int = 64, dropout: float = 0.2, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(len(VOCAB), dim, padding_idx=PAD)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, 9, padding=4) for _ in range(3))
        self.gru = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, 3)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        m = mask.unsqueeze(1).float()
        x = h.transpose(1, 2)
        for conv in self.convs:
            x = x + self.drop(F.gelu(conv(x * m)))
        packed = nn.utils.rnn.pack_padded_sequence(x.transpose(1, 2), mask.sum(1).cpu(), batch_first=True,
                                                    enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return self.head(self.drop(out))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["tokens"], batch["mask"])
        loss = F.cross_entropy(logits.reshape(-1, 3), batch["ss_res"].reshape(-1), ignore_index=-100)
        known = batch["ss_res"] != -100
        q3 = (logits.argmax(-1)[known] == batch["ss_res"][known]).float().mean()
        n = len(batch["names"])
        self.log(f"{stage}/loss", loss, batch_size=n, prog_bar=True)
        self.log(f"{stage}/q3", q3, batch_size=n)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)

    @torch.no_grad()
    def predict_ss3(self, sequences: list[str], batch_size: int = 256) -> list[str]:
        """Per-residue H/E/C strings for the sequences (empty sequence -> empty string)."""
        self.eval()
        out: list[str] = [""] * len(sequences)
        idx = [i for i, s in enumerate(sequences) if s]
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            tokens = pad_batch([encode(sequences[i]) for i in chunk]).to(self.device)
            pred = self(tokens, tokens != PAD).argmax(-1).cpu()
            for row, i in enumerate(chunk):
                out[i] = "".join(SS3[j] for j in pred[row, : len(sequences[i])].tolist())
        return out
