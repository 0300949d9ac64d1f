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


def cfg_logits(cond: Tensor, uncond: Tensor, scale: float | Tensor) -> Tensor:
    """``uncond + scale * (cond - uncond)`` on logits ``[..., V]``.

    Raw logits and log-probabilities give the same distribution after softmax, because the per-row
    normalising constants enter as ``const + scale * const'`` which softmax ignores. ``scale`` is a
    number, or a ``[N]`` tensor of one scale per sequence (the leading dim of ``cond``).
    """
    if cond.shape != uncond.shape:
        raise ValueError(
            f"cond and uncond logits must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )
    if isinstance(scale, Tensor):
        return uncond + _per_sequence_scale(scale, cond) * (cond - uncond)
    scale = check_guidance_scale(scale)
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def _per_sequence_scale(scale: Tensor, cond: Tensor) -> Tensor:
    """``[N]`` scales -> ``[N, 1, ..., 1]`` in ``cond``'s dtype, broadcasting over everything after dim 0."""
    if scale.dim() != 1 or scale.shape[0] != cond.shape[0]:
        raise ValueError(
            f"a per-sequence guidance_scale must be [N] = [{cond.shape[0]}], got shape {tuple(scale.shape)}"
        )
    bad = ~(torch.isfinite(scale) & (scale >= 0))
    if bool(bad.any()):
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {scale[bad][0].item()}")
    return scale.to(cond.dtype).reshape(-1, *([1] * (cond.dim() - 1)))
