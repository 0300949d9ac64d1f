"""One place that turns LightningCLI optimizer/scheduler callables into ``configure_optimizers`` output."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


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


def check_schedule(warmup_steps: int, decay: str) -> None:
    """ValueError unless ``decay`` is one of ``LR_DECAYS`` and ``warmup_steps >= 0``."""
    if decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {decay!r}")
    if warmup_steps < 0:
        raise ValueError(f"lr_warmup_steps must be >= 0, got {warmup_steps}")


class WarmupDecayLR(SequentialLR):
    """Multiplier of the base learning rate at optimizer step s: linear warm-up from ``1 / warmup_steps``
    to 1 over ``warmup_steps`` (``LinearLR``), then ``decay`` ("cosine", ``CosineAnnealingLR``, or
    "linear", ``LinearLR``, to 0 at ``total_steps``; or "constant")."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, decay: str) -> None:
        check_schedule(warmup_steps, decay)
        self.schedule = (warmup_steps, total_steps, decay)
        stages: list[LRScheduler] = []
        if warmup_steps > 1:  # step s < warmup_steps: (s + 1) / warmup_steps
            stages.append(LinearLR(optimizer, 1.0 / warmup_steps, 1.0, total_iters=warmup_steps - 1))
        elif warmup_steps == 1:  # 1 / 1 at step 0
            stages.append(ConstantLR(optimizer, 1.0, total_iters=0))
        decay_steps = total_steps - warmup_steps
        if decay == "cosine" and decay_steps > 0:
            stages.append(CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=0.0))
        elif decay == "linear" and decay_steps > 0:
            stages.append(LinearLR(optimizer, 1.0, 0.0, total_iters=decay_steps))
        else:
            stages.append(ConstantLR(optimizer, 1.0, total_iters=0))
        milestones = [warmup_steps] if len(stages) == 2 else []
        with _quiet():
            super().__init__(optimizer, stages, milestones)

    def step(self) -> None:  # type: ignore[override]
        with _quiet():
            super().step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "_schedulers" in state_dict:
            super().load_state_dict(state_dict)
            return
        # the state of the LambdaLR that ran this schedule before: replay its steps from the start
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        fresh = WarmupDecayLR(self.optimizer, *self.schedule)
        with _quiet():
            for _ in range(int(state_dict["last_epoch"])):
                fresh.step()
        self.__dict__.update(fresh.__dict__)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """SequentialLR steps a stage with an epoch number at its milestone (torch warns that the argument is
    deprecated); a replayed schedule steps before any optimizer step."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The epoch parameter in `scheduler.step", category=UserWarning
        )
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        yield
