"""Classifier-free guidance on logits."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

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

    Masked tokens (logit ``-inf``), where the formula gives NaN or ``+inf``: ``scale = 0`` is the
    unconditional model and ``scale = 1`` the conditional one, exactly; for any other scale a token
    masked in either model stays masked (a token the condition forbids cannot become likely by guiding
    toward the condition, and ``(1 - g) * -inf`` must not make a token certain for g > 1). NaN inputs
    stay NaN.
    """
    if cond.shape != uncond.shape:
        raise ValueError(
            f"cond and uncond logits must have the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )
    if isinstance(scale, Tensor):
        return _per_sequence_mix(cond, uncond, scale)
    scale = check_guidance_scale(scale)
    if scale == 1.0:
        return cond
    if scale == 0.0:
        return uncond
    return _masked_mix(cond, uncond, scale)


def cfg_mixer(scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """:func:`cfg_logits` for one number ``scale``, validated once: ``mix(cond, uncond)`` does no checks
    (the sampler's per-step mixing; the caller guarantees equal shapes). Same results, bitwise."""
    scale = check_guidance_scale(scale)
    if scale == 1.0:
        return lambda cond, uncond: cond
    if scale == 0.0:
        return lambda cond, uncond: uncond
    return partial(_masked_mix, scale=scale)


def _masked_mix(cond: Tensor, uncond: Tensor, scale: float | Tensor) -> Tensor:
    # uncond + scale * (cond - uncond), rounded op by op as written (``torch.lerp`` rounds differently:
    # it computes ``cond - (cond - uncond) * (1 - scale)`` for scale >= 0.5, with a fused multiply-add,
    # which changes about a third of the mixed logits by an ulp and so, rarely, a sampled token).
    # In place on the fresh difference: two fewer allocations per call.
    mixed = (cond - uncond).mul_(scale).add_(uncond)
    # fmin(a, b) is -inf exactly when a or b is -inf (fmin ignores a NaN): one op for isneginf | isneginf
    return mixed.masked_fill_(torch.fmin(cond, uncond) == float("-inf"), float("-inf"))


def _per_sequence_mix(cond: Tensor, uncond: Tensor, scale: Tensor) -> Tensor:
    """``[N]`` scales, one per sequence (broadcast over everything after dim 0); rows at 0 and 1 are the
    unconditional and conditional logits exactly, as with a number."""
    if scale.dim() != 1 or scale.shape[0] != cond.shape[0]:
        raise ValueError(
            f"a per-sequence guidance_scale must be [N] = [{cond.shape[0]}], got shape {tuple(scale.shape)}"
        )
    bad = ~(torch.isfinite(scale) & (scale >= 0))
    if bool(bad.any()):
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {scale[bad][0].item()}")
    s = scale.to(cond.dtype).reshape(-1, *([1] * (cond.dim() - 1)))
    return torch.where(s == 1.0, cond, torch.where(s == 0.0, uncond, _masked_mix(cond, uncond, s)))
