"""Real audio: EnCodec tokens on disk, audio datamodules, a synthesizer for the synthetic domain, and
generation to token files and WAVs (``cfgrl generate``).

Nothing here imports torchaudio, and encodec is imported only when a tokenizer loads a codec.
"""

from lightning_cfgrl.audio.datamodule import (
    AudioCrops,
    AudioPromptDataModule,
    AudioTokenDataModule,
    FileSplit,
    PromptTable,
    TokenCrops,
)
from lightning_cfgrl.audio.generation import GeneratedFiles, GenerationConfig, generate
from lightning_cfgrl.audio.synth import SyntheticSynth
from lightning_cfgrl.audio.text_prompts import TextPromptDataModule
from lightning_cfgrl.audio.tokenizer import EncodecTokenizer, EncodecWeights
from lightning_cfgrl.core.decoder import AudioDecoder
from lightning_cfgrl.io.audio import AudioFileError, convert_channels, read_audio, resample, write_audio

__all__ = [
    "AudioCrops",
    "AudioDecoder",
    "AudioFileError",
    "AudioPromptDataModule",
    "AudioTokenDataModule",
    "EncodecTokenizer",
    "EncodecWeights",
    "FileSplit",
    "GeneratedFiles",
    "GenerationConfig",
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
