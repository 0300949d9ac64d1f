"""Classifier-free guidance on logits."""

from __future__ import annotations

import math

from torch import Tensor


def check_guidance_scale(scale: float) -> float:
    """Validate a guidance scale: a finite float >= 0 (1 means no guidance, 0 the unconditional model)."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {scale!r}") from None
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {scale}")
    return scale


def cfg_logits(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """``uncond + scale * (cond - uncond)`` on logits ``[..., V]``.

    Raw logits and log-probabilities give the same distribution after softmax, because the per-row
    normalising constants enter as ``const + scale * const'`` which softmax ignores.
    """
    scale = check_guidance_scale(scale)
    if cond.shape != uncond.shape:
        raise ValueError(
            f"cond and uncond logits must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)
