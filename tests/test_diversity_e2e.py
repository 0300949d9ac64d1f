"""End to end on the synthetic domain: from the same pretrained base, CFG distillation with the diversity
reward (beta = 15) yields more diverse samples than with beta = 0 *and* than a placebo run (beta = 15,
rewards shuffled across the batch), diversity measured by an embedder different from the reward's
(bigram token histograms). The placebo matters: REINFORCE noise alone also changes diversity."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from einops import rearrange

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DiversityGradientConfig, SamplingConfig
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.core.sampling import sample
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
from lightning_cfgrl.eval import group_pairwise_diversity, pairwise_cosine_diversity
from lightning_cfgrl.experiments import (
    LogLikelihood,
    PromptAdherence,
    SyntheticMusic,
    SyntheticPromptDataModule,
)
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.models import BASE_ARGS, quiet_trainer

RL_STEPS = 150
BETA = 15.0
EVAL_SAMPLES = 16

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def reward_embedder(contrastive_embedder) -> ContrastiveTokenEmbedder:
    return contrastive_embedder[0]


def train(
    base_state: dict,
    embedder: ContrastiveTokenEmbedder,
    beta: float,
    shuffle_rewards: bool = False,
    seed: int = 0,
) -> AudioTokenTransformer:
    """RL_STEPS of distillation (guidance 3) + diversity reward from the base; returns the generator."""
    pl.seed_everything(seed)
    generator = AudioTokenTransformer(**BASE_ARGS)
    generator.load_state_dict(base_state)
    module = CFGRLModule(
        generator,
        seed=seed,
        rollout={"num_frames": 32, "num_samples_per_prompt": 2},
        optimization={"learning_rate": 3e-4},
    )
    callbacks = [
        CFGDistillCallback(guidance_scale=3.0),
        DiversityRewardCallback(
            embedder,
            beta=beta,
            gradient=DiversityGradientConfig(shuffle_rewards=shuffle_rewards, seed=seed),
        ),
    ]
    quiet_trainer(max_steps=RL_STEPS, limit_val_batches=0, callbacks=callbacks).fit(
        module, SyntheticPromptDataModule(batch_size=8, split=PromptSplit(heldout_fraction=0.25))
    )
    return generator.eval()


def evaluate(
    generator: AudioTokenTransformer, embedder: torch.nn.Module, heldout_only: bool = False, seed: int = 1234
) -> dict[str, torch.Tensor]:
    """Per prompt ``[P]`` (all 48 of the domain, or the 12 held out of RL training): histogram
    (evaluation) and reward-embedder diversity of EVAL_SAMPLES samples, and the exact quality scores
    (adherence log p*(prompt | x), log-likelihood per frame)."""
    domain = SyntheticMusic()
    prompts = (
        SyntheticPromptDataModule(domain, split=PromptSplit(heldout_fraction=0.25)).heldout_prompts
        if heldout_only
        else domain.prompts
    )
    steps = sample(generator, prompts, 32, SamplingConfig(), num_samples=EVAL_SAMPLES, seed=seed)
    frames = generator.pattern.steps_to_frames(steps)
    condition = repeat_condition(prompts, EVAL_SAMPLES)
    per_prompt = lambda x: rearrange(x.float(), "(p g) -> p g", g=EVAL_SAMPLES).mean(-1)  # noqa: E731
    with torch.no_grad():
        reward_space = pairwise_cosine_diversity(
            rearrange(embedder(frames), "(p g) d -> p g d", g=EVAL_SAMPLES)
        )
    return {
        "diversity": group_pairwise_diversity(frames, EVAL_SAMPLES, generator.vocab_size),
        "reward_diversity": reward_space,
        "adherence": per_prompt(PromptAdherence(domain)(frames, condition)),
        "log_likelihood": per_prompt(LogLikelihood(domain)(frames, condition)),
    }


def _paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error) of the per-prompt difference a - b."""
    diff = (a - b).double()
    return float(diff.mean()), float(diff.std() / diff.numel() ** 0.5)


def test_diversity_reward_raises_diversity_beyond_beta0_and_placebo(
    pretrained_base_state, reward_embedder
) -> None:
    runs = {
        "beta0": train(pretrained_base_state, reward_embedder, 0.0),
        "beta15": train(pretrained_base_state, reward_embedder, BETA),
        "placebo": train(pretrained_base_state, reward_embedder, BETA, shuffle_rewards=True),
    }
    results = {name: evaluate(generator, reward_embedder) for name, generator in runs.items()}
    for name, r in results.items():  # shown with -s; the numbers reported for the issue
        print(name, {k: round(float(v.mean()), 4) for k, v in r.items()})

    # Thresholds in paired standard errors over the 48 prompts. Over 4 RL seeds (150 steps) the gain
    # in histogram diversity was 0.074-0.086 (7.5-9 s.e.) over beta 0 and 0.016-0.035 (2.2-5.1 s.e.)
    # over the placebo; seed 0, used here, gave 0.084 and 0.035 (5.1 s.e.).
    for other, min_se, min_gain in (("beta0", 3, 0.03), ("placebo", 2, 0.01)):
        gain, se = _paired(results["beta15"]["diversity"], results[other]["diversity"])
        print(f"histogram diversity gain over {other}: {gain:.4f} +- {se:.4f}")
        assert gain > min_se * se and gain > min_gain, f"beta {BETA} vs {other}: gain {gain:.4f} +- {se:.4f}"
    # the reward itself moved much more, in the embedder it was measured with (6.6-10 s.e. over seeds)
    gain, se = _paired(results["beta15"]["reward_diversity"], results["placebo"]["reward_diversity"])
    print(f"reward-embedder diversity gain over placebo: {gain:.4f} +- {se:.4f}")
    assert gain > 4 * se
    # distillation did its job in every run: adherence far above the base model's
    base = AudioTokenTransformer(**BASE_ARGS)
    base.load_state_dict(pretrained_base_state)
    base_adherence = float(evaluate(base.eval(), reward_embedder)["adherence"].mean())
    assert all(float(r["adherence"].mean()) > base_adherence + 0.5 for r in results.values())
