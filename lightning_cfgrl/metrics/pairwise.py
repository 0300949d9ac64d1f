"""Within-prompt diversity: mean pairwise ``1 - cos`` between the embeddings of a prompt's samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def pairwise_cosine_diversity(embeddings: Tensor) -> Tensor:
    """``[B, G, D]`` -> ``[B]``: mean of ``1 - cos(e_i, e_j)`` over the ``G (G - 1) / 2`` pairs i < j."""
    if embeddings.dim() != 3 or embeddings.shape[1] < 2:
        raise ValueError(f"embeddings must be [B, G >= 2, D], got {tuple(embeddings.shape)}")
    unit = F.normalize(embeddings.float(), dim=-1)
    cos = unit @ unit.transpose(1, 2)  # [B, G, G]
    g = embeddings.shape[1]
    off_diagonal = ~torch.eye(g, dtype=torch.bool, device=embeddings.device)
    return (1.0 - cos)[:, off_diagonal].mean(-1)


def group_pairwise_diversity(frames: Tensor, group_size: int, vocab_size: int) -> Tensor:
    """Token-histogram diversity of consecutive groups: ``[B * G, K, T] -> [B]``.

    A cheap embedder-free measure (see :class:`~lightning_cfgrl.embedders.TokenHistogramEmbedder`).
    """
    from lightning_cfgrl.embedders.histogram import token_histograms

    grouped = rearrange(token_histograms(frames, vocab_size), "(b g) d -> b g d", g=group_size)
    return pairwise_cosine_diversity(grouped)
