"""The built-in synthetic audio-token domain: known process, exact scores, datamodules."""

from lightning_cfgrl.domain.datamodules import (
    SyntheticMusicDataModule,
    SyntheticPromptDataModule,
    split_prompts,
)
from lightning_cfgrl.domain.judge import JudgeAdherence, JudgeModule, PromptClassifier
from lightning_cfgrl.domain.scorers import LogLikelihood, PromptAdherence
from lightning_cfgrl.domain.synthetic_music import ATTRIBUTE_NAMES, SyntheticMusic

__all__ = [
    "ATTRIBUTE_NAMES",
    "JudgeAdherence",
    "JudgeModule",
    "LogLikelihood",
    "PromptAdherence",
    "PromptClassifier",
    "SyntheticMusic",
    "SyntheticMusicDataModule",
    "SyntheticPromptDataModule",
    "split_prompts",
]
