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
from lightning_cfgrl.training.condition_dropout import applied_condition_dropout, declared_condition_dropout
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
            distribution that CFG needs. It stacks on any condition dropout the model applies itself,
            which gets a warning naming the resulting keep probability (set one of the two to 0): one
            the model declares (an attribute such as ``condition_dropout``, ``cond_drop_prob`` or
            ``p_uncond`` on any submodule, checked at construction) or one it applies (its train-mode
            logits equal the null condition's for some rows, measured at the first training step);
            see :mod:`lightning_cfgrl.training.condition_dropout`.
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
        self._own_dropout_checked = _warn_if_dropout_stacks(generator, condition_dropout)
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
        if not self._own_dropout_checked:  # once, on a real batch: dropout the model applies in code
            self._own_dropout_checked = True
            _warn_if_dropout_is_applied(self.generator, batch, self.condition_dropout)
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


def _stacking_message(condition_dropout: float, own: float, what: str) -> str:
    kept = (1 - own) * (1 - condition_dropout)
    return (
        f"PretrainModule(condition_dropout={condition_dropout}) stacks on the condition dropout {what}: a "
        f"prompt is kept with probability {kept:.3g}, not {1 - condition_dropout:.3g}. Set "
        "PretrainModule(condition_dropout=0) to keep only the model's, or turn the model's off"
    )


def _warn_if_dropout_stacks(generator: nn.Module, condition_dropout: float) -> bool:
    """Warn when the model declares its own condition dropout (any spelling, any submodule): the two would
    compound. True when nothing is left to check (warned, or ``condition_dropout`` is 0)."""
    if condition_dropout == 0:
        return True
    declared = declared_condition_dropout(generator)
    if not declared:
        return False
    path, name, own = declared[0]
    more = f" (and {', '.join(f'{p}.{n}={v}' for p, n, v in declared[1:])})" if len(declared) > 1 else ""
    rank_zero_warn(
        _stacking_message(condition_dropout, own, f"the model declares itself ({path}.{name}={own}{more})"),
        category=UserWarning,
    )
    return True


def _warn_if_dropout_is_applied(
    generator: nn.Module, batch: dict[str, Tensor], condition_dropout: float
) -> None:
    """Warn when the model, in train mode with every dropout module off, replaces prompts by its null
    condition itself (measured on the first training batch, however its code spells it)."""
    frames, condition = batch["frames"], batch["condition"]
    steps = generator.pattern.frames_to_steps(frames, pad_id(generator))
    share = applied_condition_dropout(generator, steps, condition)
    if share:
        rank_zero_warn(
            _stacking_message(
                condition_dropout,
                share,
                f"the model applies in train mode ({type(generator).__name__} replaced {share:.0%} of the first "
                "batch's prompts by its null condition over 8 draws, with every dropout module off)",
            ),
            category=UserWarning,
        )
