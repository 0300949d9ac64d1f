"""CFG against temperature on the hidden-section domain (:class:`HMMMusic`): pretrain a small base,
then sweep guidance, temperature and top-p and print adherence, log-likelihood and diversity.

    OMP_NUM_THREADS=1 python examples/guidance_vs_temperature_hmm.py [--base runs/hmm_base.pt]

Pretraining (about 3 minutes on one core) is skipped when ``--base`` exists; the state dict is saved
there otherwise. Prints the table and saves it, with the machine and commit, to
``benchmarks/results/guidance_vs_temperature_hmm.json`` (``--out``), from which the docs table is made.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_cfgrl import SamplingConfig
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.eval.candidates import Measurement, evaluate_candidate, format_table
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.experiments import (
    LatentModeEmbedder,
    LogLikelihood,
    PromptAdherence,
    SyntheticMusicDataModule,
)
from lightning_cfgrl.experiments.hmm_music import HMMMusic
from lightning_cfgrl.io.checkpoints import atomic_save_json
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training import PretrainModule


class ChunkedEmbedder(nn.Module):
    """Embeds in chunks: bigram histograms of V = 64 are 3 x 4096 wide per sample."""

    def __init__(self, embedder: nn.Module, chunk: int = 128) -> None:
        super().__init__()
        self.embedder, self.chunk = embedder, chunk

    def forward(self, frames: Tensor) -> Tensor:
        return torch.cat([self.embedder(part) for part in frames.split(self.chunk)])


def pretrain(domain: HMMMusic, args: argparse.Namespace) -> AudioTokenTransformer:
    pl.seed_everything(0)
    generator = AudioTokenTransformer(**base_args(domain))
    module = PretrainModule(generator, condition_dropout=0.2, learning_rate=3e-3)
    data = SyntheticMusicDataModule(domain, num_train=args.num_train, num_val=256, batch_size=64, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    print(f"pretrained {args.steps} steps in {time.perf_counter() - start:.0f} s")
    return generator


def base_args(domain: HMMMusic) -> dict:
    return dict(
        num_codebooks=domain.num_codebooks,
        vocab_size=domain.vocab_size,
        condition_sizes=domain.attribute_sizes,
        dim=64,
        num_layers=2,
        num_heads=4,
        max_frames=domain.num_frames,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="runs/hmm_base.pt")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--num-train", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--prompt-scale", type=float, default=None)
    parser.add_argument("--out", default="benchmarks/results/guidance_vs_temperature_hmm.json")
    args = parser.parse_args()
    domain = HMMMusic() if args.prompt_scale is None else HMMMusic(scales={"prompt_scale": args.prompt_scale})
    if os.path.exists(args.base):
        base = AudioTokenTransformer(**base_args(domain))
        base.load_state_dict(torch.load(args.base, weights_only=True))
        pretrained = f"loaded from {args.base}"
    else:
        base = pretrain(domain, args)
        os.makedirs(os.path.dirname(args.base) or ".", exist_ok=True)
        torch.save(base.state_dict(), args.base)
        pretrained = f"pretrained here: {args.steps} steps, {args.num_train} sequences, saved to {args.base}"
    base.eval()

    truth = domain.sample(domain.prompts.repeat(args.samples, 1), torch.Generator().manual_seed(0))
    true_post = domain.prompt_log_posterior(truth, domain.prompts.repeat(args.samples, 1))
    true_ll = domain.log_likelihood(truth, domain.prompts.repeat(args.samples, 1)) / domain.num_frames
    print(
        f"true samples: adherence {true_post.mean():.3f}, posterior {true_post.exp().mean():.3f}, "
        f"chance {1 / domain.num_prompts:.3f} (log {-torch.log(torch.tensor(float(domain.num_prompts))):.3f})"
    )

    configs = [(f"CFG g={g}", SamplingConfig(guidance_scale=g), "cfg") for g in (1, 1.5, 2, 3, 5)]
    configs += [
        (f"temperature {t}", SamplingConfig(temperature=t), "temperature") for t in (0.9, 0.7, 0.5, 0.4)
    ]
    configs += [(f"top-p {p}", SamplingConfig(top_p=p), "top_p") for p in (0.8, 0.6)]
    scorers = [PromptAdherence(domain), LogLikelihood(domain)]
    embedders = {
        "diversity": ChunkedEmbedder(TokenHistogramEmbedder(domain.vocab_size)),
        "latent_diversity": LatentModeEmbedder(domain),
    }
    measurement = Measurement(
        domain.prompts, domain.num_frames, scorers, embedders, args.samples, range(args.seeds)
    )
    results = []
    for name, config, family in configs:
        results.append(evaluate_candidate(name, base, config, measurement, family=family))
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print(f"all {domain.num_prompts} prompts x {args.samples} samples x {args.seeds} seeds")
    print(format_table(results))
    atomic_save_json(
        {
            "command": "OMP_NUM_THREADS=1 python examples/guidance_vs_temperature_hmm.py "
            + " ".join(sys.argv[1:]),
            "domain": "HMMMusic()"
            if args.prompt_scale is None
            else f"HMMMusic(scales=HMMScales(prompt_scale={args.prompt_scale}))",
            "base": pretrained,
            "protocol": {
                "prompts": "all",
                "num_prompts": domain.num_prompts,
                "samples": args.samples,
                "seeds": args.seeds,
            },
            "chance": {"adherence": scorers[0].chance, "log_likelihood": scorers[1].chance},
            "true_samples": {
                "adherence": float(true_post.mean()),
                "log_likelihood": float(true_ll.mean()),
                "samples_per_prompt": args.samples,
                "seed": 0,
            },
            "results": [r.as_dict() for r in results],
            "machine": describe_machine(),
        },
        Path(args.out),
    )
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
