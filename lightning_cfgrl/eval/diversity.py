"""Within-prompt diversity for evaluation: mean pairwise ``1 - cos`` between a prompt's samples.

The pairwise ``1 - cos`` itself has one home, :func:`lightning_cfgrl.core.diversity.pairwise_distances`.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor

from lightning_cfgrl.core.diversity import group_diversity, pairwise_distances, token_histograms


def pairwise_cosine_diversity(embeddings: Tensor) -> Tensor:
    """``[B, G, D]`` -> ``[B]``: mean of ``1 - cos(e_i, e_j)`` over the ``G (G - 1) / 2`` pairs i < j."""
    return group_diversity(pairwise_distances(embeddings))


def group_pairwise_diversity(frames: Tensor, group_size: int, vocab_size: int) -> Tensor:
    """Token-histogram diversity of consecutive groups: ``[B * G, K, T] -> [B]``.

    A cheap embedder-free measure (see :class:`~lightning_cfgrl.embedders.TokenHistogramEmbedder`).
    """
    grouped = rearrange(token_histograms(frames, vocab_size), "(b g) d -> b g d", g=group_size)
    return pairwise_cosine_diversity(grouped)
