"""Lightning callbacks: the objective callbacks (re-exported from :mod:`lightning_cfgrl.training`),
weight merging at the end of fit, audio sample logging, per-sample completion logs and run-named checkpoints."""

import importlib
from typing import Any

from lightning_cfgrl.callbacks.audio_logger import AudioSampleLogger
from lightning_cfgrl.callbacks.merge import ModelMergeCallback
from lightning_cfgrl.callbacks.run_checkpoint import RunCheckpoint

# The objective callbacks live in lightning_cfgrl.training; they are re-exported on first access, since
# training imports modules (audio generation) that import this package: an eager import is a cycle.
_REEXPORTED = {
    "CFGDistillCallback": "lightning_cfgrl.training.distill",
    "CompletionLogCallback": "lightning_cfgrl.callbacks.completion_log",
    "DiversityRewardCallback": "lightning_cfgrl.training.diversity",
    "ObjectiveCallback": "lightning_cfgrl.training.objective",
}


def __getattr__(name: str) -> Any:
    if name not in _REEXPORTED:
        raise AttributeError(f"module 'lightning_cfgrl.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(_REEXPORTED[name]), name)


__all__ = [
    "AudioSampleLogger",
    "CFGDistillCallback",
    "CompletionLogCallback",
    "DiversityRewardCallback",
    "ModelMergeCallback",
    "ObjectiveCallback",
    "RunCheckpoint",
]
