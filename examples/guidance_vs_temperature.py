"""Why CFG is worth distilling on the built-in domain: sweep guidance and temperature on the base.

    python examples/guidance_vs_temperature.py [--ckpt runs/base/checkpoints/last.ckpt]

Needs the base from ``cfgrl fit --config examples/configs/pretrain.yaml`` (or the quickstart).
"""

from __future__ import annotations

import argparse

from lightning_cfgrl import SamplingConfig
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.eval.candidates import evaluate_candidate, format_table
from lightning_cfgrl.experiments import LogLikelihood, PromptAdherence, SyntheticMusic
from lightning_cfgrl.io.generators import load_generator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", default="runs/base/checkpoints/last.ckpt")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    base = load_generator(args.ckpt)
    domain = SyntheticMusic()
    configs = [(f"CFG g={g}", SamplingConfig(guidance_scale=g)) for g in (1, 1.5, 2, 3, 4, 5)]
    configs += [(f"temperature {t}", SamplingConfig(temperature=t)) for t in (0.8, 0.7, 0.6, 0.5, 0.4, 0.3)]
    configs += [(f"top-p {p}", SamplingConfig(top_p=p)) for p in (0.9, 0.8, 0.6)]
    scorers = [PromptAdherence(domain), LogLikelihood(domain)]
    results = [
        evaluate_candidate(
            name,
            base,
            domain.prompts,
            domain.num_frames,
            config,
            scorers,
            TokenHistogramEmbedder(domain.vocab_size),
            num_samples=16,
            seeds=range(args.seeds),
        )
        for name, config in configs
    ]
    print(f"all {domain.num_prompts} prompts x 16 samples x {args.seeds} seeds")
    print(format_table(results))


if __name__ == "__main__":
    main()
