"""The thin Lightning layer: ``CFGRLModule``, the rollout it hands to objectives, the objective
callbacks (distillation, diversity reward, any reward), the pretraining module and the optimizer factory."""

from lightning_cfgrl.training.configs import OptimizationConfig, RolloutConfig, ValidationConfig
from lightning_cfgrl.training.distill import CFGDistillCallback, TeacherConfig
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.frozen import FrozenModelConfig
from lightning_cfgrl.training.module import CFGRLModule
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.policy_gradient import DiversityGradientConfig, PolicyGradientConfig
from lightning_cfgrl.training.pretrain import PretrainModule
from lightning_cfgrl.training.prompts import PromptDataModule, PromptSplit
from lightning_cfgrl.training.reward import RewardCallback, RewardSpec
from lightning_cfgrl.training.reward_gates import RewardGateError, RewardGates
from lightning_cfgrl.training.rollout import RolloutBatch
from lightning_cfgrl.training.stopping import PlateauStopping

__all__ = [
    "CFGDistillCallback",
    "CFGRLModule",
    "DiversityGradientConfig",
    "DiversityRewardCallback",
    "FrozenModelConfig",
    "ObjectiveCallback",
    "OptimizationConfig",
    "PlateauStopping",
    "PolicyGradientConfig",
    "PretrainModule",
    "PromptDataModule",
    "PromptSplit",
    "RewardCallback",
    "RewardGateError",
    "RewardGates",
    "RewardSpec",
    "RolloutBatch",
    "RolloutConfig",
    "TeacherConfig",
    "ValidationConfig",
]
