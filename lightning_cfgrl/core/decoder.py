"""``AudioDecoder``: what turns tokens into audio (``cfgrl generate``, ``AudioSampleLogger``, audio rewards
and scorers). A protocol in plain torch, so every layer may name it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class AudioDecoder(Protocol):
    """Tokens ``[B, K, T]`` -> waveform ``[B, C, L]`` at ``sample_rate`` (e.g. ``EncodecTokenizer``,
    ``SyntheticSynth``, ``MusicgenGenerator``)."""

    @property
    def sample_rate(self) -> int: ...

    def decode(self, tokens: Tensor) -> Tensor: ...


__all__ = ["AudioDecoder"]
