"""Real audio: EnCodec tokens on disk, audio datamodules, a synthesizer for the synthetic domain, and
generation to token files and WAVs (``cfgrl generate``).

Nothing here imports torchaudio, and encodec is imported only when a tokenizer loads a codec.
"""

from lightning_cfgrl.audio.datamodule import (
    AudioPromptDataModule,
    AudioTokenDataModule,
    PromptTable,
    TokenCrops,
)
from lightning_cfgrl.audio.generation import GeneratedFiles, generate
from lightning_cfgrl.audio.io import AudioFileError, convert_channels, read_audio, resample, write_audio
from lightning_cfgrl.audio.synth import SyntheticSynth
from lightning_cfgrl.audio.text_prompts import TextPromptDataModule
from lightning_cfgrl.audio.tokenizer import EncodecTokenizer

__all__ = [
    "AudioFileError",
    "AudioPromptDataModule",
    "AudioTokenDataModule",
    "EncodecTokenizer",
    "GeneratedFiles",
    "PromptTable",
    "SyntheticSynth",
    "TextPromptDataModule",
    "TokenCrops",
    "convert_channels",
    "generate",
    "read_audio",
    "resample",
    "write_audio",
]
