"""Metrics over generated samples."""

from lightning_cfgrl.metrics.pairwise import group_pairwise_diversity, pairwise_cosine_diversity

__all__ = ["group_pairwise_diversity", "pairwise_cosine_diversity"]

from lightning_cfgrl.metrics.diversity_metric import PairwiseDiversity  # noqa: E402

__all__ += ["PairwiseDiversity"]
