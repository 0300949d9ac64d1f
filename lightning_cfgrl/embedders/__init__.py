"""Embedders map tokens ``[B, K, T]`` to vectors ``[B, D]`` (diversity rewards and evaluation)."""

from lightning_cfgrl.embedders.histogram import TokenHistogramEmbedder

__all__ = ["TokenHistogramEmbedder"]
