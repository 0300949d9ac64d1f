"""Choose a steerable-student variant on the TRAINING prompts, never the evaluation's held-out prompts or seeds.

    python examples/steerable_select.py --base runs/base/checkpoints/last.ckpt \\
        --student input600=runs/steerable/checkpoints/last.ckpt --student film1200=... --out select.json

For each control g (default 1.5, 2, 3, 5) it samples the base with CFG at g (2 passes per token) and each
candidate student at control g and diversity weight 0 (1 pass) on the domain's training prompts (the
train split of the training configs' ``SyntheticPromptDataModule``), with the protocol's *selection*
seeds (:func:`lightning_cfgrl.eval.protocol.selection_seeds`, disjoint from the evaluation seeds), and
reports each student's exact adherence (``PromptAdherence``) as a fraction of CFG-at-g's gain over chance,
with the bigram diversity beside it. The variant chosen here is then evaluated, unchanged, by
``examples/steerable_study.py`` on the held-out prompts and the evaluation seeds.

The held-out evaluation asks how the student does on prompts it never trained on. To measure that
without touching the held-out prompts, ``--prompts inner`` scores on an *inner* split of the training
prompts (a quarter of them, seed 1) that candidates trained with :class:`InnerSplitPromptDataModule` as
their datamodule never saw (``data: {class_path: examples.steerable_select.InnerSplitPromptDataModule}``
with the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from lightning_cfgrl.core.sampling import SamplingConfig
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.eval.candidates import Measurement, evaluate_candidate
from lightning_cfgrl.eval.protocol import selection_seeds
from lightning_cfgrl.eval.stats import mean_se
from lightning_cfgrl.experimental import ControlFiLMTransformer
from lightning_cfgrl.experiments import PromptAdherence, SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import atomic_save_json
from lightning_cfgrl.io.generators import load_generator
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.prompts import split_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_G = [1.5, 2.0, 3.0, 5.0]
INNER_FRACTION, INNER_SEED = 0.25, 1


class ControlsOnly:
    """Freezes the base parameters of the model class it is mixed into, so training moves only the
    control path (``control_emb``, and ``control_film`` of the FiLM model) and cannot learn anything
    prompt-specific."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name.startswith(("control_emb.", "control_film.")))


class ControlsOnlyTransformer(ControlsOnly, AudioTokenTransformer):
    """A selection candidate: the control-aware reference model, base frozen."""


class ControlsOnlyFiLMTransformer(ControlsOnly, ControlFiLMTransformer):
    """A selection candidate: the experimental model with control FiLM in every layer, base frozen."""


class InnerSplitPromptDataModule(SyntheticPromptDataModule):
    """The training prompts of :class:`SyntheticPromptDataModule` (same arguments) split once more: it
    trains on three quarters of them and validates on the rest (the inner split); the held-out prompts
    are in neither."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.train_prompts, self.heldout_prompts = split_rows(self.train_prompts, INNER_FRACTION, INNER_SEED)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domain", default="lightning_cfgrl.experiments.SyntheticMusic", help="domain class")
    parser.add_argument("--base", required=True, help="the base checkpoint (CFG reference)")
    parser.add_argument("--student", action="append", required=True, help="NAME=CHECKPOINT, repeatable")
    parser.add_argument("--guidance", type=float, nargs="+", default=DEFAULT_G, help="control values g")
    parser.add_argument("--num-samples", type=int, default=8, help="samples per prompt and seed")
    parser.add_argument("--num-seeds", type=int, default=2, help="selection seeds (never evaluation seeds)")
    parser.add_argument(
        "--prompts",
        choices=("train", "inner"),
        default="train",
        help="all training prompts, or the inner split of them that InnerSplitPromptDataModule holds out",
    )
    parser.add_argument("--out", default=None, help="JSON of the table")
    args = parser.parse_args()
    # candidates built from this file's classes record them as examples.steerable_select.*: a spec may only
    # name an imported module, so import this file under that name (the repository root on sys.path)
    sys.path.insert(0, str(ROOT))
    importlib.import_module("examples.steerable_select")

    module_name, _, class_name = args.domain.rpartition(".")
    domain = getattr(importlib.import_module(module_name), class_name)()
    data = (InnerSplitPromptDataModule if args.prompts == "inner" else SyntheticPromptDataModule)(domain)
    prompts = data.heldout_prompts if args.prompts == "inner" else data.train_prompts  # never the held-out
    seeds = selection_seeds(args.num_seeds)
    scorer = PromptAdherence(domain)
    embedder = TokenHistogramEmbedder(domain.vocab_size)
    chance = scorer.chance
    measurement = Measurement(prompts, domain.num_frames, [scorer], embedder, args.num_samples, seeds)

    def run(name, generator, config, controls=None) -> dict:
        result = evaluate_candidate(name, generator, config, measurement, controls=controls)
        return {k: result.per_seed[k] for k in ("adherence", "diversity")}

    start = time.perf_counter()
    base = load_generator(args.base)
    cfg = {g: run(f"cfg g={g:g}", base, SamplingConfig(guidance_scale=g)) for g in args.guidance}
    students = dict(item.split("=", 1) for item in args.student)
    table: dict[str, dict[str, dict]] = {}
    for name, path in students.items():
        student = load_generator(path)
        table[name] = {}
        for g in args.guidance:
            r = run(name, student, SamplingConfig(), {"guidance_scale": g, "diversity_weight": 0.0})
            # per seed, paired with CFG on the same seed
            fractions = [
                (s - chance) / (c - chance) for s, c in zip(r["adherence"], cfg[g]["adherence"], strict=True)
            ]
            table[name][f"{g:g}"] = {
                "fraction": sum(fractions) / len(fractions),
                "fraction_se": mean_se(fractions)[1],
                "adherence": sum(r["adherence"]) / len(seeds),
                "diversity": sum(r["diversity"]) / len(seeds),
            }

    gs = [f"{g:g}" for g in args.guidance]
    print(
        f"{'inner split of the ' if args.prompts == 'inner' else ''}training prompts: {len(prompts)} x {args.num_samples} samples x seeds {seeds}; "
        f"chance {chance:.3f}; {time.perf_counter() - start:.0f} s"
    )
    print("| g | CFG adherence | CFG diversity |\n|---|---|---|")
    for g in args.guidance:
        a, d = (sum(cfg[g][k]) / len(seeds) for k in ("adherence", "diversity"))
        print(f"| {g:g} | {a:.3f} | {d:.3f} |")
    print("\nfraction of CFG-at-g's adherence gain over chance ± SE over seeds (bigram diversity):\n")
    print("| student | " + " | ".join(f"g = {g}" for g in gs) + " | min |")
    print("|---" * (len(gs) + 2) + "|")
    for name, row in table.items():
        cells = [
            f"{row[g]['fraction']:.0%} ± {row[g]['fraction_se']:.0%} ({row[g]['diversity']:.3f})" for g in gs
        ]
        print(f"| {name} | " + " | ".join(cells) + f" | {min(row[g]['fraction'] for g in gs):.0%} |")
    if args.out:
        document = {
            "domain": args.domain,
            "prompts": "inner split of the train split" if args.prompts == "inner" else "train split",
            "num_prompts": len(prompts),
            "num_samples": args.num_samples,
            "seeds": seeds,
            "chance": chance,
            "cfg": {f"{g:g}": v for g, v in cfg.items()},
            "students": {name: {"checkpoint": students[name], "per_g": row} for name, row in table.items()},
        }
        atomic_save_json(document, args.out)


if __name__ == "__main__":
    main()
