"""Built-in token models (the reference transformer, its options and its KV cache)."""

from lightning_cfgrl.models.kv_cache import KVCache
from lightning_cfgrl.models.options import TransformerOptions
from lightning_cfgrl.models.transformer import AudioTokenTransformer

__all__ = ["AudioTokenTransformer", "KVCache", "TransformerOptions"]
