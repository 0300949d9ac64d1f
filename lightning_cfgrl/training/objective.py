"""Base class of the callbacks that contribute loss terms to ``CFGRLModule.training_step``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lightning.pytorch import Callback
from torch import Tensor

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
