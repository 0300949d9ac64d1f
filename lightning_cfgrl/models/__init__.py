"""Built-in token models."""

from lightning_cfgrl.models.kv_cache import KVCache
from lightning_cfgrl.models.pretrain import PretrainModule
from lightning_cfgrl.models.transformer import AudioTokenTransformer

__all__ = ["AudioTokenTransformer", "KVCache", "PretrainModule"]
