"""Base class of the callbacks that contribute loss terms to ``CFGRLModule.training_step``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch import Callback
from torch import Tensor

from lightning_cfgrl.core.condition import Condition
from lightning_cfgrl.training.hparams import log_hparams_with_metrics
from lightning_cfgrl.training.rollout import RolloutBatch

if TYPE_CHECKING:
    from lightning_cfgrl.training.module import CFGRLModule


class ObjectiveCallback(Callback):
    """A Lightning ``Callback`` that also returns named loss terms for each rollout.

    ``CFGRLModule`` finds every ``ObjectiveCallback`` among ``trainer.callbacks``, calls
    :meth:`loss_terms` once per training step, sums the returned (already weighted) terms into the loss
    and logs each as ``train/<name>``. Frozen helpers (teacher, embedder) belong to the callback, which
    moves them with the module and never hands them to the optimizer.
    """

    def rollout_controls(
        self, pl_module: CFGRLModule, num_prompts: int, group_size: int, rng: torch.Generator | None
    ) -> dict[str, Tensor]:
        """Control values this objective feeds the student, ``{name: [num_prompts * group_size]}`` (a
        prompt's G samples adjacent); ``{}`` (the default) for none.

        Called before every rollout, so the rollout samples and the loss sees the same values (they come
        back as ``RolloutBatch.controls``). ``rng`` (seeded per step and process by the module) draws
        training values; ``rng=None`` asks for fixed reference values (validation and set-up checks).
        """
        return {}

    def loss_terms(self, pl_module: CFGRLModule, batch: RolloutBatch) -> dict[str, Tensor]:
        """Return ``{name: scalar loss}``; gradients flow through ``batch.student_logits``."""
        raise NotImplementedError

    def extra_rollouts(
        self, pl_module: CFGRLModule, condition: Condition, seed: int
    ) -> tuple[Tensor, Condition] | None:
        """Off-policy rows to append to this step's rollout, or None (the default).

        ``condition`` is the batch's prompts ``[B, ...]``; return ``(steps [M, K, S], condition [M, ...])``
        sampled without grad. The module appends them after the student's own samples
        (``RolloutBatch.num_on_policy``), so every objective sees them and a policy gradient can skip them.
        """
        return None

    def hyperparameters(self) -> dict[str, Any]:
        """Key settings (``{"<term>/<setting>": number or str}``), logged with the module's hparams at
        fit start, so that runs can be compared by them (TensorBoard's HParams tab)."""
        return {}


def log_objective_hyperparameters(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Log the module's hyperparameters together with every objective callback's settings.

    Called from ``on_fit_start``, i.e. before Lightning logs the module's hyperparameters alone:
    TensorBoard keeps a run's first hparams record, and a logger's ``hparams.yaml`` keeps the union. The
    module's ``validation_metric_names()`` become the HParams view's metrics (``training/hparams.py``).
    """
    settings: dict[str, Any] = {}
    for callback in trainer.callbacks:
        if isinstance(callback, ObjectiveCallback):
            settings.update(callback.hyperparameters())
    if not trainer.loggers:
        return
    hparams = {k: v for k, v in pl_module.hparams_initial.items() if k != "_class_path"}
    names = getattr(pl_module, "validation_metric_names", None)
    log_hparams_with_metrics(trainer, {**hparams, **settings}, names() if callable(names) else [])
