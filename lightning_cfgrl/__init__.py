"""lightning_cfgrl: diversity-rewarded CFG distillation for autoregressive audio-token models.

The entry points for Lightning users live here; the plain-torch math is in :mod:`lightning_cfgrl.core`.
Nothing here imports torchaudio (or encodec at import time), so the package imports even where
torchaudio cannot be loaded.
"""

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

try:
    __version__ = _version("lightning-cfgrl")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# Each public name's home. Resolved on first access (PEP 562), so `import lightning_cfgrl.core` (or
# `.models`) stays plain torch: importing a subpackage runs this file, and eager imports here would pull
# in Lightning with it.
_HOMES = {
    "AudioSampleLogger": "lightning_cfgrl.callbacks",
    "CompletionLogCallback": "lightning_cfgrl.callbacks",
    "ModelMergeCallback": "lightning_cfgrl.callbacks",
    "RunCheckpoint": "lightning_cfgrl.callbacks",
    "Condition": "lightning_cfgrl.core",
    "DelayPattern": "lightning_cfgrl.core",
    "ModuleAdapter": "lightning_cfgrl.core",
    "SamplingConfig": "lightning_cfgrl.core",
    "DecodeConfig": "lightning_cfgrl.core",
    "StepModule": "lightning_cfgrl.core",
    "TokenGenerator": "lightning_cfgrl.core",
    "cfg_logits": "lightning_cfgrl.core",
    "forward_kl": "lightning_cfgrl.core",
    "generalized_jsd": "lightning_cfgrl.core",
    "reverse_kl": "lightning_cfgrl.core",
    "sample": "lightning_cfgrl.core",
    "token_divergence": "lightning_cfgrl.core",
    "Scorer": "lightning_cfgrl.eval",
    "AtomicCheckpointIO": "lightning_cfgrl.io",
    "load_generator": "lightning_cfgrl.io",
    "merge_state_dicts": "lightning_cfgrl.merging",
    "CFGDistillCallback": "lightning_cfgrl.training",
    "CFGRLModule": "lightning_cfgrl.training",
    "DiversityRewardCallback": "lightning_cfgrl.training",
    "DiversityGradientConfig": "lightning_cfgrl.training",
    "FrozenModelConfig": "lightning_cfgrl.training",
    "ObjectiveCallback": "lightning_cfgrl.training",
    "PlateauStopping": "lightning_cfgrl.training",
    "PretrainModule": "lightning_cfgrl.training",
    "PromptDataModule": "lightning_cfgrl.training",
    "PromptSplit": "lightning_cfgrl.training",
    "QualityBudget": "lightning_cfgrl.core",
    "RewardCallback": "lightning_cfgrl.training",
    "RewardGates": "lightning_cfgrl.training",
    "RewardSpec": "lightning_cfgrl.training",
    "RolloutBatch": "lightning_cfgrl.training",
    "RolloutConfig": "lightning_cfgrl.training",
    "OptimizationConfig": "lightning_cfgrl.training",
    "ValidationConfig": "lightning_cfgrl.training",
    "TeacherConfig": "lightning_cfgrl.training",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lightning_cfgrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = sorted(_HOMES)
