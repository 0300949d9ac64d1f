"""The paper's two runs (beta = 0: quality; beta = 15: diversity) plus the placebo, over several seeds.

    python examples/diversity_reward_runs.py --seeds 0,1,2        # ~1.5 min per seed on 2 CPU cores

Same settings as ``examples/configs/distill_beta{0,15}.yaml`` (and the end-to-end test): from one
pretrained base (``runs/base/checkpoints/last.ckpt`` if it exists, else pretrained here like
``pretrain.yaml``), 150 steps of on-policy CFG distillation (guidance 3, reverse KL) with G = 2 samples
per prompt, plus the diversity reward of a contrastive embedder (``runs/embedder/checkpoints/last.ckpt``
if it exists, else trained here like ``embedder.yaml``). Placebo = beta 15 with rewards shuffled across
the batch: same update noise, no reward signal.

Evaluation, per prompt (all 48 prompts, and the 12 held out of RL training), 16 samples at temperature 1:
diversity = mean pairwise ``1 - cos`` of bigram token histograms (not the reward's embedder); the
reward embedder's own diversity; quality = exact adherence ``log p*(prompt | x)`` and exact
log-likelihood per frame. Printed as mean +- standard error over seeds.
"""

from __future__ import annotations

import argparse
import os

import lightning.pytorch as pl
import torch
from einops import rearrange

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, SamplingConfig
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.core.sampling import sample
from lightning_cfgrl.embedders import ContrastiveEmbedderModule, ContrastiveTokenEmbedder
from lightning_cfgrl.eval import group_pairwise_diversity, mean_se, pairwise_cosine_diversity
from lightning_cfgrl.experiments import (
    LogLikelihood,
    PromptAdherence,
    SyntheticMusic,
    SyntheticMusicDataModule,
    SyntheticPromptDataModule,
)
from lightning_cfgrl.io.generators import load_generator_state
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.pretrain import PretrainModule

BASE_ARGS = dict(
    num_codebooks=2,
    vocab_size=32,
    condition_sizes=(4, 4, 3),
    dim=64,
    num_layers=2,
    num_heads=4,
    max_frames=32,
)
SAMPLES = 16


def trainer(steps: int, callbacks: list | None = None) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def base_state(domain: SyntheticMusic) -> dict[str, torch.Tensor]:
    if os.path.exists("runs/base/checkpoints/last.ckpt"):
        return load_generator_state("runs/base/checkpoints/last.ckpt")
    pl.seed_everything(0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    data = SyntheticMusicDataModule(domain, num_train=20_000, num_val=256, batch_size=64, seed=0)
    trainer(600).fit(PretrainModule(generator, condition_dropout=0.2, learning_rate=3e-3), data)
    return generator.state_dict()


def reward_embedder(domain: SyntheticMusic) -> ContrastiveTokenEmbedder:
    if os.path.exists("runs/embedder/checkpoints/last.ckpt"):
        return ContrastiveTokenEmbedder.from_checkpoint("runs/embedder/checkpoints/last.ckpt")
    pl.seed_everything(0)
    module = ContrastiveEmbedderModule(ContrastiveTokenEmbedder(), chunk_frames=12)
    trainer(400).fit(
        module, SyntheticMusicDataModule(domain, num_train=25_600, num_val=64, batch_size=64, seed=1)
    )
    return module.embedder.eval()


def train(
    state: dict, embedder: torch.nn.Module, beta: float, shuffle: bool, seed: int, steps: int
) -> AudioTokenTransformer:
    pl.seed_everything(seed)
    generator = AudioTokenTransformer(**BASE_ARGS)
    generator.load_state_dict(state)
    module = CFGRLModule(generator, num_frames=32, num_samples_per_prompt=2, learning_rate=3e-4, seed=seed)
    callbacks = [
        CFGDistillCallback(guidance_scale=3.0),
        DiversityRewardCallback(embedder, beta=beta, shuffle_rewards=shuffle, seed=seed),
    ]
    trainer(steps, callbacks).fit(module, SyntheticPromptDataModule(batch_size=8, heldout_fraction=0.25))
    return generator.eval()


def evaluate(
    generator: AudioTokenTransformer, embedder: torch.nn.Module, prompts: torch.Tensor, domain: SyntheticMusic
) -> dict[str, float]:
    steps = sample(generator, prompts, domain.num_frames, SamplingConfig(), num_samples=SAMPLES, seed=1234)
    frames = generator.pattern.steps_to_frames(steps)
    condition = repeat_condition(prompts, SAMPLES)
    with torch.no_grad():
        reward_space = pairwise_cosine_diversity(rearrange(embedder(frames), "(p g) d -> p g d", g=SAMPLES))
    return {
        "diversity(bigram)": float(group_pairwise_diversity(frames, SAMPLES, generator.vocab_size).mean()),
        "diversity(reward emb)": float(reward_space.mean()),
        "adherence": float(PromptAdherence(domain)(frames, condition).float().mean()),
        "log-lik/frame": float(LogLikelihood(domain)(frames, condition).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated RL seeds")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--beta", type=float, default=15.0)
    args = parser.parse_args()
    domain = SyntheticMusic()
    state, embedder = base_state(domain), reward_embedder(domain)
    splits = {
        "all 48 prompts": domain.prompts,
        "12 held-out": SyntheticPromptDataModule(domain, heldout_fraction=0.25).heldout_prompts,
    }
    base = AudioTokenTransformer(**BASE_ARGS)
    base.load_state_dict(state)
    runs = {
        "base (no RL)": None,
        "beta 0": (0.0, False),
        f"beta {args.beta:g}": (args.beta, False),
        f"placebo (beta {args.beta:g}, shuffled)": (args.beta, True),
    }
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        split: {name: [] for name in runs} for split in splits
    }
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, setting in runs.items():
            if setting is None and seed != int(args.seeds.split(",")[0]):
                continue
            model = (
                base.eval()
                if setting is None
                else train(state, embedder, *setting, seed=seed, steps=args.steps)
            )
            for split, prompts in splits.items():
                results[split][name].append(evaluate(model, embedder, prompts, domain))
    for split, by_run in results.items():
        print(
            f"\n{split}, {SAMPLES} samples each; mean +- s.e. over seeds {args.seeds} ({args.steps} RL steps)"
        )
        metrics = list(next(iter(by_run.values()))[0])
        print(f"{'run':34s}" + "".join(f"{m:>24s}" for m in metrics))
        for name, rows in by_run.items():
            cells = []
            for m in metrics:
                values = [r[m] for r in rows]
                if len(values) > 1:  # one seed has no standard error: print none rather than 0
                    mean, se = mean_se(values)
                    cells.append(f"{mean:>15.4f} +- {se:.4f}")
                else:
                    cells.append(f"{values[0]:>15.4f} +- n/a   ")
            print(f"{name:34s}" + "".join(cells))


if __name__ == "__main__":
    main()
