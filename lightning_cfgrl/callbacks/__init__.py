"""Lightning callbacks: weight merging at the end of fit, audio sample logging, per-sample completion logs
and run-named checkpoints, and the objective callbacks (re-exported from :mod:`lightning_cfgrl.training`,
where they live)."""

from lightning_cfgrl.callbacks.audio_logger import AudioSampleLogger, LoggedClips, LogSchedule
from lightning_cfgrl.callbacks.completion_log import CompletionLogCallback
from lightning_cfgrl.callbacks.merge import ModelMergeCallback
from lightning_cfgrl.callbacks.run_checkpoint import RunCheckpoint
from lightning_cfgrl.training.distill import CFGDistillCallback
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.objective import ObjectiveCallback

__all__ = [
    "AudioSampleLogger",
    "CFGDistillCallback",
    "CompletionLogCallback",
    "DiversityRewardCallback",
    "LogSchedule",
    "LoggedClips",
    "ModelMergeCallback",
    "ObjectiveCallback",
    "RunCheckpoint",
]
