"""``PlateauStopping``: Lightning's ``EarlyStopping`` on a smoothed training metric, checked every n steps.

On-policy distillation has its own measurement built in: every step scores fresh rollouts of the
student against the CFG teacher (``train/distill_divergence_per_token``, the objective itself), so it
needs no validation loader and works with any prompt datamodule, a train-only one included. One step's
value is noisy (16 rollouts), so the check sees an exponential moving average; a run stops when that
average has not improved by ``min_improvement`` (relative) for ``patience`` checks, and
``trainer.max_steps`` stays the cap. With ``every_n_train_steps=None`` it is ``EarlyStopping`` on a
validation metric (e.g. the embedder's ``val/triplet_accuracy`` with a ``stopping_threshold``).

Either way the step it stopped at and why are kept in its state (``stopped_step``, ``reason``; so a
script can tell a finished run from a killed one) and printed once fit ends, outside the progress bar.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities.rank_zero import rank_zero_only


@dataclass
class Plateau:
    """When a monitored metric counts as stopped improving.

    Args:
        patience: checks without an improvement before the plateau is declared.
        min_improvement: the relative improvement over the best value that counts (0.01: 1 %).
        every_n_train_steps: check every this many optimizer steps on the smoothed training metric;
            None: check after each validation, on the metric as logged (``EarlyStopping``'s way).
        smoothing: EMA decay of the per-step metric (steps mode; bias-corrected; 0: the raw value).
        min_steps: no check before this step (the first steps of a warm-up move fastest).
    """

    patience: int = 4
    min_improvement: float = 0.01
    every_n_train_steps: int | None = 25
    smoothing: float = 0.9
    min_steps: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"Plateau.patience must be >= 1 check, got {self.patience}")
        if not (math.isfinite(self.min_improvement) and self.min_improvement >= 0):
            raise ValueError(
                f"Plateau.min_improvement must be a relative improvement >= 0, got {self.min_improvement}"
            )
        if self.every_n_train_steps is not None and self.every_n_train_steps < 1:
            raise ValueError(
                f"Plateau.every_n_train_steps must be >= 1 or None, got {self.every_n_train_steps}"
            )
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"Plateau.smoothing must be in [0, 1), got {self.smoothing}")
        if self.min_steps < 0:
            raise ValueError(f"Plateau.min_steps must be >= 0, got {self.min_steps}")


class PlateauStopping(EarlyStopping):
    """Stop when ``monitor`` stops improving; ``trainer.max_steps`` is the cap.

    With ``lr_drops`` the first plateaus lower the learning rate instead (every optimizer's rate and its
    scheduler's base rate times ``lr_factor``, as ``ReduceLROnPlateau`` does) and the run goes on; the
    plateau after the last drop stops it. Both live in the optimizer's and scheduler's own state, so a
    resumed run keeps the lowered rate.

    Args:
        monitor: a logged metric, e.g. ``"train/distill_divergence_per_token"`` (mode ``"min"``) or
            ``"val/triplet_accuracy"`` (mode ``"max"``).
        mode: ``"min"`` or ``"max"``.
        plateau: when the metric counts as stopped improving (:class:`Plateau`; default ``Plateau()``).
        stopping_threshold: stop as soon as the (smoothed) metric passes this value.
        lr_drops: plateaus that lower the learning rate before one stops the run.
        lr_factor: the learning rate's factor at each drop.
    """

    def __init__(
        self,
        monitor: str,
        mode: Literal["min", "max"] = "min",
        plateau: Plateau | None = None,
        stopping_threshold: float | None = None,
        lr_drops: int = 0,
        lr_factor: float = 0.1,
    ) -> None:
        plateau = plateau if plateau is not None else Plateau()
        super().__init__(
            monitor=monitor,
            mode=mode,
            patience=plateau.patience,
            stopping_threshold=stopping_threshold,
            check_on_train_epoch_end=False,
        )
        if lr_drops < 0:
            raise ValueError(f"lr_drops must be >= 0, got {lr_drops}")
        if not 0.0 < lr_factor < 1.0:
            raise ValueError(f"lr_factor must be in (0, 1), got {lr_factor}")
        self.min_improvement = plateau.min_improvement
        self.every_n_train_steps = plateau.every_n_train_steps
        self.smoothing = plateau.smoothing
        self.min_steps = plateau.min_steps
        self.lr_drops, self.lr_factor = lr_drops, lr_factor
        self.drop_steps: list[int] = []
        self.stopped_step: int | None = None
        self.smoothed: float | None = None
        self._ema, self._ema_steps = 0.0, 0
        self._reported = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    # -- when to check --------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_train_steps is None or self._should_skip_check(trainer):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if self.strict:
                self._validate_condition_metric(trainer.callback_metrics)  # raises, listing the metrics
            return
        value = float(trainer.strategy.reduce(value.detach().float().mean(), reduce_op="mean"))
        self._ema = self.smoothing * self._ema + (1.0 - self.smoothing) * value
        self._ema_steps += 1
        self.smoothed = self._ema / (1.0 - self.smoothing**self._ema_steps)
        pl_module.log(f"{self.monitor}_smoothed", self.smoothed, batch_size=1)
        step = trainer.global_step
        if step >= self.min_steps and step % self.every_n_train_steps == 0:
            self._check(trainer, torch.tensor(self.smoothed))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_train_steps is not None or self._should_skip_check(trainer):
            return
        if trainer.global_step < self.min_steps or not self._validate_condition_metric(
            trainer.callback_metrics
        ):
            return
        self._check(trainer, trainer.callback_metrics[self.monitor].squeeze().float().cpu())

    def _check(self, trainer: pl.Trainer, current: torch.Tensor) -> None:
        if trainer.fast_dev_run:
            return
        # a relative threshold: a fixed min_delta would mean a different thing on every model's KL scale
        best = float(self.best_score)
        delta = self.min_improvement * abs(best) if math.isfinite(best) else 0.0
        self.min_delta = delta if self.mode == "max" else -delta
        should_stop, reason = self._evaluate_stopping_criteria(current)
        if should_stop and self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            every = (
                f" ({self.wait_count * self.every_n_train_steps} steps)" if self.every_n_train_steps else ""
            )
            smoothed = " (smoothed)" if self.every_n_train_steps else ""
            reason = (
                f"{self.monitor}{smoothed} did not improve by {self.min_improvement:.1%} in {self.wait_count} "
                f"checks{every}; best {float(self.best_score):.4g}, last {float(current):.4g}"
            )
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        if should_stop and self._plateaued() and len(self.drop_steps) < self.lr_drops:
            self._drop_lr(trainer)  # a plateau at this rate: go on at a lower one
            return
        if should_stop and not trainer.should_stop:
            self.stopped_epoch, self.stopped_step = trainer.current_epoch, trainer.global_step
            self.stopping_reason_message = reason
        trainer.should_stop = trainer.should_stop or should_stop

    def _plateaued(self) -> bool:
        return self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED

    def _drop_lr(self, trainer: pl.Trainer) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor
        for config in trainer.lr_scheduler_configs:  # LambdaLR & co. recompute lr from base_lrs each step
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * self.lr_factor for lr in config.scheduler.base_lrs]
        self.drop_steps.append(trainer.global_step)
        self.wait_count = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED

    # -- report and state -----------------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)

    @rank_zero_only
    def _report(self, trainer: pl.Trainer) -> None:
        if self._reported:
            return
        self._reported = True
        drops = f"; learning rate x{self.lr_factor:g} at steps {self.drop_steps}" if self.drop_steps else ""
        if self.stopped_step is not None:
            line = f"stopped at step {self.stopped_step} (cap {trainer.max_steps}): {self.stopping_reason_message}"
        else:
            line = (
                f"ran to step {trainer.global_step} without a plateau of {self.monitor}: more steps may help"
            )
        print(f"[PlateauStopping] {line}{drops}", file=sys.stderr, flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "stopped_step": self.stopped_step,
            "smoothed": self.smoothed,
            "ema": self._ema,
            "ema_steps": self._ema_steps,
            "drop_steps": list(self.drop_steps),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stopped_step = state_dict.get("stopped_step")
        self.smoothed = state_dict.get("smoothed")
        self._ema, self._ema_steps = state_dict.get("ema", 0.0), state_dict.get("ema_steps", 0)
        self.drop_steps = list(state_dict.get("drop_steps", []))


def stopped_step(checkpoint: dict[str, Any]) -> int | None:
    """The step a ``PlateauStopping`` in ``checkpoint`` (a loaded Lightning checkpoint) stopped at, or None."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("PlateauStopping") and isinstance(state, dict):
            if state.get("stopped_step") is not None:
                return int(state["stopped_step"])
    return None
