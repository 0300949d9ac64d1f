"""Embedders map tokens ``[B, K, T]`` to vectors ``[B, D]`` (diversity rewards and evaluation)."""

from lightning_cfgrl.core.diversity import TokenEmbedder
from lightning_cfgrl.embedders.contrastive import ContrastiveTokenEmbedder
from lightning_cfgrl.embedders.contrastive_training import ContrastiveEmbedderModule
from lightning_cfgrl.embedders.crepe import CrepeAudioEmbedder
from lightning_cfgrl.embedders.encodec_audio import EncodecAudioEmbedder
from lightning_cfgrl.embedders.histogram import TokenHistogramEmbedder

__all__ = [
    "ContrastiveEmbedderModule",
    "ContrastiveTokenEmbedder",
    "CrepeAudioEmbedder",
    "EncodecAudioEmbedder",
    "TokenEmbedder",
    "TokenHistogramEmbedder",
]
