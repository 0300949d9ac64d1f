"""Classifier-free guidance on logits."""

from __future__ import annotations

import math

import torch
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

    Masked tokens (logit ``-inf``), where the formula gives NaN or ``+inf``: ``scale = 0`` is the
    unconditional model and ``scale = 1`` the conditional one, exactly; for any other scale a token
    masked in either model stays masked (a token the condition forbids cannot become likely by guiding
    toward the condition, and ``(1 - g) * -inf`` must not make a token certain for g > 1). NaN inputs
    stay NaN.
    """
    scale = check_guidance_scale(scale)
    if cond.shape != uncond.shape:
        raise ValueError(
            f"cond and uncond logits must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )
    if scale == 1.0:
        return cond
    if scale == 0.0:
        return uncond
    mixed = uncond + scale * (cond - uncond)
    return mixed.masked_fill(torch.isneginf(cond) | torch.isneginf(uncond), float("-inf"))
