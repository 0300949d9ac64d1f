"""``FiniteGuard``: no optimizer step with non-finite gradients, no checkpoint with non-finite weights.

A checkpoint is good only if it is. Three checks make every "last good" message true:

* before every optimizer step, one fused norm over all gradients (``torch.nn.utils.get_total_norm``,
  one host sync); a NaN/inf gradient stops the run before the optimizer writes it into the weights
  (a finite loss can have NaN gradients: a divergence that masks a NaN to 0, ``logaddexp(-inf, -inf)``);
* at train start, the weights the run starts from (initialised, loaded or resumed) are finite;
* on every checkpoint save, the weights being saved are finite.

With fp16 AMP (a ``GradScaler``) inf gradients are expected now and then and the scaler skips those
steps itself, so the gradient check is left to it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_cfgrl.core.finite import (
    check_finite_weights,
    listing,
    nonfinite_tensors,
    total_norm,
    weights_finite,
)


def last_good_note(module: nn.Module) -> str:
    """What a run that stops before an optimizer step can truthfully say about its weights (checked now)."""
    if weights_finite(module):
        return (
            "The run stops before the optimizer step: the weights are finite (checked now) and unchanged by "
            "this step, and every checkpoint this run saved was checked finite when written, so the last "
            "checkpoint is a good one."
        )
    return (
        "The run stops, but the weights are already non-finite (checked now): they were started from or "
        "resumed into a bad state; do not resume from this run's checkpoints before checking them."
    )


class FiniteGuard:
    """Mix into a ``LightningModule`` (before it in the bases): the three checks of this module."""

    def on_train_start(self) -> None:
        check_finite_weights(self, "at train start (the initial, loaded or resumed weights)")  # type: ignore[arg-type]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Lightning calls this after backward (and after AMP unscaling), before optimizer.step()
        if getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None) is not None:  # type: ignore[attr-defined]
            return
        named = [(n, p.grad) for n, p in self.named_parameters() if p.grad is not None]  # type: ignore[attr-defined]
        if bool(torch.isfinite(total_norm([g for _, g in named]))):
            return
        found = nonfinite_tensors(named)
        if not found:  # the norm overflowed on finite gradients: large, not garbage
            return
        step = self.global_step  # type: ignore[attr-defined]
        raise FloatingPointError(
            f"non-finite gradients at global step {step}, before the optimizer step: {listing(found)} "
            f"(of {len(named)} parameters with gradients), although the loss was finite. "
            + last_good_note(self)  # type: ignore[arg-type]
        )
