"""How a reward becomes a policy gradient: the ``gradient`` settings of ``RewardCallback``
(:class:`PolicyGradientConfig`) and of ``DiversityRewardCallback`` (:class:`DiversityGradientConfig`).

Both subtract a baseline from each sample's reward, rescale the advantages, weight ``log pi`` per token or
per sequence and may shuffle the advantages (a placebo). They differ in the baselines a reward allows:
the leave-one-out baseline of a per-sample reward is ``"leave_one_out"``; that of the pairwise diversity
reward, whose reward of sample i depends on the others, is ``"other_pairs"``. Each object checks its
fields where it is built, naming them with the group (``gradient.baseline must be one of ...``)::

    init_args:
      gradient: {baseline: other_pairs, advantage_norm: none, beta_scale: paper, log_norm: true}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from lightning_cfgrl.core.checks import check_int, check_real
from lightning_cfgrl.core.diversity import ADVANTAGE_NORMS, BASELINES, AdvantageNorm, Baseline

RewardBaseline = Literal["auto", "leave_one_out", "running_mean", "other_prompts", "none"]
REWARD_BASELINES: tuple[str, ...] = ("auto", "leave_one_out", "running_mean", "other_prompts", "none")
DIVERSITY_BASELINES: tuple[str, ...] = (*BASELINES, "auto")
BETA_SCALES: tuple[str, ...] = ("per_token", "paper")


@dataclass(frozen=True)
class PolicyGradientConfig:
    """How rewards become a policy gradient (``RewardCallback(gradient=...)``).

    Args:
        baseline: ``"leave_one_out"`` (each sample against its group without it; G >= 2, G >= 3 with a
            per-group reward; unbiased), ``"running_mean"`` (EMA of past batches' mean reward),
            ``"other_prompts"`` (the other prompts' mean reward; >= 2 prompts per batch), ``"none"``, or
            ``"auto"`` (default): ``"leave_one_out"`` when the group is large enough, else ``"running_mean"``.
        baseline_decay: EMA decay of ``"running_mean"``, in [0, 1).
        advantage_norm: rescale advantages to a spread of 0.1 by the std of the batch's rewards
            (``"batch"``), of each prompt's rewards (``"group"``; G >= 3), or not (``"none"``).
        beta_scale: ``"per_token"``: ``log pi`` averaged over a sequence's generated tokens (pairs with
            ``CFGDistillCallback(reduction="mean")``); ``"paper"``: summed.
        shuffle_rewards: placebo: advantages permuted across the batch (tells reward signal from noise).
        seed: seeds the placebo permutation (with the step and rank).
    """

    baselines: ClassVar[tuple[str, ...]] = REWARD_BASELINES  # the values ``baseline`` accepts

    baseline: RewardBaseline = "auto"
    baseline_decay: float = 0.9
    advantage_norm: AdvantageNorm = "batch"
    beta_scale: Literal["per_token", "paper"] = "per_token"
    shuffle_rewards: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.baseline not in self.baselines:
            raise ValueError(f"gradient.baseline must be one of {self.baselines}, got {self.baseline!r}")
        check_real("gradient.baseline_decay", self.baseline_decay)
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"gradient.baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.advantage_norm not in ADVANTAGE_NORMS:
            raise ValueError(
                f"gradient.advantage_norm must be one of {ADVANTAGE_NORMS}, got {self.advantage_norm!r}"
            )
        if self.beta_scale not in BETA_SCALES:
            raise ValueError(f"gradient.beta_scale must be 'per_token' or 'paper', got {self.beta_scale!r}")
        check_int("gradient.seed", self.seed)


@dataclass(frozen=True)
class DiversityGradientConfig(PolicyGradientConfig):
    """How the diversity reward becomes a policy gradient, and how often its norm is logged
    (``DiversityRewardCallback(gradient=...)``).

    Args:
        baseline: ``"running_mean"`` (EMA of past batches' mean reward; works with G = 2),
            ``"other_pairs"`` (mean diversity of the prompt's pairs without i: the leave-one-out baseline
            of a pairwise reward; G >= 3), ``"other_prompts"`` (mean reward of the other prompts'
            samples; >= 2 prompts per batch), ``"none"``, or ``"auto"`` (default): ``"other_pairs"`` when
            G >= 3, else ``"running_mean"``.
        baseline_decay: EMA decay of ``"running_mean"``, in [0, 1).
        advantage_norm: rescale advantages to a spread of 0.1 by the std of the batch's rewards
            (``"batch"``), of each prompt's G rewards (``"group"``, as GRPO; G >= 3), or not (``"none"``).
        beta_scale: ``"per_token"``: ``log pi`` averaged over a sequence's generated tokens (pairs with
            ``CFGDistillCallback(reduction="mean")``); ``"paper"``: summed (pairs with ``reduction="sum"``).
        shuffle_rewards: placebo: advantages permuted across the whole batch, which keeps the update's
            scale and noise but breaks the link between a sample and its reward. Compare a real run with
            this to tell reward signal from REINFORCE noise.
        seed: seeds the placebo permutation (with the step and rank).
        log_norm: log this term's gradient norm beside the other terms' (one extra backward of the term
            on the logged steps). None: on, except under FSDP sharding, where it is unsupported.
        log_norm_every_n_steps: log them every this many optimizer steps.
    """

    baselines: ClassVar[tuple[str, ...]] = DIVERSITY_BASELINES

    baseline: Baseline | Literal["auto"] = "auto"
    log_norm: bool | None = None
    log_norm_every_n_steps: int = 25

    def __post_init__(self) -> None:
        super().__post_init__()
        value = check_int("gradient.log_norm_every_n_steps", self.log_norm_every_n_steps)
        if value < 1:
            raise ValueError(f"gradient.log_norm_every_n_steps must be >= 1, got {value}")


__all__ = [
    "DIVERSITY_BASELINES",
    "REWARD_BASELINES",
    "DiversityGradientConfig",
    "PolicyGradientConfig",
    "RewardBaseline",
]
