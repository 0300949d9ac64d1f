"""The paper's experiments, apart from the library: the built-in synthetic domains with exact scores,
their datamodules and the judge classifier."""

from lightning_cfgrl.experiments.datamodules import (
    SyntheticMusicDataModule,
    SyntheticPromptDataModule,
    split_prompts,
)
from lightning_cfgrl.experiments.exact_scorers import LogLikelihood, PromptAdherence
from lightning_cfgrl.experiments.judge import JudgeAdherence, JudgeModule, PromptClassifier
from lightning_cfgrl.experiments.synthetic_music import ATTRIBUTE_NAMES, SyntheticMusic

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
