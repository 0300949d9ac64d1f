"""Lightning callbacks: objective callbacks (loss terms) and utility callbacks."""

from lightning_cfgrl.callbacks.audio_logger import AudioSampleLogger
from lightning_cfgrl.callbacks.distill import CFGDistillCallback
from lightning_cfgrl.callbacks.diversity import DiversityRewardCallback
from lightning_cfgrl.callbacks.merge import ModelMergeCallback
from lightning_cfgrl.callbacks.objective import ObjectiveCallback

__all__ = ["AudioSampleLogger", "CFGDistillCallback", "DiversityRewardCallback", "ModelMergeCallback", "ObjectiveCallback"]
