"""DiversityRewardCallback: the loss term's value and gradient, the frozen embedder, the baselines' state,
the placebo, logging, and the beta = 0 identity with distillation alone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch

from lightning_cfgrl import (
    CFGDistillCallback,
    CFGRLModule,
    DiversityGradientConfig,
    RolloutBatch,
    SamplingConfig,
)
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.core.diversity import diversity_rewards, grouped, pairwise_distances
from lightning_cfgrl.core.sampling import sample
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder, TokenHistogramEmbedder
from lightning_cfgrl.experiments import SyntheticMusic, SyntheticPromptDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from tests.helpers.models import BASE_ARGS, quiet_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
PAPER = dict(beta_scale="paper", advantage_norm="none")  # the paper's literal estimator


class _StubModule:
    """What ``loss_terms`` reads from a CFGRLModule, without a Trainer (records what it logs)."""

    def __init__(self, generator: AudioTokenTransformer) -> None:
        self.generator = generator
        self.logged: dict[str, float] = {}
        self.global_step, self.global_rank = 3, 0
        self.trainer = SimpleNamespace(
            strategy=SimpleNamespace(reduce=lambda t, reduce_op: t), accumulate_grad_batches=1
        )

    def log(self, name: str, value: torch.Tensor, **kwargs) -> None:
        self.logged[name] = float(value)


def _rollout(group_size: int = 4, sampling: SamplingConfig | None = None) -> tuple[_StubModule, RolloutBatch]:
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    sampling = sampling or SamplingConfig()
    prompts = SyntheticMusic().prompts[:3]
    steps = sample(generator, prompts, 16, sampling, num_samples=group_size, seed=0)
    condition = repeat_condition(prompts, group_size)
    mask = generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    return _StubModule(generator), RolloutBatch(
        steps, condition, mask, group_size, generator(steps, condition), sampling
    )


def _rewards(module: _StubModule, batch: RolloutBatch, embedder: torch.nn.Module) -> torch.Tensor:
    frames = module.generator.pattern.steps_to_frames(batch.steps)
    return diversity_rewards(pairwise_distances(grouped(embedder(frames), batch.group_size))).flatten()


def test_term_is_minus_beta_times_twice_the_advantage_weighted_logprob_of_the_sampled_distribution() -> None:
    # tempered rollout: the policy gradient must use the log-probs of what was actually sampled
    module, batch = _rollout(sampling=SamplingConfig(temperature=0.7))
    embedder = TokenHistogramEmbedder(32, ngram=1)
    callback = DiversityRewardCallback(
        embedder, beta=15.0, gradient=DiversityGradientConfig(baseline="other_pairs", **PAPER)
    )
    with pytest.warns(UserWarning, match="not the student's own distribution"):
        term = callback.loss_terms(module, batch)["diversity"]
    # the expectation in float64 throughout (the package computes rewards and the surrogate in float64
    # too, from float32 embeddings and float32 log-probs)
    distances = pairwise_distances(
        grouped(embedder(module.generator.pattern.steps_to_frames(batch.steps)).double(), 4)
    )
    rewards = diversity_rewards(distances)
    others = torch.stack(
        [
            torch.stack(
                [
                    distances[b][[j for j in range(4) if j != i]][:, [j for j in range(4) if j != i]].sum()
                    / 6
                    for i in range(4)
                ]
            )
            for b in range(3)
        ]
    )
    advantages = (rewards - others).flatten()
    tempered = torch.log_softmax(batch.student_logits.double() / 0.7, -1).gather(
        -1, batch.steps.clamp(max=31)[..., None]
    )[..., 0]
    logp = torch.where(batch.mask, tempered, torch.zeros_like(tempered)).sum(dim=(1, 2))
    expected = -15.0 * 2 * (advantages * logp).mean()
    # what remains of float32 is each log pi (rounded to ~eps32 relative) and the float32 embedding: the
    # error bound scales with the size of the cancelling terms, sum |beta * 2 * adv_i * log pi_i| / N
    scale = float((15.0 * 2 * advantages.abs() * logp.abs()).mean())
    eps32 = torch.finfo(torch.float32).eps
    assert abs(float(term) - float(expected)) <= 64 * eps32 * scale, (float(term), float(expected), scale)
    (grad,) = torch.autograd.grad(term, batch.student_logits, retain_graph=True)
    (expected_grad,) = torch.autograd.grad(expected, batch.student_logits)
    tol = 64 * eps32 * float(expected_grad.abs().max())
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=tol)
    assert module.logged["train/reward_mean"] == pytest.approx(float(rewards.mean()), abs=1e-6)
    assert module.logged["train/group_diversity"] == pytest.approx(float(rewards.mean()), abs=1e-6)
    assert module.logged["train/reward_std"] == pytest.approx(
        float(rewards.flatten().std(correction=0)), abs=1e-6
    )
    assert module.logged["train/reward_baseline"] == pytest.approx(float(others.mean()), abs=1e-6)


def test_running_baseline_lags_one_batch_and_shuffle_permutes_advantages() -> None:
    module, batch = _rollout(group_size=2)
    embedder = TokenHistogramEmbedder(32, ngram=1)
    rewards = _rewards(module, batch, embedder)
    logp = batch.sequence_logprobs.detach()
    callback = DiversityRewardCallback(
        embedder, beta=2.0, gradient=DiversityGradientConfig(**PAPER)
    )  # running mean
    first = callback.loss_terms(module, batch)["diversity"]
    torch.testing.assert_close(first, -2.0 * 2 * (rewards * logp).mean())  # no history yet: baseline 0
    assert callback.running.value == pytest.approx(float(rewards.mean()))  # updated after the loss
    second = callback.loss_terms(module, batch)["diversity"]
    torch.testing.assert_close(second, -2.0 * 2 * ((rewards - rewards.mean()) * logp).mean())

    placebo = DiversityRewardCallback(
        embedder,
        beta=2.0,
        gradient=DiversityGradientConfig(baseline="none", shuffle_rewards=True, seed=5, **PAPER),
    )
    shuffled = placebo.loss_terms(module, batch)["diversity"]
    perm = placebo._permutation(module, rewards.shape[0])
    assert not torch.equal(perm, torch.arange(rewards.shape[0]))
    torch.testing.assert_close(shuffled, -2.0 * 2 * (rewards[perm] * logp).mean())
    assert not torch.allclose(shuffled, -2.0 * 2 * (rewards * logp).mean())
    assert module.logged["train/reward_mean"] == pytest.approx(
        float(rewards.mean()), abs=1e-6
    )  # logs the truth


def test_needs_two_samples_per_prompt_and_three_for_other_pairs() -> None:
    module, batch = _rollout(group_size=1)
    with pytest.raises(ValueError, match="G >= 2 samples per prompt.*got G = 1"):
        DiversityRewardCallback(TokenHistogramEmbedder(32)).loss_terms(module, batch)
    data = SyntheticPromptDataModule(batch_size=4)
    generator = AudioTokenTransformer(**BASE_ARGS)
    with pytest.raises(ValueError, match="got G = 1"):
        quiet_trainer(
            max_steps=1, limit_val_batches=0, callbacks=[DiversityRewardCallback(TokenHistogramEmbedder(32))]
        ).fit(CFGRLModule(generator, rollout={"num_frames": 8, "num_samples_per_prompt": 1}), data)
    with pytest.raises(ValueError, match="'other_pairs' needs rollout.num_samples_per_prompt >= 3, got 2"):
        quiet_trainer(
            max_steps=1,
            limit_val_batches=0,
            callbacks=[
                DiversityRewardCallback(
                    TokenHistogramEmbedder(32), gradient=DiversityGradientConfig(baseline="other_pairs")
                )
            ],
        ).fit(CFGRLModule(generator, rollout={"num_frames": 8, "num_samples_per_prompt": 2}), data)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1.0"):
        DiversityRewardCallback(TokenHistogramEmbedder(32), beta=-1.0)
    with pytest.raises(ValueError, match="gradient.baseline must be one of"):
        DiversityGradientConfig(baseline="leave_one_out")  # type: ignore[arg-type]


def _fit(
    base_state: dict, callbacks: list, steps: int = 4, group_size: int = 2, **trainer_kwargs
) -> tuple[CFGRLModule, pl.Trainer]:
    pl.seed_everything(0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    generator.load_state_dict(base_state)
    module = CFGRLModule(
        generator,
        rollout={"num_frames": 16, "num_samples_per_prompt": group_size},
        optimization={"learning_rate": 1e-3},
    )
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    return module, trainer


@pytest.mark.slow  # trains a model
def test_beta_zero_gives_exactly_the_gradients_of_distillation_alone(pretrained_base_state) -> None:
    alone, _ = _fit(pretrained_base_state, [CFGDistillCallback()])
    torch.manual_seed(0)
    with_zero, trainer = _fit(
        pretrained_base_state,
        [CFGDistillCallback(), DiversityRewardCallback(ContrastiveTokenEmbedder(), beta=0.0)],
    )
    for (name, a), b in zip(
        alone.generator.state_dict().items(), with_zero.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert "train/reward_mean" in trainer.callback_metrics  # the reward was computed and logged all the same


@pytest.mark.slow  # trains a model
def test_embedder_is_frozen_never_optimised_and_saved_for_resume(pretrained_base_state, tmp_path) -> None:
    torch.manual_seed(0)
    embedder = ContrastiveTokenEmbedder()
    embedder.train()  # the callback must freeze it whatever state it arrives in
    before = {k: v.clone() for k, v in embedder.state_dict().items()}
    callback = DiversityRewardCallback(embedder, beta=15.0)
    module, trainer = _fit(pretrained_base_state, [CFGDistillCallback(), callback], steps=3)
    assert not embedder.training and not any(p.requires_grad for p in embedder.parameters())
    assert all(p.grad is None for p in embedder.parameters())
    assert all(torch.equal(before[k], v) for k, v in embedder.state_dict().items())
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in embedder.parameters()}
    assert {p.device for p in embedder.parameters()} == {module.device}
    assert callback.running.count == 3

    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    state = ckpt["callbacks"][callback.state_key]
    assert state["running_baseline"]["count"] == 3
    # resume into a callback holding a *different* embedder: the checkpoint's reward comes back
    torch.manual_seed(1)
    resumed = DiversityRewardCallback(ContrastiveTokenEmbedder(), beta=15.0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    fresh = CFGRLModule(
        generator,
        rollout={"num_frames": 16, "num_samples_per_prompt": 2},
        optimization={"learning_rate": 1e-3},
    )
    quiet_trainer(max_steps=5, limit_val_batches=0, callbacks=[CFGDistillCallback(), resumed]).fit(
        fresh, SyntheticPromptDataModule(batch_size=4), ckpt_path=str(path)
    )
    assert resumed.running.count == 5  # 3 restored + 2 new steps
    assert all(torch.equal(before[k], v) for k, v in resumed.embedder.state_dict().items())


@pytest.mark.slow  # trains a model
def test_grad_norm_logging_splits_the_total(pretrained_base_state) -> None:
    # diversity alone: every bit of the total gradient is this term's
    _, trainer = _fit(
        pretrained_base_state,
        [
            DiversityRewardCallback(
                ContrastiveTokenEmbedder(), beta=15.0, gradient=DiversityGradientConfig(log_norm=True)
            )
        ],
        steps=2,
        group_size=3,
    )
    metrics = trainer.callback_metrics
    assert float(metrics["train/grad_norm/diversity"]) > 0
    assert float(metrics["train/grad_norm/total"]) == pytest.approx(
        float(metrics["train/grad_norm/diversity"]), rel=1e-4
    )
    assert float(metrics["train/grad_norm/other_terms"]) < 1e-4 * float(metrics["train/grad_norm/total"])
    # with distillation too, the other terms' share is distillation's, and the logs are all there: by
    # default (gradient.log_norm=None), every gradient.log_norm_every_n_steps steps, here steps 0 and 2 of 3
    recorded: list[dict[str, float]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            recorded.append({k: float(v) for k, v in trainer.callback_metrics.items() if "grad_norm" in k})

    _, trainer = _fit(
        pretrained_base_state,
        [
            CFGDistillCallback(),
            DiversityRewardCallback(
                ContrastiveTokenEmbedder(),
                beta=15.0,
                gradient=DiversityGradientConfig(log_norm_every_n_steps=2),
            ),
            Record(),
        ],
        steps=3,
    )
    metrics = trainer.callback_metrics
    assert float(metrics["train/grad_norm/other_terms"]) > 0
    assert float(metrics["train/grad_norm/ratio"]) == pytest.approx(
        float(metrics["train/grad_norm/diversity"]) / float(metrics["train/grad_norm/other_terms"]), rel=1e-5
    )
    assert recorded[0] == recorded[1] != recorded[2]  # step 1 logged nothing new; step 2 did
    for name in (
        "train/reward_mean",
        "train/reward_std",
        "train/group_diversity",
        "train/reward_baseline",
        "train/diversity",
    ):
        assert name in metrics, name


def test_yaml_configs_resolve_the_diversity_callback(tmp_path) -> None:
    from lightning_cfgrl.cli.main import run_cli

    torch.manual_seed(0)
    embedder_ckpt = tmp_path / "embedder.ckpt"
    embedder = ContrastiveTokenEmbedder()
    torch.save(
        {
            "state_dict": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
            "hyper_parameters": {"embedder": embedder.spec()},
        },
        embedder_ckpt,
    )
    for name, beta in (
        ("distill_beta0.yaml", 0.0),
        ("distill_beta15.yaml", 1.0),  # the quality budget's starting weight
        ("distill_placebo.yaml", 1.0),
    ):
        text = (CONFIGS / name).read_text().replace("runs/embedder/checkpoints/last.ckpt", str(embedder_ckpt))
        config = tmp_path / name
        config.write_text(text)
        cli = run_cli(["--config", str(config), "--model.init_args.init_checkpoint=null"], run=False)
        callbacks = [cb for cb in cli.trainer.callbacks if isinstance(cb, DiversityRewardCallback)]
        assert len(callbacks) == 1
        budget = callbacks[0].controller
        # a budget run holds beta at 0 while it measures the reference, then starts from `beta`
        assert (
            (callbacks[0].beta, budget.initial_beta) == (0.0, beta) if budget else callbacks[0].beta == beta
        )
        assert callbacks[0].gradient.shuffle_rewards == (name == "distill_placebo.yaml")
        assert isinstance(callbacks[0].embedder, ContrastiveTokenEmbedder)
        assert torch.equal(callbacks[0].embedder.proj[0].weight, embedder.proj[0].weight)
        assert any(isinstance(cb, CFGDistillCallback) for cb in cli.trainer.callbacks)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_per_token_scale_divides_logprobs_by_tokens_and_advantages_by_the_reward_spread(norm: str) -> None:
    module, batch = _rollout(group_size=4)
    embedder = TokenHistogramEmbedder(32, ngram=1)
    callback = DiversityRewardCallback(
        embedder,
        beta=3.0,
        gradient=DiversityGradientConfig(baseline="other_pairs", advantage_norm=norm, beta_scale="per_token"),
    )
    term = callback.loss_terms(module, batch)["diversity"]
    # the expectation in float64, written out: r_i, the other pairs' mean, the spread, log pi per token
    frames = module.generator.pattern.steps_to_frames(batch.steps)
    distances = pairwise_distances(grouped(embedder(frames).double(), 4))  # [3, 4, 4]
    rewards = distances.sum(-1) / 3
    others = (distances.sum(dim=(1, 2))[:, None] / 2 - distances.sum(-1)) / 3  # 3 pairs without i
    spread = rewards.std(correction=0) if norm == "batch" else rewards.std(dim=1, correction=0, keepdim=True)
    advantages = ((rewards - others) * 0.1 / (spread + 1e-4)).flatten()  # std 0.1 (REFERENCE_SPREAD)
    tokens = batch.mask.sum(dim=(1, 2)).double()
    assert torch.all(tokens == 16 * 2)  # 16 frames x 2 codebooks generated per sequence
    expected = -3.0 * 2 * (advantages * batch.sequence_logprobs.detach().double() / tokens).mean()
    # |term| ~ 3 * 2 * 0.1 * 3.5 ~ 2; float32 log-probs keep ~1e-6 relative precision per entry
    torch.testing.assert_close(term.double(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="advantage_norm='group' needs G >= 3"):
        DiversityRewardCallback(
            embedder, gradient=DiversityGradientConfig(advantage_norm="group")
        ).loss_terms(module, _rollout(group_size=2)[1])


def test_off_policy_rows_are_skipped_by_the_policy_gradient() -> None:
    module, batch = _rollout(group_size=4)
    embedder = TokenHistogramEmbedder(32, ngram=1)
    other_pairs = DiversityGradientConfig(baseline="other_pairs")
    alone = DiversityRewardCallback(embedder, beta=3.0, gradient=other_pairs).loss_terms(module, batch)
    # the same rollout with 5 rows of other sequences appended (e.g. teacher samples)
    extra = sample(module.generator, SyntheticMusic().prompts[5:10], 16, SamplingConfig(), seed=9)
    steps = torch.cat([batch.steps, extra])
    condition = torch.cat([batch.condition, SyntheticMusic().prompts[5:10]])
    mask = module.generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    mixed = RolloutBatch(steps, condition, mask, 4, module.generator(steps, condition), SamplingConfig(), 12)
    assert mixed.num_prompts == 3 and mixed.on_policy_rows() == slice(0, 12)
    with_extra = DiversityRewardCallback(embedder, beta=3.0, gradient=other_pairs).loss_terms(module, mixed)
    torch.testing.assert_close(with_extra["diversity"], alone["diversity"], rtol=1e-6, atol=1e-6)
