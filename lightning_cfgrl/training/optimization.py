"""One place that turns LightningCLI optimizer/scheduler callables into ``configure_optimizers`` output."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn


def build_optimizers(
    parameters: Iterable[nn.Parameter],
    optimizer: OptimizerCallable | None,
    scheduler: LRSchedulerCallable | None,
    learning_rate: float,
    weight_decay: float = 0.0,
) -> Any:
    """AdamW(``learning_rate``, ``weight_decay``) unless an optimizer callable is given; a scheduler, if
    any, steps every optimizer step (RL finetuning counts steps, not epochs)."""
    params = [p for p in parameters if p.requires_grad]
    opt = (
        optimizer(params)
        if optimizer is not None
        else torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    )
    if scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler(opt), "interval": "step"}}


LR_DECAYS: tuple[str, ...] = ("cosine", "linear", "constant")


def warmup_decay_lambda(warmup_steps: int, total_steps: int, decay: str) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step s: linear warm-up from ``1 / warmup_steps``
    to 1 over ``warmup_steps``, then ``decay`` ("cosine" or "linear" to 0 at ``total_steps``, or
    "constant")."""
    if decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {decay!r}")
    if warmup_steps < 0:
        raise ValueError(f"lr_warmup_steps must be >= 0, got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "constant" or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress

    return factor
