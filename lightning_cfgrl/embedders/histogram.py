"""A parameter-free embedder: per-codebook n-gram histograms. Useful as an evaluation embedder that
cannot be "hacked" the way a learned reward embedder can, and as a fast diversity probe.

Bigrams (the default) rather than unigrams: a low-temperature sample stuck in a short loop has a
spiky unigram histogram that looks "far" from every other sample, which would read as diversity.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


def token_histograms(frames: Tensor, vocab_size: int, ngram: int = 2) -> Tensor:
    """``[B, K, T]`` ids -> ``[B, K * V**ngram]`` per-codebook n-gram frequencies."""
    if ngram not in (1, 2):
        raise ValueError(f"ngram must be 1 or 2, got {ngram}")
    ids = frames if ngram == 1 else frames[..., :-1] * vocab_size + frames[..., 1:]
    # scatter, not one_hot: a one-hot of V^2 = 4096 bigrams per position would take B K T V^2 floats
    counts = torch.zeros(*ids.shape[:2], vocab_size**ngram, device=ids.device)
    counts.scatter_add_(2, ids, torch.ones(ids.shape, device=ids.device)).div_(ids.shape[2])  # [B, K, V^n]
    return rearrange(counts, "b k v -> b (k v)")


class TokenHistogramEmbedder(nn.Module):
    """``tokens [B, K, T] -> [B, K * V**ngram]`` n-gram frequencies; no parameters, nothing to train."""

    def __init__(self, vocab_size: int, ngram: int = 2) -> None:
        super().__init__()
        self.vocab_size, self.ngram = vocab_size, ngram

    @torch.no_grad()
    def forward(self, tokens: Tensor) -> Tensor:
        return token_histograms(tokens, self.vocab_size, self.ngram)
