"""CFG distillation on a mix of the student's own samples and the CFG teacher's (GKD's on/off-policy mix)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_cfgrl.core.condition import Condition, condition_batch_size, select_condition
from lightning_cfgrl.core.sampling import SamplingConfig, sample
from lightning_cfgrl.training.distill import CFGDistillCallback
from lightning_cfgrl.training.module import CFGRLModule


class TeacherMixDistillCallback(CFGDistillCallback):
    """:class:`~lightning_cfgrl.CFGDistillCallback` whose term also averages over rows sampled from the
    CFG teacher.

    Args:
        teacher_fraction: this fraction of the rows the term averages over are sampled from the CFG
            teacher (``round(f N / (1 - f))`` rows added to the student's N, prompts taken in turn from the
            batch). They show the student the high-adherence regions it rarely visits itself; they are
            off-policy, so a policy gradient skips them (``RolloutBatch.num_on_policy``). 0 is pure
            on-policy distillation. TRL's ``lmbda`` is the on-policy fraction, ``1 - teacher_fraction``.
        **kwargs: :class:`~lightning_cfgrl.CFGDistillCallback`'s arguments.
    """

    def __init__(self, teacher_fraction: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (math.isfinite(teacher_fraction) and 0.0 <= teacher_fraction < 1.0):
            raise ValueError(f"teacher_fraction must be in [0, 1), got {teacher_fraction}")
        self.teacher_fraction = teacher_fraction

    def hyperparameters(self) -> dict[str, Any]:
        return super().hyperparameters() | {"distill/teacher_fraction": self.teacher_fraction}

    @torch.no_grad()
    def extra_rollouts(
        self, pl_module: CFGRLModule, condition: Condition, seed: int
    ) -> tuple[Tensor, Condition] | None:
        """``round(f N / (1 - f))`` sequences ``[R, K, T]`` sampled from the teacher with CFG, and their prompts."""
        b = condition_batch_size(condition)
        n = pl_module.group_size * b
        rows = round(self.teacher_fraction * n / (1.0 - self.teacher_fraction))
        if rows == 0:
            return None
        prompts = select_condition(condition, torch.arange(rows, device=pl_module.device) % b)
        config = SamplingConfig(guidance_scale=self.guidance_scale)
        return sample(self.teacher, prompts, pl_module.num_frames, config, seed=seed), prompts
