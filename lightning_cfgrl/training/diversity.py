"""Diversity reward (RL term): raise the log-probability of samples that differ from their siblings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from lightning_cfgrl.core.budget import BudgetController, QualityBudget
from lightning_cfgrl.core.checks import check_settings
from lightning_cfgrl.core.controls import DIVERSITY_WEIGHT, ControlDistribution, Distribution, control_setting
from lightning_cfgrl.core.diversity import (
    RunningMeanBaseline,
    compute_baseline,
    diversity_rewards,
    diversity_surrogate,
    group_diversity,
    grouped,
    normalize_advantages,
    pairwise_distances,
)
from lightning_cfgrl.core.sampling import step_seed
from lightning_cfgrl.training.distill import BASE_DIVERGENCE_METRIC
from lightning_cfgrl.training.finite_guard import last_good_note
from lightning_cfgrl.training.frozen import (
    FrozenModelConfig,
    freeze,
    frozen_state,
    load_frozen_state,
    place_frozen,
)
from lightning_cfgrl.training.grad_norm import GradNormMonitor
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.policy_gradient import DiversityGradientConfig
from lightning_cfgrl.training.reward_gates import (
    DeadRewardMonitor,
    RewardGates,
    check_embedder,
    over_budget_error,
)
from lightning_cfgrl.training.rollout import RolloutBatch
from lightning_cfgrl.training.sharding import is_sharded

if TYPE_CHECKING:
    from lightning_cfgrl.training.module import CFGRLModule

BUDGET_METRIC = "train/distill_divergence_per_token"  # what CFGDistillCallback logs each step
GRADIENT_FIELDS = ("baseline", "baseline_decay", "advantage_norm", "beta_scale", "shuffle_rewards", "seed")


class DiversityRewardCallback(ObjectiveCallback):
    """Adds ``-beta * 2 * mean_i A_i * log pi(y_i | x)``, a policy gradient towards diverse samples:
    with the paper's scale (``gradient.beta_scale="paper"``, ``gradient.advantage_norm="none"``) its
    gradient is ``-beta`` times an unbiased estimate of the gradient of the expected pairwise diversity
    ``E[1 - cos(E(y), E(y'))]`` of two samples of a prompt (see :mod:`lightning_cfgrl.core.diversity`).

    r_i is sample i's mean ``1 - cos`` to the other samples of its prompt (the module's G >= 2 samples
    per prompt); the frozen ``embedder`` maps frames ``[N, K, T]`` (the rollout's steps through the
    generator's delay pattern) to ``[N, D]``. ``A_i = (r_i - b_i) / s``: ``b_i`` the baseline, ``s`` the
    reward spread of ``gradient.advantage_norm``. ``log pi`` is ``batch.sequence_logprobs`` of the
    on-policy rows only (off-policy rows contributed by other objectives are skipped), under the
    distribution actually sampled from (temperature/top-k/top-p included).

    **The scale of beta.** ``gradient.beta_scale="per_token"`` (default) averages ``log pi`` over a
    sequence's generated tokens, matching ``CFGDistillCallback(reduction="mean")`` (KL per token), and
    ``gradient.advantage_norm`` rescales the advantages by the rewards' spread: beta is then the same
    balance of the two terms whatever the sequence length and the embedder's distance scale. ``"paper"``
    is the paper's literal form: ``log pi`` summed over the sequence, against the KL summed per sequence
    (``reduction="sum"``), with raw advantages (set ``gradient.advantage_norm="none"`` for the exact
    paper estimator). The two scales give the same gradient directions; only beta's unit differs.

    The embedder is put in eval mode with ``requires_grad=False``, is never a submodule of the
    LightningModule (so never in its optimizer), follows the module's device and precision from fit
    start, and is saved in this callback's state so a resumed run uses the same reward. An embedder
    loaded entirely from a file says so with a ``checkpoint_source`` attribute (``{"path", "sha256"}``,
    as :class:`~lightning_cfgrl.embedders.ContrastiveTokenEmbedder` built with ``checkpoint=`` does):
    then only that record is saved, and a resumed run refuses a file that changed.

    Logs ``train/reward_mean``, ``train/reward_std``, ``train/group_diversity`` and
    ``train/reward_baseline`` (prefixed by ``name`` when it is not ``"diversity"``), and every
    ``gradient.log_norm_every_n_steps`` steps ``train/grad_norm/<name>``, ``train/grad_norm/total``,
    ``train/grad_norm/other_terms`` (total minus this term: the distillation term's when it is the
    only other one) and ``train/grad_norm/ratio`` (this term's norm over the other terms').

    Steerable student: ``beta=[low, high]`` (uniform by default) or a list of values
    (``beta_distribution="choice"``) draws one beta per prompt group each step, feeds it to the student
    as its ``"diversity_weight"`` control, and weights that group's term by it (the loss is then
    ``-2 * mean_i beta_i (r_i - b_i) log pi(y_i | x)``).

    Args:
        embedder: any ``nn.Module`` mapping ``[B, K, T]`` int64 frames to ``[B, D]`` (e.g. a trained
            :class:`~lightning_cfgrl.embedders.ContrastiveTokenEmbedder`).
        beta: weight of the diversity objective (paper: 15; 0 gives distillation's gradients exactly), or
            ``[low, high]`` / a list of values for a steerable student.
        beta_distribution: how a list is drawn from: ``"uniform"`` or ``"log_uniform"`` over
            ``[low, high]``, or ``"choice"`` among the values.
        gradient: how rewards become the policy gradient (baseline, advantage normalisation, beta's
            scale, the placebo) and how often its norm is logged (:class:`DiversityGradientConfig`, or a
            dict of its fields).
        embedding: how the frozen embedder runs and is saved: sequences per forward (bounds the memory
            of big embedders) and whether its weights are stored even when it came from a file
            (:class:`~lightning_cfgrl.training.frozen.FrozenModelConfig`, or a dict of its fields).
        name: the loss term's name (``train/<name>``).
        quality_budget: instead of a fixed beta, how much quality the run may give up
            (:class:`~lightning_cfgrl.core.budget.QualityBudget`): ``beta`` is then the starting weight,
            and a controller moves it each step so that the smoothed per-token KL to the CFG teacher
            (``train/distill_divergence_per_token``, from ``CFGDistillCallback``) stays at the budget's
            target. Logs ``train/<name>_beta``, ``train/budget_kl_smoothed`` and ``train/budget_kl_target``.
        gates: when the run refuses to start or stops (:class:`~lightning_cfgrl.training.reward_gates.RewardGates`):
            an embedder near chance, a dead reward, a budget exceeded although beta backed off.
    """

    # the flat arguments of earlier versions -> their place now (named when an old config gives them)
    moved_settings: ClassVar[dict[str, str]] = {
        **{key: f"gradient.{key}" for key in GRADIENT_FIELDS},
        "log_grad_norm": "gradient.log_norm",
        "grad_norm_every_n_steps": "gradient.log_norm_every_n_steps",
        "embed_batch_size": "embedding.chunk_size",
        "embed_in_checkpoint": "embedding.embed_in_checkpoint",
    }

    def __init__(
        self,
        embedder: nn.Module,
        beta: float | list[float] = 15.0,
        beta_distribution: Distribution = "uniform",
        gradient: DiversityGradientConfig | None = None,
        embedding: FrozenModelConfig | None = None,
        name: str = "diversity",
        quality_budget: QualityBudget | None = None,
        gates: RewardGates | None = None,
    ) -> None:
        if not isinstance(embedder, nn.Module):
            raise TypeError(
                f"embedder must be an nn.Module mapping tokens [B, K, T] to [B, D], got {type(embedder).__name__}"
            )
        setting = control_setting(DIVERSITY_WEIGHT, beta, beta_distribution)
        self.beta_range: ControlDistribution | None = (
            setting if isinstance(setting, ControlDistribution) else None
        )
        beta = self.beta_range.reference if self.beta_range else setting
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        # a dict of a group's fields is the Python shorthand (as for CFGRLModule's groups)
        if isinstance(gradient, Mapping):
            gradient = check_settings("gradient", gradient, DiversityGradientConfig)
        if isinstance(embedding, Mapping):
            embedding = check_settings("embedding", embedding, FrozenModelConfig)
        if gradient is not None and type(gradient) is not DiversityGradientConfig:
            raise TypeError(
                "gradient must be a DiversityGradientConfig, a dict of its fields or None, got "
                f"{type(gradient).__name__} (a PolicyGradientConfig is RewardCallback's: its baselines are not "
                "the pairwise reward's)"
            )
        if embedding is not None and type(embedding) is not FrozenModelConfig:
            raise TypeError(
                "embedding must be a FrozenModelConfig (chunk_size, embed_in_checkpoint), a dict of its fields "
                f"or None, got {type(embedding).__name__}"
            )
        self.embedder = freeze(embedder)
        self.beta = float(beta)
        self.gradient = gradient if gradient is not None else DiversityGradientConfig()
        self.embedding = embedding if embedding is not None else FrozenModelConfig()
        self.running = RunningMeanBaseline(self.gradient.baseline_decay)
        # gradient.log_norm resolved at fit start (None: on unless the student is FSDP-sharded)
        self.log_norm = self.gradient.log_norm
        self.name = name
        self._prefix = "" if name == "diversity" else f"{name}_"
        ratio_key = f"train/grad_norm/{name}_ratio" if self._prefix else "train/grad_norm/ratio"
        self.grad_norm = GradNormMonitor(name, ratio_key)
        self._warned_sampling = False
        if quality_budget is not None and self.beta_range is not None:
            raise ValueError("quality_budget adapts one beta; it cannot be combined with a beta range/list")
        self.gates = gates if gates is not None else RewardGates()
        self.controller = BudgetController(quality_budget, self.beta) if quality_budget is not None else None
        if self.controller is not None:
            self.beta = self.controller.beta  # 0 while the reference KL is measured
        self.dead_reward = DeadRewardMonitor(self.gates)

    @property
    def trains_on_reward(self) -> bool:
        """Whether the reward drives the update (a beta = 0 run only logs it, and is not gated)."""
        return self.beta > 0 or self.beta_range is not None or self.controller is not None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    # -- lifecycle ------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: CFGRLModule, stage: str) -> None:
        if stage != "fit":
            return
        group_size = getattr(pl_module, "group_size", None)
        if group_size is not None:
            self._check_group_size(group_size)
        if self.gradient.baseline == "other_pairs" and group_size is not None and group_size < 3:
            raise ValueError(
                f"gradient.baseline='other_pairs' needs rollout.num_samples_per_prompt >= 3, got {group_size}; "
                "use 'running_mean' for pairs"
            )
        if self.gradient.advantage_norm == "group" and group_size is not None and group_size < 3:
            raise ValueError(
                f"gradient.advantage_norm='group' needs rollout.num_samples_per_prompt >= 3, got {group_size}; "
                "use 'batch'"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: CFGRLModule) -> None:
        if self.log_norm is None:
            self.log_norm = not is_sharded(pl_module)
        if self.log_norm and is_sharded(pl_module):
            raise ValueError(
                "DiversityRewardCallback(gradient.log_norm=True) does not support FSDP-sharded parameters "
                "(ModelParallelStrategy): this term's gradient would bypass FSDP's reduce-scatter. Expected "
                "gradient.log_norm=False under sharding (DDP and single-device runs support it)"
            )
        self.embedder = place_frozen(self.embedder, trainer, pl_module.device)
        if self.trains_on_reward:  # before any RL step: an embedder near chance is an error
            warning = check_embedder(self.embedder, self.gates)
            if warning:
                rank_zero_warn(f"DiversityRewardCallback: {warning}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: CFGRLModule) -> None:
        # after a resume restored the controller: the base's KL is needed only while measuring
        self._request_base_divergence(trainer)

    def _request_base_divergence(self, trainer: pl.Trainer) -> None:
        """Ask the distillation callback for the base's KL while a gain budget measures its reference."""
        if self.controller is None or not self.controller.budget.needs_base_kl:
            return
        distill = [cb for cb in trainer.callbacks if hasattr(cb, "log_base_divergence")]  # CFGDistillCallback
        if not distill:
            raise ValueError(
                "DiversityRewardCallback(quality_budget=QualityBudget(relative_to='gain')) measures the base's "
                "KL to the CFG teacher through CFGDistillCallback; add it to the Trainer's callbacks"
            )
        for callback in distill:
            callback.log_base_divergence = self.controller.measuring

    def hyperparameters(self) -> dict[str, Any]:
        embedder = type(self.embedder)
        return (
            {
                f"{self.name}/beta": self.beta,
                f"{self.name}/baseline": self.gradient.baseline,
                f"{self.name}/advantage_norm": self.gradient.advantage_norm,
                f"{self.name}/beta_scale": self.gradient.beta_scale,
                f"{self.name}/shuffle_rewards": self.gradient.shuffle_rewards,
                f"{self.name}/embedder": f"{embedder.__module__}.{embedder.__qualname__}",
            }
            | ({f"{self.name}/beta_range": str(self.beta_range)} if self.beta_range else {})
            | self._budget_hparams()
        )

    def _budget_hparams(self) -> dict[str, Any]:
        if self.controller is None:
            return {}
        budget = self.controller.budget
        unit = (
            ("of_gain" if budget.relative_to == "gain" else "relative")
            if budget.relative
            else "nats_per_token"
        )
        return {
            f"{self.name}/quality_budget": f"{budget.max_increase:g} ({unit})",
            f"{self.name}/budget_controller": budget.controller,
            f"{self.name}/beta": self.controller.initial_beta,
        }

    # -- the loss term --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, frames: Tensor) -> Tensor:
        """``[N, K, T]`` frames -> ``[N, D]`` float32 embeddings (in chunks of ``embedding.chunk_size``)."""
        if (
            self.embedder.training
        ):  # someone called .train() on it: a frozen reward must not use dropout/BN updates
            self.embedder.eval()
        size = self.embedding.chunk_size or frames.shape[0]
        out = torch.cat([self.embedder(chunk) for chunk in frames.split(size)]).float()
        if out.dim() != 2 or out.shape[0] != frames.shape[0]:
            raise ValueError(
                f"embedder must return [N, D] = [{frames.shape[0]}, D], got shape {tuple(out.shape)}"
            )
        # cos(0, y) is undefined; normalised with F.normalize's eps it reads 0: maximal diversity (reward 1)
        zero = int((torch.linalg.vector_norm(out, dim=-1) <= 1e-12).sum())  # one host sync per step
        if zero:
            raise ValueError(
                f"embedder {type(self.embedder).__name__} returned {zero} zero-norm embedding(s) of {out.shape[0]}; "
                "cosine diversity is undefined for a zero vector (it would read as maximal diversity). Expected "
                "non-zero [N, D] vectors"
            )
        return out

    def rewards(self, pl_module: CFGRLModule, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        """(``[B, G, G]`` pair distances, ``[B, G]`` rewards) of the rollout's samples (no grad)."""
        self._check_group_size(batch.group_size)
        frames = pl_module.generator.pattern.steps_to_frames(batch.steps[batch.on_policy_rows()])
        # float64: [B, G, G] is tiny, and rewards minus baselines cancel to a small fraction of each reward
        distances = pairwise_distances(grouped(self.embed(frames).double(), batch.group_size))
        return distances, diversity_rewards(distances)

    def loss_terms(self, pl_module: CFGRLModule, batch: RolloutBatch) -> dict[str, Tensor]:
        self._warn_if_tempered(batch)
        distances, rewards = self.rewards(pl_module, batch)
        self._check_finite(pl_module, rewards)
        kind = self.baseline_for(batch.group_size)
        baselines = compute_baseline(kind, distances, rewards, self.running)
        norm = self.gradient.advantage_norm
        batch_std = self._global_std(pl_module, rewards) if norm == "batch" else None
        advantages = normalize_advantages(rewards - baselines, rewards, norm, batch_std=batch_std)
        advantages = advantages.flatten()  # [N], prompt-major like the rollout
        if self.gradient.shuffle_rewards:
            advantages = advantages[self._permutation(pl_module, advantages.shape[0]).to(advantages.device)]
        batch.record(f"{self.name}/reward", rewards.flatten())  # per sample, for CompletionLogCallback
        batch.record(f"{self.name}/advantage", advantages)
        rows = batch.on_policy_rows()
        logprobs = batch.sequence_logprobs[rows]
        if self.gradient.beta_scale == "per_token":
            logprobs = logprobs / batch.mask[rows].sum(dim=(1, 2)).clamp(min=1)
        if self.beta_range is None:
            term = -self.beta * diversity_surrogate(advantages, logprobs)
        else:  # each group's term weighted by its own beta (the student's control)
            weights = batch.control(DIVERSITY_WEIGHT)[rows].to(advantages.dtype)
            term = -diversity_surrogate(advantages * weights, logprobs)

        num_prompts = rewards.shape[0]
        p = self._prefix
        pl_module.log(f"train/{p}reward_mean", rewards.mean(), batch_size=num_prompts)
        pl_module.log(f"train/{p}reward_std", rewards.flatten().std(correction=0), batch_size=num_prompts)
        pl_module.log(f"train/{p}group_diversity", group_diversity(distances).mean(), batch_size=num_prompts)
        pl_module.log(f"train/{p}reward_baseline", baselines.mean(), batch_size=num_prompts)
        spread = rewards.std(dim=1, correction=0).mean()  # per-prompt spread: what other_pairs ranks
        pl_module.log(f"train/{p}reward_group_spread", spread, batch_size=num_prompts)
        if self.trains_on_reward:  # averaged over processes, so every rank stops at the same step
            # the dead-reward gate watches the spread the advantages compare: within a prompt for the
            # other_pairs baseline; across the batch for the others (with G = 2 both samples of a prompt
            # share their one pair's reward, so the within-prompt spread is 0 by construction)
            if kind != "other_pairs":
                spread = rewards.flatten().std(correction=0)
            global_spread = pl_module.trainer.strategy.reduce(spread.detach(), reduce_op="mean")
            self.dead_reward.update(float(global_spread), pl_module.global_step)
        if self.log_norm and pl_module.global_step % self.gradient.log_norm_every_n_steps == 0:
            self.grad_norm.add_term(pl_module, term, self._params(pl_module))
        if kind == "running_mean":
            # after the loss is built, so the baseline of this batch never saw its rewards; averaged over
            # processes so every rank holds (and checkpoints) the same baseline
            batch_mean = pl_module.trainer.strategy.reduce(rewards.mean(), reduce_op="mean")
            self.running.update(float(batch_mean))
        return {self.name: term}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: CFGRLModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.controller is None:
            return
        kl = trainer.callback_metrics.get(BUDGET_METRIC)
        if kl is None:
            raise ValueError(
                f"DiversityRewardCallback(quality_budget=...) reads the logged {BUDGET_METRIC!r}, which no "
                "callback logged this step; add CFGDistillCallback to the Trainer's callbacks"
            )
        # every rank feeds the same (averaged) KL, so every rank holds and checkpoints the same beta
        kl = float(trainer.strategy.reduce(kl.detach().float().mean(), reduce_op="mean"))
        base = trainer.callback_metrics.get(BASE_DIVERGENCE_METRIC) if self.controller.measuring else None
        if base is not None:
            base = float(trainer.strategy.reduce(base.detach().float().mean(), reduce_op="mean"))
        self.beta = self.controller.update(kl, base)
        self._request_base_divergence(trainer)
        c, p = self.controller, self._prefix
        if c.base is not None:
            pl_module.log(f"train/{p}budget_kl_base", c.base, batch_size=1)
        pl_module.log(f"train/{self.name}_beta", self.beta, batch_size=1)
        pl_module.log(f"train/{p}budget_kl_smoothed", c.smoothed, batch_size=1)
        if c.target is not None:
            pl_module.log(f"train/{p}budget_kl_target", c.target, batch_size=1)
        limit = self.gates.over_budget_steps
        if limit and c.over_budget_steps >= limit:
            raise over_budget_error(c.over_budget_steps, c.smoothed, c.target, self.beta, trainer.global_step)

    @staticmethod
    def _global_std(pl_module: CFGRLModule, rewards: Tensor) -> Tensor:
        """The std of the rewards of the whole global batch (every process holds as many): a per-rank
        std would make the update depend on how the batch is split."""
        moments = torch.stack([rewards.mean(), rewards.square().mean()])  # one all-reduce for both
        mean, mean_sq = pl_module.trainer.strategy.reduce(moments, reduce_op="mean")
        return (mean_sq - mean.square()).clamp(min=0).sqrt()

    def baseline_for(self, group_size: int) -> str:
        """The baseline used with G = ``group_size`` samples per prompt (resolves ``"auto"``)."""
        if self.gradient.baseline != "auto":
            return self.gradient.baseline
        return "other_pairs" if group_size >= 3 else "running_mean"

    def rollout_controls(
        self, pl_module: CFGRLModule, num_prompts: int, group_size: int, rng: torch.Generator | None
    ) -> dict[str, Tensor]:
        """One beta per prompt group (``[num_prompts * group_size]``), when ``beta`` is a range/list."""
        if self.beta_range is None:
            return {}
        return {DIVERSITY_WEIGHT: self.beta_range.draw(num_prompts, rng).repeat_interleave(group_size)}

    def _permutation(self, pl_module: CFGRLModule, n: int) -> Tensor:
        seed = step_seed(self.gradient.seed, pl_module.global_step, pl_module.global_rank)
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    # -- gradient norms -------------------------------------------------------------------------------
    def _params(self, pl_module: CFGRLModule) -> list[Tensor]:
        return [p for p in pl_module.generator.parameters() if p.requires_grad]

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: CFGRLModule, optimizer: Any) -> None:
        if self.log_norm:
            self.grad_norm.log_at_optimizer_step(pl_module, self._params(pl_module))

    # -- checks ---------------------------------------------------------------------------------------
    def _check_finite(self, pl_module: CFGRLModule, rewards: Tensor) -> None:
        # before the running baseline sees them: a NaN there would poison every later advantage
        finite = torch.isfinite(rewards)
        if not bool(finite.all()):
            raise FloatingPointError(
                f"non-finite diversity reward at global step {pl_module.global_step}: term {self.name!r}, "
                f"{int((~finite).sum())} of {finite.numel()} rewards are NaN or inf (the embedder "
                f"{type(self.embedder).__name__} returned non-finite embeddings). "
                + last_good_note(pl_module)
            )

    @staticmethod
    def _check_group_size(group_size: int) -> None:
        if group_size < 2:
            raise ValueError(
                f"DiversityRewardCallback needs G >= 2 samples per prompt (CFGRLModule rollout.num_samples_per_prompt), "
                f"got G = {group_size}"
            )

    def _warn_if_tempered(self, batch: RolloutBatch) -> None:
        if not self._warned_sampling and not batch.sampling.is_plain:
            rank_zero_warn(
                f"DiversityRewardCallback: rollouts are sampled with {batch.sampling}, not the student's own "
                "distribution; the policy gradient is then that of the diversity of the *processed* "
                "distribution (sequence_logprobs include temperature/top-k/top-p)."
            )
            self._warned_sampling = True

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # a resumed run must score with the same reward: the embedder's file (verified by hash), or its
        # weights when nothing else can rebuild it
        source = getattr(self.embedder, "checkpoint_source", None)
        state = frozen_state(self.embedder, "embedder", source, self.embedding.embed_in_checkpoint)
        state["dead_reward_steps"] = self.dead_reward.dead_steps
        if self.controller is not None:  # beta, the reference and the smoothed KL resume where they were
            state["budget"] = self.controller.state_dict()
        return {"running_baseline": self.running.state_dict(), **state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        source = getattr(self.embedder, "checkpoint_source", None)
        load_frozen_state(self.embedder, state_dict, "embedder", source, "reward embedder")
        if "running_baseline" in state_dict:
            self.running.load_state_dict(state_dict["running_baseline"])
        self.dead_reward.dead_steps = state_dict.get("dead_reward_steps", 0)
        if self.controller is not None and state_dict.get("budget") is not None:
            self.controller.load_state_dict(state_dict["budget"])
            self.beta = self.controller.beta
