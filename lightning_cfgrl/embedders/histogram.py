"""A parameter-free embedder: per-codebook n-gram histograms. Useful as an evaluation embedder that
cannot be "hacked" the way a learned reward embedder can, and as a fast diversity probe.

Bigrams (the default) rather than unigrams: a low-temperature sample stuck in a short loop has a
spiky unigram histogram that looks "far" from every other sample, which would read as diversity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_cfgrl.core.diversity import token_histograms


class TokenHistogramEmbedder(nn.Module):
    """``tokens [B, K, T] -> [B, K * V**ngram]`` n-gram frequencies; no parameters, nothing to train."""

    def __init__(self, vocab_size: int, ngram: int = 2) -> None:
        super().__init__()
        self.vocab_size, self.ngram = vocab_size, ngram

    @torch.no_grad()
    def forward(self, tokens: Tensor) -> Tensor:
        return token_histograms(tokens, self.vocab_size, self.ngram)
