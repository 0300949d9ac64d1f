"""RewardCallback: leave-one-out advantages (RLOO for per-sample rewards, the diversity reward's other-pairs
estimator for a pairwise group reward), weights, baselines, placebo, class paths from YAML, bad input,
and a fit composed with distillation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, RolloutBatch, SamplingConfig
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.core.diversity import diversity_rewards, pairwise_distances
from lightning_cfgrl.core.rewards import (
    RewardInputs,
    RewardSpec,
    evaluate_rewards,
    leave_one_out_advantages,
    resolve_reward,
    zero_spread_share,
)
from lightning_cfgrl.core.sampling import sample
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.experiments import SyntheticMusic, SyntheticPromptDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.policy_gradient import DiversityGradientConfig
from lightning_cfgrl.training.reward import PolicyGradientConfig, RewardCallback
from tests.helpers.models import BASE_ARGS, quiet_trainer

HIST = TokenHistogramEmbedder(BASE_ARGS["vocab_size"])


def token_mean(inputs: RewardInputs) -> torch.Tensor:
    """Per sample: the mean token id (a reward the policy can raise)."""
    return inputs.tokens.double().mean(dim=(1, 2))


def first_token(inputs: RewardInputs) -> torch.Tensor:
    return inputs.tokens[:, 0, 0].double()


def histogram_diversity(inputs: RewardInputs) -> torch.Tensor:
    """Per group: each sample's mean ``1 - cos`` to its siblings, as DiversityRewardCallback's reward."""
    b, g = inputs.tokens.shape[:2]
    embeddings = HIST(inputs.tokens.flatten(0, 1)).double().reshape(b, g, -1)
    return diversity_rewards(pairwise_distances(embeddings))


class Stub:
    def __init__(self, generator: AudioTokenTransformer) -> None:
        self.generator, self.logged = generator, {}
        self.global_step, self.global_rank, self.device = 3, 0, torch.device("cpu")
        self.trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))

    def log(self, name: str, value: torch.Tensor, **kwargs) -> None:
        self.logged[name] = float(value)


def rollout(group_size: int = 4) -> tuple[Stub, RolloutBatch]:
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    prompts = SyntheticMusic().prompts[:3]
    steps = sample(generator, prompts, 12, SamplingConfig(), num_samples=group_size, seed=0)
    condition = repeat_condition(prompts, group_size)
    mask = generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    return Stub(generator), RolloutBatch(
        steps, condition, mask, group_size, generator(steps, condition), SamplingConfig()
    )


def inputs_of(module: Stub, batch: RolloutBatch) -> RewardInputs:
    frames = module.generator.pattern.steps_to_frames(batch.steps)
    return RewardInputs(frames, batch.condition, batch.group_size)


def test_leave_one_out_is_rloo_for_per_sample_rewards_and_recomputes_group_rewards() -> None:
    module, batch = rollout()
    inputs = inputs_of(module, batch)
    functions = [
        resolve_reward(RewardSpec(token_mean, weight=2.0)),
        resolve_reward(RewardSpec(first_token, -0.5)),
    ]
    parts = evaluate_rewards(functions, inputs)
    total = 2.0 * parts["token_mean"] - 0.5 * parts["first_token"]
    advantages, _ = leave_one_out_advantages(functions, inputs, parts)
    g = total.shape[1]
    rloo = total - (total.sum(1, keepdim=True) - total) / (g - 1)
    torch.testing.assert_close(advantages, rloo, rtol=1e-12, atol=1e-12)
    # a pairwise group reward: leave-one-out is 2 (r_j - other_pairs_j), the diversity estimator
    diversity = [resolve_reward(RewardSpec(histogram_diversity, per="group"))]
    parts = evaluate_rewards(diversity, inputs)
    advantages, baselines = leave_one_out_advantages(diversity, inputs, parts)
    from lightning_cfgrl.core.diversity import other_pairs_baseline

    embeddings = HIST(inputs.tokens).double().reshape(3, g, -1)
    expected_baseline = other_pairs_baseline(pairwise_distances(embeddings))
    torch.testing.assert_close(baselines, expected_baseline, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(advantages, 2 * (parts["histogram_diversity"] - expected_baseline))


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_pairwise_group_reward_gives_the_diversity_callbacks_loss_term(shuffle: bool) -> None:
    module, batch = rollout()
    reward = RewardCallback(
        [RewardSpec(histogram_diversity, per="group")],
        beta=3.0,
        gradient=PolicyGradientConfig(baseline="leave_one_out", shuffle_rewards=shuffle, seed=5),
    )
    diversity = DiversityRewardCallback(
        HIST,
        beta=3.0,
        gradient=DiversityGradientConfig(baseline="other_pairs", shuffle_rewards=shuffle, seed=5),
    )
    ours = reward.loss_terms(module, batch)["reward"]
    theirs = diversity.loss_terms(module, batch)["diversity"]
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-5, atol=1e-7)
    # the diversity callback publishes r - b and doubles in its surrogate; leave-one-out holds the 2
    torch.testing.assert_close(batch.records["reward/advantage"], 2 * batch.records["diversity/advantage"])
    torch.testing.assert_close(batch.records["reward/reward"], batch.records["diversity/reward"])
    assert module.logged["train/reward/histogram_diversity"] == pytest.approx(
        module.logged["train/reward_mean"]
    )
    # the gradient of the term is that of -beta * mean_j A_j * log pi(y_j) / tokens
    (grad,) = torch.autograd.grad(ours, batch.student_logits, retain_graph=True)
    assert grad.abs().sum() > 0


def test_running_mean_and_other_baselines_and_the_beta_weight() -> None:
    module, batch = rollout()
    cb = RewardCallback(
        [token_mean], beta=2.0, gradient=PolicyGradientConfig(baseline="running_mean", advantage_norm="none")
    )
    term = cb.loss_terms(module, batch)["reward"]
    rewards = batch.records["reward/reward"]
    assert torch.equal(batch.records["reward/advantage"], rewards)  # no history yet: baseline 0
    tokens = batch.mask.sum(dim=(1, 2))
    expected = -2.0 * (rewards * batch.sequence_logprobs.double() / tokens).mean()
    torch.testing.assert_close(term.double(), expected, rtol=1e-5, atol=1e-6)
    assert cb.running.count == 1 and cb.running.value == pytest.approx(float(rewards.mean()))
    cb.loss_terms(module, batch)
    torch.testing.assert_close(batch.records["reward/advantage"], rewards - float(rewards.mean()))
    none = RewardCallback(
        [token_mean], gradient=PolicyGradientConfig(baseline="other_prompts", advantage_norm="none")
    )
    none.loss_terms(module, batch)
    grouped = rewards.reshape(3, -1)
    others = (grouped.sum() - grouped.sum(1, keepdim=True)) / (2 * grouped.shape[1])
    torch.testing.assert_close(batch.records["reward/advantage"], (grouped - others).flatten())


def test_auto_baseline_and_group_size_checks() -> None:
    assert RewardCallback([token_mean]).baseline_for(2) == "leave_one_out"
    group = RewardCallback([RewardSpec(histogram_diversity, per="group")])
    assert group.baseline_for(2) == "running_mean" and group.baseline_for(3) == "leave_one_out"
    strict = RewardCallback(
        [RewardSpec(histogram_diversity, per="group")],
        gradient=PolicyGradientConfig(baseline="leave_one_out"),
    )
    with pytest.raises(ValueError, match="needs rollout.num_samples_per_prompt >= 3 with a per-group reward"):
        strict.baseline_for(2)


def test_bad_reward_functions_are_named_where_they_enter() -> None:
    with pytest.raises(ValueError, match="at least one reward"):
        RewardCallback([])
    with pytest.raises(ValueError, match="weight must be a finite number"):
        RewardCallback([RewardSpec(token_mean, weight=float("nan"))])
    with pytest.raises(ValueError, match="per must be 'sample' or 'group'"):
        RewardCallback([RewardSpec(token_mean, per="prompt")])
    with pytest.raises(ValueError, match="cannot import 'no_such_module.fn'.*PYTHONPATH"):
        RewardCallback([RewardSpec("no_such_module.fn")])
    with pytest.raises(ValueError, match="distinct names"):
        RewardCallback([token_mean, token_mean])
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        RewardCallback([token_mean], beta=-1.0)
    module, batch = rollout()
    wrong = RewardCallback([lambda inputs: inputs.tokens.double().mean((1, 2))[:2]])
    with pytest.raises(ValueError, match=r"must return shape \(12,\).*got \(2,\)"):
        wrong.loss_terms(module, batch)
    nan = RewardCallback([lambda inputs: torch.full((inputs.tokens.shape[0],), float("nan"))])
    with pytest.raises(FloatingPointError, match="12 non-finite rewards of 12"):
        nan.loss_terms(module, batch)


def test_class_paths_resolve_from_specs_and_dicts_and_are_stored_as_names() -> None:
    cb = RewardCallback(
        [
            {"function": "tests.test_reward_callback.token_mean", "weight": 0.5},
            RewardSpec(
                "lightning_cfgrl.embedders.TokenHistogramEmbedder", args={"vocab_size": 32}, name="hist"
            ),
        ]
    )
    assert cb.functions[0].fn is token_mean and cb.functions[0].weight == 0.5
    assert isinstance(cb.functions[1].fn, TokenHistogramEmbedder) and cb.functions[1].name == "hist"
    state = cb.state_dict()
    assert state["rewards"][0] == {
        "name": "token_mean",
        "path": "tests.test_reward_callback.token_mean",
        "weight": 0.5,
        "per": "sample",
    }
    assert all(isinstance(v, (str, float)) for r in state["rewards"] for v in r.values())


def test_zero_spread_share() -> None:
    rewards = torch.tensor(
        [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [2e-10, 2e-10 + 1e-19, 2e-10]], dtype=torch.float64
    )
    assert float(zero_spread_share(rewards)) == pytest.approx(2 / 3)
    assert float(zero_spread_share(torch.zeros(4, 2))) == 1.0


def test_fit_with_distillation_raises_the_reward(tmp_path) -> None:
    """A per-sample reward pushes the student: the mean token id rises over a short fit (beta large, the
    distillation term weak), while beta = 0 leaves distillation's own updates."""

    def fit(beta: float) -> float:
        pl.seed_everything(0)
        generator = AudioTokenTransformer(**BASE_ARGS)
        module = CFGRLModule(
            generator,
            rollout={"num_frames": 8, "num_samples_per_prompt": 4},
            optimization={"learning_rate": 3e-3, "lr_warmup_steps": 0},
        )
        reward = RewardCallback(
            [token_mean], beta=beta, gradient=PolicyGradientConfig(advantage_norm="batch")
        )
        trainer = quiet_trainer(
            max_steps=25, limit_val_batches=0, callbacks=[CFGDistillCallback(weight=0.01), reward]
        )
        trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
        with torch.no_grad():
            steps = sample(
                generator.eval(), SyntheticMusic().prompts[:8], 8, SamplingConfig(), num_samples=4, seed=1
            )
        return float(generator.pattern.steps_to_frames(steps).double().mean())

    high, zero = fit(30.0), fit(0.0)
    assert high > zero + 0.5


def test_yaml_builds_the_callback_with_a_scorer_as_reward() -> None:
    from lightning_cfgrl.cli.main import run_cli
    from lightning_cfgrl.experiments import PromptAdherence
    from lightning_cfgrl.training.reward import ScorerReward

    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "distill_reward.yaml"
    cli = run_cli(["--config", str(config), "--model.init_args.init_checkpoint=null"], run=False)
    (reward,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, RewardCallback)]
    (function,) = reward.functions
    assert isinstance(function.fn, ScorerReward) and isinstance(function.fn.scorer, PromptAdherence)
    assert reward.beta == 5.0 and reward.gradient.baseline == "leave_one_out"
