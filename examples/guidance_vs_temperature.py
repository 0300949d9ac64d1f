"""Why CFG is worth distilling on the built-in domain: sweep guidance and temperature on the base.

    python examples/guidance_vs_temperature.py [--ckpt runs/base/checkpoints/last.ckpt]

Needs the base from ``cfgrl fit --config examples/configs/pretrain.yaml`` (or the quickstart); ``--ckpt``
may also be a state dict (``.pt``) of a generator with ``pretrain.yaml``'s shape, such as the recipe
study's cached base. Prints the table and saves it, with the machine and commit, to
``benchmarks/results/guidance_vs_temperature_music.json`` (``--out``), from which the docs table is made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lightning_cfgrl import SamplingConfig
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.eval.candidates import Measurement, evaluate_candidate, format_table
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.experiments import LatentModeEmbedder, LogLikelihood, PromptAdherence, SyntheticMusic
from lightning_cfgrl.io.checkpoints import atomic_save_json
from lightning_cfgrl.io.generators import load_generator
from lightning_cfgrl.models import AudioTokenTransformer

# examples/configs/pretrain.yaml's generator, to rebuild a bare state dict
PRETRAIN_ARGS = dict(
    num_codebooks=2,
    vocab_size=32,
    condition_sizes=(4, 4, 3),
    dim=64,
    num_layers=2,
    num_heads=4,
    max_frames=32,
)


def load_base(path: str) -> torch.nn.Module:
    if path.endswith(".pt"):
        model = AudioTokenTransformer(**PRETRAIN_ARGS)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    return load_generator(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", default="runs/base/checkpoints/last.ckpt")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/guidance_vs_temperature_music.json")
    args = parser.parse_args()
    base = load_base(args.ckpt)
    domain = SyntheticMusic()
    configs = [(f"CFG g={g}", SamplingConfig(guidance_scale=g), "cfg") for g in (1, 1.5, 2, 3, 4, 5)]
    configs += [
        (f"temperature {t}", SamplingConfig(temperature=t), "temperature")
        for t in (0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
    ]
    configs += [(f"top-p {p}", SamplingConfig(top_p=p), "top_p") for p in (0.9, 0.8, 0.6)]
    scorers = [PromptAdherence(domain), LogLikelihood(domain)]
    # the true process's own samples: the reference levels of adherence and naturalness
    repeated = domain.prompts.repeat(16, 1)
    truth = domain.sample(repeated, torch.Generator().manual_seed(0))
    true_samples = {s.name: float(s(truth, repeated).mean()) for s in scorers}
    embedders = {
        "diversity": TokenHistogramEmbedder(domain.vocab_size),
        "latent_diversity": LatentModeEmbedder(domain),
    }
    measurement = Measurement(domain.prompts, domain.num_frames, scorers, embedders, 16, range(args.seeds))
    results = []
    for name, config, family in configs:
        results.append(evaluate_candidate(name, base, config, measurement, family=family))
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print(f"all {domain.num_prompts} prompts x 16 samples x {args.seeds} seeds")
    print(format_table(results))
    atomic_save_json(
        {
            "command": "python examples/guidance_vs_temperature.py " + " ".join(sys.argv[1:]),
            "domain": "SyntheticMusic()",
            "base": args.ckpt,
            "protocol": {
                "prompts": "all",
                "num_prompts": domain.num_prompts,
                "samples": 16,
                "seeds": args.seeds,
            },
            "chance": {"adherence": scorers[0].chance, "log_likelihood": scorers[1].chance},
            "true_samples": {**true_samples, "samples_per_prompt": 16, "seed": 0},
            "results": [r.as_dict() for r in results],
            "machine": describe_machine(),
        },
        Path(args.out),
    )
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
