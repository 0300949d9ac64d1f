"""Adapters that put third-party token models behind the ``TokenGenerator`` protocol (MusicGen, PEFT/LoRA
students), transformers' EnCodec behind encodec's interface, and imports of encodec/torchaudio that
survive a torchaudio that cannot load.

Importing this package imports no third-party model library; each adapter imports its own on use.
"""

from lightning_cfgrl.adapters.musicgen import MusicgenCache, MusicgenGenerator
from lightning_cfgrl.adapters.tiny_musicgen import tiny_random_musicgen

__all__ = ["MusicgenCache", "MusicgenGenerator", "tiny_random_musicgen"]
