"""Quickstart: the paper's recipe in miniature, on the built-in synthetic domain (no downloads).

    python examples/quickstart.py        # from the repository root; everything goes to runs/

Stages (each an ordinary CLI command; a stage whose output exists is skipped, so a rerun resumes):

1. ``cfgrl fit --config examples/configs/pretrain.yaml``        the base model (condition dropout)
2. ``cfgrl fit --config examples/configs/embedder.yaml``        the diversity reward's contrastive embedder
3. ``cfgrl fit --config examples/configs/judge.yaml``           a prompt classifier (adherence judge)
4. ``cfgrl fit --config examples/configs/distill_beta0.yaml``   quality model: CFG distillation, beta = 0,
   until its KL to the CFG teacher stops improving
5. ``cfgrl fit --config examples/configs/distill_beta15.yaml``  diversity model: from the quality model,
   beta adapted to keep 75 % of its gain (a quality budget), 400 steps
6. ``cfgrl fit --config examples/configs/distill_placebo.yaml`` placebo: the same, with shuffled rewards
7. ``cfgrl merge --quality ... --diversity ... --lambdas 0,0.25,0.5,0.75,1 --out runs/merged``
8. ``cfgrl evaluate --config examples/configs/evaluate.yaml``   table, claims, plot -> runs/eval
   (5 evaluation seeds; the best temperature/top-p point is chosen on 3 separate selection seeds)

The embedder and the quality model stop by measurement (``PlateauStopping``: held-out triplet accuracy
at its target or flat, the distillation KL flat; ``max_steps`` is a cap). Stages whose ``last.ckpt``
stopped or reached the cap are skipped, so a rerun only re-evaluates; a stage killed midway resumes
from its periodic ``last.ckpt`` (``--ckpt_path last``).
Delete a ``runs/<stage>`` folder to redo that stage.

``--results PATH`` also saves the evaluation's ``results.json`` (table, claims, machine, commit) with the
stage times to PATH: the docs' quickstart page is generated from ``benchmarks/results/quickstart.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from lightning_cfgrl.cli.main import main as cfgrl
from lightning_cfgrl.io.checkpoints import atomic_save_json, load_checkpoint
from lightning_cfgrl.training.stopping import stopped_step

CONFIGS = Path(__file__).parent / "configs"
TRAINING = ["pretrain", "embedder", "judge", "distill_beta0", "distill_beta15", "distill_placebo"]
OUTPUT = {"pretrain": "base"}  # run directory of a config, when it differs from the config's name


STAGE_SECONDS: dict[str, float | None] = {}


def stage(name: str, done: Path | None, argv: list[str]) -> None:
    if done is not None and done.exists():
        print(f"[{name}] cached ({done})")
        STAGE_SECONDS[name] = None
        return
    print(f"[{name}] cfgrl {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = cfgrl(argv)
    if code:
        raise SystemExit(f"[{name}] failed with exit code {code}")
    STAGE_SECONDS[name] = round(time.perf_counter() - start, 1)
    print(f"[{name}] done in {STAGE_SECONDS[name]:.0f} s", flush=True)


def _max_steps(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["trainer"]["max_steps"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, help="also save the evaluation and stage times as this JSON")
    args = parser.parse_args()
    total = time.perf_counter()
    for config in TRAINING:
        path = CONFIGS / f"{config}.yaml"
        last = Path("runs", OUTPUT.get(config, config), "checkpoints", "last.ckpt")
        argv = ["fit", "--config", str(path)]
        if last.exists():
            saved = load_checkpoint(last, mmap=True)
            step, max_steps = saved["global_step"], _max_steps(path)
            # finished: stopped by measurement (PlateauStopping) or at the cap; else killed midway
            if stopped_step(saved) is None and step < max_steps:  # continue from the periodic checkpoint
                print(f"[{config}] resuming from step {step} of {max_steps}", flush=True)
                stage(config, None, [*argv, "--ckpt_path", "last"])
                continue
        stage(config, last, argv)
    stage(
        "merge",
        Path("runs/merged/merged_lambda=1.00.json"),
        [
            "merge",
            "--quality",
            "runs/distill_beta0/checkpoints/last.ckpt",
            "--diversity",
            "runs/distill_beta15/checkpoints/last.ckpt",
            "--lambdas",
            "0,0.25,0.5,0.75,1",
            "--out",
            "runs/merged",
        ],
    )
    # every domain-specific part (prompts, scorers, embedders, candidates) is named in the YAML preset
    stage("evaluate", None, ["evaluate", "--config", str(CONFIGS / "evaluate.yaml")])
    if args.results is not None:
        document = json.loads(Path("runs/eval/results.json").read_text())
        document["command"] = "python examples/quickstart.py --results " + str(args.results)
        document["stage_seconds"] = STAGE_SECONDS  # None: a cached stage, not run this time
        atomic_save_json(document, args.results)
        print(f"[results] {args.results}")
    print(
        f"\nquickstart finished in {time.perf_counter() - total:.0f} s; plot: runs/eval/quality_diversity.png; "
        "TensorBoard: tensorboard --logdir runs"
    )


if __name__ == "__main__":
    main()
