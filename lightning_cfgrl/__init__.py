"""lightning_cfgrl: diversity-rewarded CFG distillation for autoregressive audio-token models.

The entry points for Lightning users live here; the plain-torch math is in :mod:`lightning_cfgrl.core`.
Nothing here imports torchaudio (or encodec at import time), so the package imports even where
torchaudio cannot be loaded.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from lightning_cfgrl.callbacks import AudioSampleLogger, ModelMergeCallback, RunCheckpoint
from lightning_cfgrl.core import (
    Condition,
    DelayPattern,
    ModuleAdapter,
    SamplingConfig,
    TokenGenerator,
    cfg_logits,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    sample,
    token_divergence,
)
from lightning_cfgrl.eval import Scorer
from lightning_cfgrl.io import AtomicCheckpointIO, load_generator
from lightning_cfgrl.merging import merge_state_dicts
from lightning_cfgrl.training import (
    CFGDistillCallback,
    CFGRLModule,
    DiversityRewardCallback,
    ObjectiveCallback,
    PretrainModule,
    PromptDataModule,
    RolloutBatch,
)

try:
    __version__ = _version("lightning-cfgrl")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AtomicCheckpointIO",
    "AudioSampleLogger",
    "CFGDistillCallback",
    "CFGRLModule",
    "Condition",
    "DelayPattern",
    "DiversityRewardCallback",
    "ModelMergeCallback",
    "ModuleAdapter",
    "ObjectiveCallback",
    "PretrainModule",
    "PromptDataModule",
    "RolloutBatch",
    "RunCheckpoint",
    "SamplingConfig",
    "Scorer",
    "TokenGenerator",
    "cfg_logits",
    "forward_kl",
    "generalized_jsd",
    "load_generator",
    "merge_state_dicts",
    "reverse_kl",
    "sample",
    "token_divergence",
]
