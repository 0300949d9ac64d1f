"""A real-music domain: folk tunes from a music21-readable corpus (by default the Essen folksong collection
that ships inside the music21 wheel) as two-codebook token streams at one frame per sixteenth note, with
prompts from real metadata, judges nobody trained to agree with the generator, and rendering to WAV and
MIDI. Needs the optional extra: ``pip install "lightning-cfgrl[music]"`` (music21 is imported lazily, so
importing this package works without it; parsing a corpus raises a clear error)."""

from lightning_cfgrl.experiments.folk.cache import CACHE_ENV, cache_dir, cached_tunes
from lightning_cfgrl.experiments.folk.corpus import Tune, essen_files, parse_files
from lightning_cfgrl.experiments.folk.datamodules import FolkPromptDataModule, FolkTuneDataModule
from lightning_cfgrl.experiments.folk.domain import FolkCorpus
from lightning_cfgrl.experiments.folk.features import MelodyProfileEmbedder
from lightning_cfgrl.experiments.folk.judge import FolkJudgeAdherence, judge_accuracy, save_judge, train_judge
from lightning_cfgrl.experiments.folk.prompts import FolkPrompts, TuneSplit
from lightning_cfgrl.experiments.folk.render import FolkRenderer
from lightning_cfgrl.experiments.folk.rules import (
    KeyProfileMode,
    MeterAlignment,
    key_correlations,
    meter_alignment,
)
from lightning_cfgrl.experiments.folk.tokens import FolkTokenizer

__all__ = [
    "CACHE_ENV",
    "FolkCorpus",
    "FolkJudgeAdherence",
    "FolkPromptDataModule",
    "FolkPrompts",
    "FolkRenderer",
    "FolkTokenizer",
    "FolkTuneDataModule",
    "KeyProfileMode",
    "MelodyProfileEmbedder",
    "MeterAlignment",
    "Tune",
    "TuneSplit",
    "cache_dir",
    "cached_tunes",
    "essen_files",
    "judge_accuracy",
    "key_correlations",
    "meter_alignment",
    "parse_files",
    "save_judge",
    "train_judge",
]
