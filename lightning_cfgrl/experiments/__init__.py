"""The paper's experiments, apart from the library: the built-in synthetic domains with exact scores,
their datamodules and the judge classifier. ``SyntheticMusic`` (a per-mode Markov chain, 2 codebooks)
and ``HMMMusic`` (a hidden Markov model, 3 codebooks) are structurally different generative families."""

from lightning_cfgrl.experiments.datamodules import (
    SyntheticMusicDataModule,
    SyntheticPromptDataModule,
    split_prompts,
)
from lightning_cfgrl.experiments.domain import TokenDomain
from lightning_cfgrl.experiments.exact_scorers import LatentModeEmbedder, LogLikelihood, PromptAdherence
from lightning_cfgrl.experiments.hmm_music import HMM_ATTRIBUTE_NAMES, HMMMusic, HMMScales
from lightning_cfgrl.experiments.judge import JudgeAdherence, JudgeModule, PromptClassifier
from lightning_cfgrl.experiments.synthetic_music import ATTRIBUTE_NAMES, SyntheticMusic

__all__ = [
    "ATTRIBUTE_NAMES",
    "HMM_ATTRIBUTE_NAMES",
    "HMMMusic",
    "HMMScales",
    "JudgeAdherence",
    "JudgeModule",
    "LatentModeEmbedder",
    "LogLikelihood",
    "PromptAdherence",
    "PromptClassifier",
    "SyntheticMusic",
    "SyntheticMusicDataModule",
    "SyntheticPromptDataModule",
    "TokenDomain",
    "split_prompts",
]
