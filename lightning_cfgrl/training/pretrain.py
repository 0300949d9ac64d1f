"""Teacher-forced pretraining of a token generator, with condition dropout so CFG works afterwards.

Any :class:`~lightning_cfgrl.core.generator.TokenGenerator` works (a ``ModuleAdapter`` around one's own
LM included); the data is batches of ``{"frames": [B, K, T] int64, "condition": ...}``. The generator's
checkpoint then starts the RL stages (``CFGRLModule(init_checkpoint=...)``) and is their CFG teacher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from lightning_cfgrl.core.condition import where_condition
from lightning_cfgrl.core.generator import check_logits, pad_id
from lightning_cfgrl.io.generators import load_init_checkpoint
from lightning_cfgrl.io.specs import instantiate_spec, save_safe_hyperparameters
from lightning_cfgrl.training.checkpoint_safety import SafeCheckpointLoading, init_weights_needed
from lightning_cfgrl.training.finite_guard import FiniteGuard
from lightning_cfgrl.training.hparams import log_hparams_with_metrics
from lightning_cfgrl.training.optimization import build_optimizers
from lightning_cfgrl.training.zero_work import check_training_batches, check_training_steps


class PretrainModule(SafeCheckpointLoading, FiniteGuard, pl.LightningModule):
    """Maximum likelihood on ``{"frames": [B, K, T], "condition": ...}`` batches.

    Args:
        generator: the token model (an ``nn.Module`` TokenGenerator or a ``class_path`` spec dict).
        condition_dropout: probability of replacing a sample's prompt by the null prompt
            (``generator.null_condition``), so the same network also learns the unconditional
            distribution that CFG needs. It stacks on any condition dropout the model applies itself:
            a generator (or the module a ``ModuleAdapter`` wraps) with a ``condition_dropout``
            attribute > 0 gets a warning; set one of the two to 0.
        learning_rate, weight_decay: AdamW settings when no ``optimizer`` is given.
        init_checkpoint: generator weights to start from (Lightning checkpoint or safetensors), e.g. to
            continue pretraining with a new optimizer or data (``--ckpt_path`` resumes the whole run).
    """

    def __init__(
        self,
        generator: nn.Module | dict,
        condition_dropout: float = 0.2,
        learning_rate: float = 2e-3,
        weight_decay: float = 0.01,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(generator, Mapping):
            generator = instantiate_spec(generator, "a generator spec")
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], got {condition_dropout}")
        save_safe_hyperparameters(
            self, {"generator": generator, "optimizer": optimizer, "scheduler": scheduler}
        )
        self.generator = generator
        if init_checkpoint is not None and init_weights_needed():  # not when a full checkpoint follows
            load_init_checkpoint(generator, init_checkpoint)
        _warn_if_dropout_stacks(generator, condition_dropout)
        self.condition_dropout = condition_dropout
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def on_fit_start(self) -> None:
        check_training_steps(self.trainer)  # zero steps is an error, not a silent success
        # the hyperparameters with the validation metrics, instead of Lightning's `hp_metric = -1`
        hparams = {k: v for k, v in self.hparams_initial.items() if k != "_class_path"}
        log_hparams_with_metrics(self.trainer, hparams, self.validation_metric_names())

    def on_fit_end(self) -> None:
        check_training_batches(self.trainer)  # a resumed fit's zero batches (see zero_work)

    def _loss(self, batch: dict[str, Tensor], drop: bool) -> Tensor:
        frames, condition = batch["frames"], batch["condition"]
        if drop and self.condition_dropout > 0:
            keep = torch.rand(frames.shape[0], device=frames.device) >= self.condition_dropout
            condition = where_condition(keep, condition, self.generator.null_condition(condition))
        steps = self.generator.pattern.frames_to_steps(frames, pad_id(self.generator))
        logits = self.generator(steps, condition)  # [B, K, S, V]
        check_logits(logits, self.generator, steps.shape[0], steps.shape[2])
        mask = self.generator.pattern.valid_mask(steps.shape[2], steps.device).expand_as(steps)
        return F.cross_entropy(logits[mask].float(), steps[mask])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch, drop=True)
        self.log("train/nll", loss, prog_bar=True)
        return loss

    def validation_metric_names(self) -> list[str]:
        """What :meth:`validation_step` logs (the metrics of TensorBoard's HParams view)."""
        return ["val/nll"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val/nll", self._loss(batch, drop=False), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        return build_optimizers(
            self.generator.parameters(),
            self.optimizer_factory,
            self.scheduler_factory,
            self.learning_rate,
            self.weight_decay,
        )


def _warn_if_dropout_stacks(generator: nn.Module, condition_dropout: float) -> None:
    """Warn when the model declares its own condition dropout: the two would compound."""
    for owner in (generator, getattr(generator, "module", None)):
        own = getattr(owner, "condition_dropout", None)
        if condition_dropout > 0 and isinstance(own, (int, float)) and own > 0:
            kept = (1 - own) * (1 - condition_dropout)
            rank_zero_warn(
                f"PretrainModule(condition_dropout={condition_dropout}) stacks on the condition dropout "
                f"{type(owner).__name__} applies itself (condition_dropout={own}): a prompt is kept with "
                f"probability {kept:.3g}, not {1 - condition_dropout:.3g}. Set PretrainModule(condition_dropout=0) "
                "to keep only the model's, or turn the model's off",
                category=UserWarning,
            )
            return
