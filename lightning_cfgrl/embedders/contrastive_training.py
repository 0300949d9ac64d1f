"""Self-supervised training of the diversity embedder, the paper's way.

Positives: two non-overlapping fixed-length chunks of the same sequence. Negatives: the chunks of the
other sequences in the batch. Loss: symmetric InfoNCE with a temperature. What makes two chunks of one
sequence alike (on the synthetic domain: the latent section mode and the prompt) is what the embedder
learns, and what the diversity reward then measures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from einops import repeat
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from lightning_cfgrl.embedders.contrastive import QUALITY_KEY, ContrastiveTokenEmbedder
from lightning_cfgrl.io.specs import instantiate_spec, save_safe_hyperparameters
from lightning_cfgrl.training.hparams import log_hparams_with_metrics
from lightning_cfgrl.training.optimization import build_optimizers


def sample_chunk_pairs(
    frames: Tensor, chunk_frames: int, rng: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Two non-overlapping chunks per sequence: ``[B, K, T]`` -> two ``[B, K, L]`` (L = ``chunk_frames``).

    The first chunk starts uniformly in ``[0, T - 2L]``, the second uniformly after it ends; which one
    is returned first is random, so neither view is systematically the earlier one.
    """
    b, k, t = frames.shape
    if chunk_frames < 1 or 2 * chunk_frames > t:
        raise ValueError(
            f"chunk_frames must be in [1, T / 2] = [1, {t // 2}] for T = {t} frames, got {chunk_frames}"
        )
    device = frames.device

    def uniform(high: Tensor) -> Tensor:  # integers in [0, high] per row
        u = torch.rand(b, generator=rng).to(device)
        return (u * (high + 1).float()).long().clamp(max=high)

    first = uniform(torch.full((b,), t - 2 * chunk_frames, device=device))
    second = first + chunk_frames + uniform(t - 2 * chunk_frames - first)
    swap = (torch.rand(b, generator=rng) < 0.5).to(device)
    first, second = torch.where(swap, second, first), torch.where(swap, first, second)
    offsets = torch.arange(chunk_frames, device=device)

    def take(start: Tensor) -> Tensor:
        index = repeat(start[:, None] + offsets, "b l -> b k l", k=k)
        return frames.gather(2, index)

    return take(first), take(second)


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: ``a[i]``/``b[i]`` ``[B, E]`` are positives, every other row a negative."""
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@torch.no_grad()
def triplet_accuracy(
    embedder: nn.Module, frames: Tensor, chunk_frames: int, rng: torch.Generator | None = None
) -> Tensor:
    """Fraction of triplets (chunk of sequence i, other chunk of i, chunk of another sequence) where
    the two chunks of i are the closer pair by cosine. ``frames [B, K, T]`` with B >= 2; the negative of
    row i is row ``(i + 1) % B``, so ``frames`` should be in random order."""
    anchor, positive = sample_chunk_pairs(frames, chunk_frames, rng)
    e_anchor, e_positive = (F.normalize(embedder(x).float(), dim=-1) for x in (anchor, positive))
    e_negative = e_positive.roll(-1, dims=0)
    closer = (e_anchor * e_positive).sum(-1) > (e_anchor * e_negative).sum(-1)
    return closer.float().mean()


class ContrastiveEmbedderModule(pl.LightningModule):
    """Trains a token embedder on ``{"frames": [B, K, T], ...}`` batches (e.g. ``SyntheticMusicDataModule``).

    Checkpoints record the embedder's spec under ``hyper_parameters["embedder"]`` and its weights under
    ``embedder.*``, so ``ContrastiveTokenEmbedder(checkpoint=...)`` / ``.from_checkpoint`` rebuild it.

    Args:
        embedder: the model (an ``nn.Module`` or a ``class_path`` spec dict); default a
            ``ContrastiveTokenEmbedder()``.
        chunk_frames: L, frames per chunk (two non-overlapping chunks must fit in a sequence).
        temperature: InfoNCE temperature.
        learning_rate, weight_decay: AdamW settings when no ``optimizer`` is given.
        min_triplet_accuracy: at the end of fit, warn when the last measured held-out triplet accuracy
            (``val/triplet_accuracy``; chance is 0.5) is below this: a reward from an embedder near
            chance is noise, and the diversity policy gradient then learns nothing but noise.
    """

    def __init__(
        self,
        embedder: nn.Module | dict | None = None,
        chunk_frames: int = 12,
        temperature: float = 0.07,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.01,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        min_triplet_accuracy: float = 0.7,
    ) -> None:
        super().__init__()
        if embedder is None:
            embedder = ContrastiveTokenEmbedder()
        elif isinstance(embedder, Mapping):
            embedder = instantiate_spec(embedder, "an embedder spec")
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= min_triplet_accuracy <= 1.0:
            raise ValueError(f"min_triplet_accuracy must be in [0, 1], got {min_triplet_accuracy}")
        save_safe_hyperparameters(
            self, {"embedder": embedder, "optimizer": optimizer, "scheduler": scheduler}
        )
        if hasattr(embedder, "spec"):  # rebuildable from the checkpoint alone (weights_only-safe)
            self.hparams["embedder"] = embedder.spec()
        self.embedder = embedder
        self.chunk_frames, self.temperature = chunk_frames, temperature
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.min_triplet_accuracy = min_triplet_accuracy

    def on_fit_end(self) -> None:
        accuracy = self.trainer.callback_metrics.get("val/triplet_accuracy")
        if accuracy is not None and float(accuracy) < self.min_triplet_accuracy:
            rank_zero_warn(
                f"ContrastiveEmbedderModule ended with held-out triplet accuracy {float(accuracy):.3f} "
                f"(chance 0.5), below min_triplet_accuracy={self.min_triplet_accuracy}: as a diversity reward "
                "it would be mostly noise. Train longer (trainer.max_steps), or check chunk_frames against "
                "the sequence length and the learning rate."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the last held-out accuracy travels with the weights: DiversityRewardCallback's gate reads it
        accuracy = self.trainer.callback_metrics.get("val/triplet_accuracy")
        if accuracy is not None:
            checkpoint[QUALITY_KEY] = {
                "heldout_triplet_accuracy": float(accuracy),
                "global_step": int(self.trainer.global_step),
            }

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embedder(tokens)

    def _loss(self, frames: Tensor) -> Tensor:
        first, second = sample_chunk_pairs(frames, self.chunk_frames)
        return info_nce(self.embedder(first), self.embedder(second), self.temperature)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch["frames"])
        self.log("train/info_nce", loss, prog_bar=True, batch_size=batch["frames"].shape[0])
        return loss

    def validation_metric_names(self) -> list[str]:
        """What :meth:`validation_step` logs (the metrics of TensorBoard's HParams view)."""
        return ["val/info_nce", "val/triplet_accuracy"]

    def on_fit_start(self) -> None:
        # the hyperparameters with the validation metrics, instead of Lightning's `hp_metric = -1`
        hparams = {k: v for k, v in self.hparams_initial.items() if k != "_class_path"}
        log_hparams_with_metrics(self.trainer, hparams, self.validation_metric_names())

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        frames = batch["frames"]
        # fixed chunk offsets per batch, so validation numbers are comparable across epochs
        rng = torch.Generator().manual_seed(batch_idx)
        first, second = sample_chunk_pairs(frames, self.chunk_frames, rng)
        loss = info_nce(self.embedder(first), self.embedder(second), self.temperature)
        accuracy = triplet_accuracy(
            self.embedder, frames, self.chunk_frames, torch.Generator().manual_seed(batch_idx)
        )
        self.log("val/info_nce", loss, batch_size=frames.shape[0], sync_dist=True)
        self.log("val/triplet_accuracy", accuracy, prog_bar=True, batch_size=frames.shape[0], sync_dist=True)

    def configure_optimizers(self) -> Any:
        return build_optimizers(
            self.embedder.parameters(),
            self.optimizer_factory,
            self.scheduler_factory,
            self.learning_rate,
            self.weight_decay,
        )
