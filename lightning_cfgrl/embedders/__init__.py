"""Embedders map tokens ``[B, K, T]`` to vectors ``[B, D]`` (diversity rewards and evaluation)."""

from lightning_cfgrl.embedders.histogram import TokenHistogramEmbedder

__all__ = ["TokenHistogramEmbedder"]

from lightning_cfgrl.diversity_reward import TokenEmbedder  # noqa: E402
from lightning_cfgrl.embedders.contrastive import ContrastiveTokenEmbedder  # noqa: E402
from lightning_cfgrl.embedders.contrastive_training import ContrastiveEmbedderModule  # noqa: E402
from lightning_cfgrl.embedders.encodec_audio import EncodecAudioEmbedder  # noqa: E402

__all__ += ["ContrastiveEmbedderModule", "ContrastiveTokenEmbedder", "EncodecAudioEmbedder", "TokenEmbedder"]
