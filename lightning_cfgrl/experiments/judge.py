"""A judge: a prompt classifier trained on the domain's data, scoring adherence the way a user
without exact scores would (the analogue of the paper's text-adherence model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.io.checkpoints import load_checkpoint


class PromptClassifier(nn.Module):
    """``frames [B, K, T]`` -> per-slot attribute logits ``[B, n_a]`` (a list, one per slot).

    Summed codebook embeddings, two dilated convolutions, mean pooling: order-aware but small.
    """

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        condition_sizes: Sequence[int] = (4, 4, 3),
        dim: int = 64,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.condition_sizes = tuple(condition_sizes)
        self.embed = nn.ModuleList(nn.Embedding(vocab_size, dim) for _ in range(num_codebooks))
        self.convs = nn.Sequential(
            nn.Conv1d(dim, dim, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(dim, dim, 3, padding=2, dilation=2),
            nn.GELU(),
        )
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in self.condition_sizes)

    def forward(self, frames: Tensor) -> list[Tensor]:
        x = sum(emb(frames[:, k]) for k, emb in enumerate(self.embed))  # [B, T, D]
        pooled = self.convs(x.transpose(1, 2)).mean(-1)  # [B, D]
        return [head(pooled) for head in self.heads]

    def log_prob(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """``log p_judge(prompt | frames)`` summed over slots: ``[B]`` (prompt ids are 1-based)."""
        logits = self(frames)
        return sum(
            F.log_softmax(lg, -1).gather(-1, prompts[:, a : a + 1] - 1)[:, 0] for a, lg in enumerate(logits)
        )


class JudgeModule(pl.LightningModule):
    """Trains a :class:`PromptClassifier` on ``{"frames", "condition"}`` batches (cross-entropy per slot)."""

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        condition_sizes: Sequence[int] = (4, 4, 3),
        dim: int = 64,
        learning_rate: float = 2e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classifier = PromptClassifier(num_codebooks, vocab_size, list(condition_sizes), dim)
        self.learning_rate = learning_rate

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        return -self.classifier.log_prob(batch["frames"], batch["condition"]).mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train/judge_nll", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val/judge_nll", self._loss(batch), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.learning_rate)


class JudgeAdherence(Scorer):
    """Adherence as judged by a trained classifier: ``log p_judge(prompt | frames)``, ``[N]``."""

    name = "judge_adherence"

    @property
    def chance(self) -> float:
        """``-sum_a log n_a``: the judge's uniform posterior over the attribute values of every slot."""
        return -sum(math.log(n) for n in self.classifier.condition_sizes)

    def __init__(self, checkpoint: str | Path) -> None:
        ckpt = load_checkpoint(checkpoint)
        hparams = ckpt.get("hyper_parameters", {})
        args = {
            k: hparams[k] for k in ("num_codebooks", "vocab_size", "condition_sizes", "dim") if k in hparams
        }
        self.classifier = PromptClassifier(**args)
        state = {
            k.removeprefix("classifier."): v
            for k, v in ckpt["state_dict"].items()
            if k.startswith("classifier.")
        }
        if not state:
            raise ValueError(f"{checkpoint} is not a JudgeModule checkpoint: no 'classifier.*' weights")
        self.classifier.load_state_dict(state)
        self.classifier.eval()

    @torch.no_grad()
    def __call__(self, frames: Tensor, condition: Tensor) -> Tensor:
        self.classifier.to(frames.device)
        return self.classifier.log_prob(frames, condition)
