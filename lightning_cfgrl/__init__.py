"""lightning_cfgrl: diversity-rewarded CFG distillation for autoregressive audio-token models.

Nothing here imports torchaudio (or encodec at import time), so the package imports even where
torchaudio cannot be loaded.
"""

from lightning_cfgrl.callbacks import (
    CFGDistillCallback,
    DiversityRewardCallback,
    ModelMergeCallback,
    ObjectiveCallback,
)
from lightning_cfgrl.condition import Condition
from lightning_cfgrl.delay_pattern import DelayPattern
from lightning_cfgrl.divergences import forward_kl, generalized_jsd, reverse_kl, token_divergence
from lightning_cfgrl.generator import ModuleAdapter, TokenGenerator
from lightning_cfgrl.guidance import cfg_logits
from lightning_cfgrl.module import CFGRLModule
from lightning_cfgrl.rollout import RolloutBatch
from lightning_cfgrl.sampling import SamplingConfig, sample

__version__ = "0.1.0"

__all__ = [
    "CFGDistillCallback",
    "CFGRLModule",
    "Condition",
    "DelayPattern",
    "DiversityRewardCallback",
    "ModelMergeCallback",
    "ModuleAdapter",
    "ObjectiveCallback",
    "RolloutBatch",
    "SamplingConfig",
    "TokenGenerator",
    "cfg_logits",
    "forward_kl",
    "generalized_jsd",
    "reverse_kl",
    "sample",
    "token_divergence",
]
