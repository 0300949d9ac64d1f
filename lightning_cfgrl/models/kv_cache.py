"""Preallocated (static) key/value cache for incremental decoding."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KVCache:
    """Per-layer keys and values ``[B, H, L_max, D_head]``, filled left to right.

    ``length`` counts cached positions (condition prefix included); ``steps`` counts cached token steps.
    Preallocating avoids a ``torch.cat`` (and a reallocation) per generated step. The buffers start at
    zero: a static-shape step (:class:`StaticStep`) attends over all ``L_max`` positions with a mask, and
    uninitialised memory may hold NaN, which a zero attention weight does not cancel (``0 * NaN = NaN``).
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.max_len = max_len
        self.length = 0
        self.steps = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v [B, H, n, D]`` after the cached ones; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def write(self, layer: int, k: Tensor, v: Tensor, position: Tensor) -> tuple[Tensor, Tensor]:
        """Static-shape write of one position: ``k, v [B, H, 1, D]`` at ``position`` (``[1]`` int64, a
        tensor so that no Python number changes from step to step); return the whole buffers
        ``[B, H, L_max, D]``, to be attended with :attr:`StaticStep.mask`. Does not move ``length``."""
        self.keys[layer].index_copy_(2, position, k)
        self.values[layer].index_copy_(2, position, v)
        return self.keys[layer], self.values[layer]

    def reset(self) -> None:
        """Start a new sequence in the same buffers (a CUDA graph recorded on them stays valid). Old
        keys/values stay behind: finite, and masked until overwritten."""
        self.length = 0
        self.steps = 0

    def advance(self, num_positions: int, num_steps: int) -> None:
        """Called once per forward, after every layer wrote its keys/values."""
        self.length += num_positions
        self.steps += num_steps


class StaticStep(NamedTuple):
    """One decoded position with static shapes, passed to the attention layers in place of the cache.

    Every tensor has the same shape at every step, so a compiled decode step (``torch.compile``) is
    traced once: keys/values are written at ``position`` and attention runs over the whole preallocated
    length, ``mask`` hiding the positions not written yet.
    """

    cache: KVCache
    position: Tensor  # [1] int64: the cache position being written
    mask: Tensor  # [1, L_max] bool (one query): positions <= position

    @classmethod
    def at(cls, cache: KVCache, position: Tensor) -> StaticStep:
        positions = torch.arange(cache.max_len, device=position.device)
        return cls(cache, position, (positions <= position)[None])
