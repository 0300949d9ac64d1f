"""The method's math in plain torch: no Lightning, no file I/O (a test enforces it).

Token-model contract (:mod:`.generator`), conditions, the delay pattern, sampling with CFG, the guidance
mix, the per-token divergences and the diversity reward with its baselines.
"""

from lightning_cfgrl.core.budget import BudgetController, QualityBudget
from lightning_cfgrl.core.condition import (
    Condition,
    cat_conditions,
    condition_batch_size,
    condition_to,
    repeat_condition,
    select_condition,
    where_condition,
)
from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.divergences import (
    DIVERGENCES,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    token_divergence,
)
from lightning_cfgrl.core.diversity import (
    BASELINES,
    RunningMeanBaseline,
    TokenEmbedder,
    compute_baseline,
    diversity_rewards,
    diversity_surrogate,
    group_diversity,
    grouped,
    pairwise_distances,
)
from lightning_cfgrl.core.eval_mode import eval_mode
from lightning_cfgrl.core.generator import StepModule, TokenGenerator, pad_id
from lightning_cfgrl.core.guidance import cfg_logits, check_guidance_scale
from lightning_cfgrl.core.module_adapter import ModuleAdapter
from lightning_cfgrl.core.sampling import DecodeConfig, SamplingConfig, process_logits, sample

__all__ = [
    "BASELINES",
    "BudgetController",
    "DIVERGENCES",
    "Condition",
    "DecodeConfig",
    "DelayPattern",
    "ModuleAdapter",
    "QualityBudget",
    "RunningMeanBaseline",
    "SamplingConfig",
    "TokenEmbedder",
    "StepModule",
    "TokenGenerator",
    "cat_conditions",
    "cfg_logits",
    "check_guidance_scale",
    "compute_baseline",
    "condition_batch_size",
    "condition_to",
    "diversity_rewards",
    "eval_mode",
    "diversity_surrogate",
    "forward_kl",
    "generalized_jsd",
    "group_diversity",
    "grouped",
    "pad_id",
    "pairwise_distances",
    "process_logits",
    "repeat_condition",
    "reverse_kl",
    "sample",
    "select_condition",
    "token_divergence",
    "where_condition",
]
