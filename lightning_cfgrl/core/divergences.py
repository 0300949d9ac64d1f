"""Per-token divergences between a student and a teacher distribution, from logits ``[..., V]``.

Everything is computed in float32 at least (float64 stays float64): bf16 log-softmax differences
lose the small KL values that distillation lives on.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Divergence = Literal["reverse_kl", "forward_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "jsd")


def _log_probs(logits: Tensor) -> Tensor:
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return torch.log_softmax(logits.to(dtype), dim=-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p || q)`` over the last dim; 0 * log 0 terms (masked tokens) count as 0.

    The log-ratio is masked *before* it is multiplied by p: where p = 0 it may be -inf or NaN, and
    masking the product instead still sends ``0 * inf = NaN`` into the gradient of the whole row.
    A NaN p is not masked away (NaN * 0 is NaN): a real NaN propagates.
    """
    p = log_p.exp()
    ratio = torch.where(p > 0, log_p - log_q, torch.zeros_like(p))
    return (p * ratio).sum(-1)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``KL(student || teacher)`` per token: ``[..., V] -> [...]`` (mode seeking, the paper's choice)."""
    return _kl(_log_probs(student_logits), _log_probs(teacher_logits))


def forward_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``KL(teacher || student)`` per token: ``[..., V] -> [...]`` (mass covering)."""
    return _kl(_log_probs(teacher_logits), _log_probs(student_logits))


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5) -> Tensor:
    """GKD's generalized JSD per token: ``beta KL(t || m) + (1 - beta) KL(s || m)``, ``m = beta t + (1 - beta) s``.

    ``beta = 0.5`` is the symmetric Jensen-Shannon divergence (bounded by log 2).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd beta must be in (0, 1), got {beta}")
    log_s, log_t = _log_probs(student_logits), _log_probs(teacher_logits)
    # a token both mask (-inf, -inf) has m = 0, but logaddexp's gradient there is 0 * NaN: feed it zeros
    # and put the -inf back with masked_fill (whose gradient at the filled entries is 0)
    both = torch.isneginf(log_s) & torch.isneginf(log_t)
    log_m = torch.logaddexp(
        log_t.masked_fill(both, 0.0) + math.log(beta), log_s.masked_fill(both, 0.0) + math.log(1.0 - beta)
    ).masked_fill(both, float("-inf"))
    return beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)


def token_divergence(
    student_logits: Tensor, teacher_logits: Tensor, kind: str, jsd_beta: float = 0.5
) -> Tensor:
    """Dispatch on ``kind`` (one of ``DIVERGENCES``): ``[..., V] x [..., V] -> [...]``."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    if kind == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits)
    if kind == "forward_kl":
        return forward_kl(student_logits, teacher_logits)
    if kind == "jsd":
        return generalized_jsd(student_logits, teacher_logits, jsd_beta)
    raise ValueError(f"divergence must be one of {DIVERGENCES}, got {kind!r}")
