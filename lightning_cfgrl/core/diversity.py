"""Diversity reward and its policy-gradient surrogate (plain torch, no Lightning).

For one prompt x and G >= 2 samples y_1..y_G with embeddings e_i = E(y_i), the pair reward is
``d_ij = 1 - cos(e_i, e_j)`` and sample i's reward is ``r_i = mean_{j != i} d_ij``. The objective is the
expected pairwise diversity of two independent samples, ``D(theta) = E_{y, y'} d(y, y')``, whose gradient
is ``2 E_y[f(y) grad log pi(y)]`` with ``f(y) = E_{y'} d(y, y')`` (each pair credits both samples). Since
``E[r_i | y_i] = f(y_i)``, ``2 mean_i (r_i - b_i) grad log pi(y_i)`` is unbiased whenever the baseline
b_i does not depend on y_i.

Baselines offered (all independent of y_i):

* ``"none"``: b_i = 0.
* ``"other_pairs"``: the mean of d_jk over the pairs of the same prompt that do not involve i (G >= 3).
* ``"other_prompts"``: the mean reward of the *other prompts'* samples in the batch (needs >= 2 prompts).
* ``"running_mean"``: :class:`RunningMeanBaseline`, an EMA of past batches' mean reward.

Not offered: the leave-one-out mean of the other samples' *rewards* (RLOO's baseline). Each r_j contains
d_ji, which depends on y_i, so it shrinks the expected gradient by (G - 2) / (G - 1), and cancels it
exactly for G = 2.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

Baseline = Literal["running_mean", "other_pairs", "other_prompts", "none"]
BASELINES: tuple[str, ...] = ("running_mean", "other_pairs", "other_prompts", "none")
AdvantageNorm = Literal["batch", "group", "none"]
ADVANTAGE_NORMS: tuple[str, ...] = ("batch", "group", "none")


@runtime_checkable
class TokenEmbedder(Protocol):
    """What a diversity embedder is: ``tokens [B, K, T]`` int64 frames -> ``[B, D]`` float embeddings."""

    def __call__(self, tokens: Tensor) -> Tensor: ...


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """``[B, G, D]`` -> ``[B, G, G]`` of ``1 - cos(e_i, e_j)`` (float32 or wider; 0 on the diagonal)."""
    if embeddings.dim() != 3 or embeddings.shape[1] < 2:
        raise ValueError(f"embeddings must be [B, G >= 2, D], got shape {tuple(embeddings.shape)}")
    x = embeddings if embeddings.dtype == torch.float64 else embeddings.float()
    unit = F.normalize(x, dim=-1)
    distances = 1.0 - unit @ unit.transpose(1, 2)
    # a sample is at distance 0 from itself, exactly (rounding would leave ~1e-7 there)
    eye = torch.eye(embeddings.shape[1], dtype=torch.bool, device=embeddings.device)
    return distances.masked_fill(eye, 0.0)


def diversity_rewards(distances: Tensor) -> Tensor:
    """``[B, G, G]`` pair distances -> ``[B, G]`` rewards ``r_i = mean_{j != i} d_ij``."""
    g = distances.shape[-1]
    return distances.sum(-1) / (g - 1)


def group_diversity(distances: Tensor) -> Tensor:
    """``[B, G, G]`` -> ``[B]`` mean over the G (G - 1) / 2 pairs (equals the mean of the group's rewards)."""
    return diversity_rewards(distances).mean(-1)


def other_pairs_baseline(distances: Tensor) -> Tensor:
    """``[B, G, G]`` -> ``[B, G]``: mean d_jk over pairs j < k of the group with j, k != i (G >= 3)."""
    g = distances.shape[-1]
    if g < 3:
        raise ValueError(f"the 'other_pairs' baseline needs G >= 3 samples per prompt, got G = {g}")
    total = distances.sum(dim=(-1, -2)) / 2  # [B], each pair once
    involving_i = distances.sum(-1)  # [B, G]: the G - 1 pairs that contain i
    num_other = (g - 1) * (g - 2) / 2
    return (total[:, None] - involving_i) / num_other


def other_prompts_baseline(rewards: Tensor) -> Tensor:
    """``[B, G]`` -> ``[B, G]``: for each sample, the mean reward of the samples of the other B - 1 prompts."""
    b, g = rewards.shape
    if b < 2:
        raise ValueError(f"the 'other_prompts' baseline needs >= 2 prompts per batch, got {b}")
    per_prompt = reduce(rewards, "b g -> b", "sum")
    others = (per_prompt.sum() - per_prompt) / ((b - 1) * g)
    return others[:, None].expand(b, g)


class RunningMeanBaseline:
    """Bias-corrected EMA of the mean reward over past batches.

    ``value`` is read before the current batch's rewards are known and ``update`` is called after the
    loss is built, so the baseline never depends on the current samples. Before the first update it
    is 0 (no history: the same as ``"none"``).

    Args:
        decay: EMA decay in [0, 1); 0 uses only the previous batch.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.ema = 0.0
        self.count = 0

    @property
    def value(self) -> float:
        if self.count == 0:
            return 0.0
        # Adam-style debiasing: the EMA starts at 0, so early values are scaled up to an average
        return self.ema / (1.0 - self.decay**self.count)

    def update(self, batch_mean: float) -> None:
        self.ema = self.decay * self.ema + (1.0 - self.decay) * float(batch_mean)
        self.count += 1

    def state_dict(self) -> dict[str, float | int]:
        return {"ema": self.ema, "count": self.count}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.ema, self.count = float(state["ema"]), int(state["count"])


def compute_baseline(
    kind: str, distances: Tensor, rewards: Tensor, running: RunningMeanBaseline | None
) -> Tensor:
    """``[B, G, G]`` distances and ``[B, G]`` rewards -> ``[B, G]`` baselines of the given ``kind``."""
    if kind == "none":
        return torch.zeros_like(rewards)
    if kind == "other_pairs":
        return other_pairs_baseline(distances)
    if kind == "other_prompts":
        return other_prompts_baseline(rewards)
    if kind == "running_mean":
        if running is None:
            raise ValueError("the 'running_mean' baseline needs a RunningMeanBaseline, got None")
        return torch.full_like(rewards, running.value)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


REFERENCE_SPREAD = 0.1


def normalize_advantages(
    advantages: Tensor, rewards: Tensor, mode: str, eps: float = 1e-4, batch_std: Tensor | None = None
) -> Tensor:
    """``[B, G]`` advantages rescaled to a standard deviation of ``REFERENCE_SPREAD`` (0.1): divided by
    the std of all B G rewards (``"batch"``) or of each prompt's own G rewards (``"group"``, as GRPO;
    G >= 3, since the two rewards of a pair are equal), then times 0.1; ``"none"`` leaves them as they
    are. Only the scale changes (the baseline stays the one chosen), so ``beta`` no longer depends on
    how spread out the embedder's distances are; 0.1 is about the spread of ``1 - cos`` rewards of a
    trained contrastive embedder on the built-in domains, so beta keeps the paper's order of magnitude.
    The std depends a little on y_i, a small bias GRPO also accepts; ``eps`` keeps equal rewards finite.
    ``batch_std`` replaces the std of ``rewards`` for ``"batch"`` (the global batch's, across processes).
    """
    if mode == "none":
        return advantages
    if mode == "batch":
        std = rewards.std(correction=0) if batch_std is None else batch_std
        return advantages * (REFERENCE_SPREAD / (std + eps))
    if mode == "group":
        if rewards.shape[1] < 3:
            raise ValueError(
                f"advantage_norm='group' needs G >= 3 samples per prompt (a pair's two rewards are equal), "
                f"got G = {rewards.shape[1]}; use 'batch'"
            )
        return advantages * (REFERENCE_SPREAD / (rewards.std(dim=1, correction=0, keepdim=True) + eps))
    raise ValueError(f"advantage_norm must be one of {ADVANTAGE_NORMS}, got {mode!r}")


def diversity_surrogate(advantages: Tensor, sequence_logprobs: Tensor) -> Tensor:
    """Scalar whose gradient estimates ``grad D``: ``2 * mean_i adv_i * log pi(y_i | x)``.

    ``advantages [N]`` (= r_i - b_i, treated as constants) and ``sequence_logprobs [N]`` (log pi summed
    over a sequence's generated tokens, with grad). The factor 2: each pair's reward credits both of its
    samples, so the per-sample form alone estimates half of ``grad D``. Maximise it (the loss is
    ``-beta *`` this). Computed in float64: the advantages of a group sum to about zero while each
    ``log pi`` is large (~100 nats), so float32 products would cancel catastrophically.
    """
    if advantages.shape != sequence_logprobs.shape or advantages.dim() != 1:
        raise ValueError(
            f"advantages and sequence_logprobs must both be [N], got {tuple(advantages.shape)} and "
            f"{tuple(sequence_logprobs.shape)}"
        )
    product = advantages.detach().double() * sequence_logprobs.double()
    return (2.0 * product.mean()).to(sequence_logprobs.dtype)


def grouped(x: Tensor, group_size: int) -> Tensor:
    """``[B * G, ...]`` (a prompt's G samples adjacent) -> ``[B, G, ...]``."""
    if x.shape[0] % group_size:
        raise ValueError(f"batch of {x.shape[0]} samples is not a multiple of group_size {group_size}")
    return rearrange(x, "(b g) ... -> b g ...", g=group_size)


def token_histograms(frames: Tensor, vocab_size: int, ngram: int = 2) -> Tensor:
    """``[B, K, T]`` ids -> ``[B, K * V**ngram]`` per-codebook n-gram frequencies."""
    if ngram not in (1, 2):
        raise ValueError(f"ngram must be 1 or 2, got {ngram}")
    ids = frames if ngram == 1 else frames[..., :-1] * vocab_size + frames[..., 1:]
    # scatter, not one_hot: a one-hot of V^2 = 4096 bigrams per position would take B K T V^2 floats
    counts = torch.zeros(*ids.shape[:2], vocab_size**ngram, device=ids.device)
    counts.scatter_add_(2, ids, torch.ones(ids.shape, device=ids.device)).div_(ids.shape[2])  # [B, K, V^n]
    return rearrange(counts, "b k v -> b (k v)")
