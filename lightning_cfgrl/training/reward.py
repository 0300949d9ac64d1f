"""Any reward (RL term): a weighted sum of reward functions, optimised by a policy gradient."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from lightning_cfgrl.core.condition import select_condition
from lightning_cfgrl.core.diversity import (
    RunningMeanBaseline,
    normalize_advantages,
    other_prompts_baseline,
)
from lightning_cfgrl.core.rewards import (
    RewardFunction,
    RewardInputs,
    RewardSpec,
    evaluate_rewards,
    leave_one_out_advantages,
    resolve_reward,
    weighted_sum,
)
from lightning_cfgrl.core.sampling import step_seed
from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.policy_gradient import DiversityGradientConfig, PolicyGradientConfig
from lightning_cfgrl.training.rollout import RolloutBatch

if TYPE_CHECKING:
    from lightning_cfgrl.core.decoder import AudioDecoder
    from lightning_cfgrl.training.module import CFGRLModule


class RewardCallback(ObjectiveCallback):
    """Adds ``-beta * mean_j A_j * log pi(y_j | x)``: a policy gradient towards a weighted sum of rewards
    (TRL's ``reward_funcs``), beside or instead of ``CFGDistillCallback`` and ``DiversityRewardCallback``.

    Each step the student's own samples (``[B * G, K, T]`` frames) go to every reward function with their
    prompt condition, the prompt text (from the datamodule's ``describe_prompt``, for functions with
    ``needs_texts = True``) and the decoded audio (for functions with ``needs_audio = True``). Rewards
    ``R = sum_f weight_f R_f`` (float64), advantages as :mod:`lightning_cfgrl.core.rewards` describes
    (leave-one-out) or ``R_j - b_j`` with another baseline, rescaled by ``advantage_norm``, optionally
    shuffled (placebo). Reward functions run without grad and are never in the optimizer.

    Logs ``train/<name>_mean``, ``_std``, ``_baseline``, ``train/<name>/<function>`` (each function's mean
    unweighted reward), and publishes ``<name>/reward`` and ``<name>/advantage`` per sample for
    :class:`~lightning_cfgrl.callbacks.CompletionLogCallback`.

    Args:
        rewards: the reward functions (:class:`~lightning_cfgrl.core.rewards.RewardSpec`: a callable or
            dotted path, weight, ``per="sample"|"group"``, init_args, name), or bare callables. A quality
            ``Scorer`` (e.g. ``lightning_cfgrl.experiments.PromptAdherence``) is a per-sample reward.
        beta: weight of this term (0 gives the other objectives' gradients exactly).
        gradient: baseline, advantage normalisation, scale and placebo (:class:`PolicyGradientConfig`).
        decoder: tokens ``[N, K, T]`` -> audio ``[N, C, L]`` (``decode`` and ``sample_rate``) for functions
            that read audio; default: the generator itself when it decodes (MusicGen).
        name: the loss term's name (``train/<name>``).
    """

    def __init__(
        self,
        rewards: Sequence[RewardSpec],
        beta: float = 1.0,
        gradient: PolicyGradientConfig | None = None,
        decoder: AudioDecoder | None = None,
        name: str = "reward",
    ) -> None:
        if not rewards:
            raise ValueError("RewardCallback needs at least one reward function in rewards=[...]")
        if (
            isinstance(beta, bool)
            or not isinstance(beta, (int, float))
            or not (math.isfinite(beta) and beta >= 0)
        ):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if isinstance(gradient, DiversityGradientConfig):  # its baselines are the pairwise reward's
            raise TypeError(
                "RewardCallback(gradient=...) takes a PolicyGradientConfig, got a DiversityGradientConfig "
                "(DiversityRewardCallback's settings)"
            )
        self.gradient = gradient if gradient is not None else PolicyGradientConfig()
        self.functions: list[RewardFunction] = [
            _scorer_as_reward(resolve_reward(spec, i)) for i, spec in enumerate(rewards)
        ]
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise ValueError(f"reward functions need distinct names (set RewardSpec.name), got {names}")
        if decoder is not None and not (
            callable(getattr(decoder, "decode", None)) and hasattr(decoder, "sample_rate")
        ):
            raise TypeError(
                f"decoder must have .decode(tokens) and .sample_rate, got {type(decoder).__name__}"
            )
        self.beta = float(beta)
        self.decoder = decoder
        self.name = name
        self.running = RunningMeanBaseline(self.gradient.baseline_decay)
        self._describe: Any = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    @property
    def needs_audio(self) -> bool:
        return any(f.needs_audio for f in self.functions)

    @property
    def needs_texts(self) -> bool:
        return any(getattr(f.fn, "needs_texts", False) for f in self.functions)

    # -- lifecycle ------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: CFGRLModule, stage: str) -> None:
        if stage != "fit":
            return
        group_size = getattr(pl_module, "group_size", None)
        if group_size is not None:
            self.baseline_for(group_size)  # fails now on a baseline the group size cannot support
            if self.gradient.advantage_norm == "group" and group_size < 3:
                raise ValueError(
                    f"advantage_norm='group' needs rollout.num_samples_per_prompt >= 3, got {group_size}; use 'batch'"
                )
        if self.needs_audio and self.decoder is None:
            generator = pl_module.generator
            if callable(getattr(generator, "decode", None)) and hasattr(generator, "sample_rate"):
                self.decoder = generator
            else:
                needing = [f.name for f in self.functions if f.needs_audio]
                raise ValueError(
                    f"reward function(s) {needing} read audio, and {type(generator).__name__} does not decode its "
                    "tokens; pass RewardCallback(decoder=...) (e.g. an EncodecTokenizer or a SyntheticSynth)"
                )
        self._describe = getattr(trainer.datamodule, "describe_prompt", None) if trainer.datamodule else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: CFGRLModule) -> None:
        for f in self.functions:  # reward models follow the module (a function without .to stays put)
            move = getattr(f.fn, "to", None)
            if callable(move):
                move(pl_module.device)

    def hyperparameters(self) -> dict[str, Any]:
        settings = {f"{self.name}/beta": self.beta}
        settings |= {f"{self.name}/{k}": v for k, v in asdict(self.gradient).items() if k != "seed"}
        for f in self.functions:
            settings[f"{self.name}/{f.name}"] = f"{f.path} x {f.weight:g} per {f.per}"
        return settings

    def baseline_for(self, group_size: int) -> str:
        """The baseline used with G = ``group_size`` (resolves ``"auto"``); fails on an impossible one."""
        kind = self.gradient.baseline
        minimum = 3 if any(f.per == "group" for f in self.functions) else 2
        if kind == "auto":
            return "leave_one_out" if group_size >= minimum else "running_mean"
        if kind == "leave_one_out" and group_size < minimum:
            raise ValueError(
                f"baseline='leave_one_out' needs rollout.num_samples_per_prompt >= {minimum}"
                f"{' with a per-group reward' if minimum == 3 else ''}, got {group_size}; use 'running_mean'"
            )
        return kind

    # -- the loss term --------------------------------------------------------------------------------
    @torch.no_grad()
    def inputs(self, pl_module: CFGRLModule, batch: RolloutBatch) -> RewardInputs:
        """The on-policy samples as the reward functions see them."""
        rows = batch.on_policy_rows()
        frames = pl_module.generator.pattern.steps_to_frames(batch.steps[rows])
        condition = select_condition(batch.condition, rows)
        texts = None
        if self.needs_texts and self._describe is not None:
            g = batch.group_size
            texts = [
                str(self._describe(select_condition(condition, i))) for i in range(0, frames.shape[0], g)
            ]
            texts = [t for t in texts for _ in range(g)]
        audio = sample_rate = None
        if self.needs_audio:
            audio = self.decoder.decode(frames).float()
            sample_rate = int(self.decoder.sample_rate)
        return RewardInputs(frames, condition, batch.group_size, texts, audio, sample_rate)

    def loss_terms(self, pl_module: CFGRLModule, batch: RolloutBatch) -> dict[str, Tensor]:
        inputs = self.inputs(pl_module, batch)
        with torch.no_grad():
            parts = evaluate_rewards(self.functions, inputs)
            rewards = weighted_sum(self.functions, parts)  # [B, G] float64
            kind = self.baseline_for(batch.group_size)
            if kind == "leave_one_out":
                advantages, baselines = leave_one_out_advantages(self.functions, inputs, parts)
            else:
                baselines = self._baseline(kind, rewards)
                advantages = rewards - baselines
            norm = self.gradient.advantage_norm
            batch_std = self._global_std(pl_module, rewards) if norm == "batch" else None
            advantages = normalize_advantages(advantages, rewards, norm, batch_std=batch_std).flatten()
        if self.gradient.shuffle_rewards:
            advantages = advantages[self._permutation(pl_module, advantages.shape[0]).to(advantages.device)]
        batch.record(f"{self.name}/reward", rewards.flatten())
        batch.record(f"{self.name}/advantage", advantages)  # as applied (shuffled in a placebo run)
        rows = batch.on_policy_rows()
        logprobs = batch.sequence_logprobs[rows]
        if self.gradient.beta_scale == "per_token":
            logprobs = logprobs / batch.mask[rows].sum(dim=(1, 2)).clamp(min=1)
        # float64: a group's advantages sum to about 0 while log pi is large, so float32 would cancel
        surrogate = (advantages.to(logprobs.device).double() * logprobs.double()).mean()
        term = (-self.beta * surrogate).to(logprobs.dtype)

        num_prompts = rewards.shape[0]
        log = pl_module.log
        log(f"train/{self.name}_mean", rewards.mean(), batch_size=num_prompts)
        log(f"train/{self.name}_std", rewards.flatten().std(correction=0), batch_size=num_prompts)
        log(f"train/{self.name}_baseline", baselines.mean(), batch_size=num_prompts)
        for f in self.functions:
            log(f"train/{self.name}/{f.name}", parts[f.name].mean(), batch_size=num_prompts)
        if kind == "running_mean":  # after the loss is built: this batch's baseline never saw its rewards
            mean = rewards.mean().to(pl_module.device)
            self.running.update(float(pl_module.trainer.strategy.reduce(mean, reduce_op="mean")))
        return {self.name: term}

    def _baseline(self, kind: str, rewards: Tensor) -> Tensor:
        if kind == "none":
            return torch.zeros_like(rewards)
        if kind == "other_prompts":
            return other_prompts_baseline(rewards)
        return torch.full_like(rewards, self.running.value)

    @staticmethod
    def _global_std(pl_module: CFGRLModule, rewards: Tensor) -> Tensor:
        """The std over the global batch (every process holds as many rewards)."""
        # on the module's device: NCCL reduces CUDA tensors only
        moments = torch.stack([rewards.mean(), rewards.square().mean()]).to(pl_module.device)
        mean, mean_sq = pl_module.trainer.strategy.reduce(moments, reduce_op="mean")
        return (mean_sq - mean.square()).clamp(min=0).sqrt().to(rewards.device)

    def _permutation(self, pl_module: CFGRLModule, n: int) -> Tensor:
        seed = step_seed(self.gradient.seed, pl_module.global_step, pl_module.global_rank)
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    # -- state ----------------------------------------------------------------------------------------
    def _described(self) -> list[dict[str, Any]]:
        # names as data: a checkpoint says which rewards trained it, and nothing reads them back as code
        return [{"name": f.name, "path": f.path, "weight": f.weight, "per": f.per} for f in self.functions]

    def state_dict(self) -> dict[str, Any]:
        return {"running_baseline": self.running.state_dict(), "rewards": self._described()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("rewards")
        if saved is not None and saved != self._described():
            rank_zero_warn(
                f"RewardCallback {self.name!r}: the checkpoint was trained with rewards {saved}, this run has "
                f"{self._described()}; resuming with the new ones"
            )
        if "running_baseline" in state_dict:
            self.running.load_state_dict(state_dict["running_baseline"])


class ScorerReward:
    """A quality :class:`~lightning_cfgrl.eval.Scorer` (``scorer(frames, condition) -> [N]``) as a
    per-sample reward, negated when lower is better (a loss, a distance)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer, self.name = scorer, scorer.name
        self.sign = 1.0 if scorer.higher_is_better else -1.0

    def __call__(self, inputs: RewardInputs) -> Tensor:
        return self.sign * self.scorer(inputs.tokens, inputs.condition).double()

    def to(self, device: torch.device | str) -> ScorerReward:
        move = getattr(self.scorer, "to", None)
        if callable(move):
            move(device)
        return self


def _scorer_as_reward(function: RewardFunction) -> RewardFunction:
    if isinstance(function.fn, Scorer):
        if function.per != "sample":
            raise ValueError(f"reward {function.name!r}: a Scorer scores samples; use per='sample'")
        function.fn = ScorerReward(function.fn)
    return function


__all__ = ["PolicyGradientConfig", "RewardCallback", "RewardSpec", "ScorerReward"]
