"""One place that turns LightningCLI optimizer/scheduler callables into ``configure_optimizers`` output."""

from __future__ import annotations

from collections.abc import Iterable
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
