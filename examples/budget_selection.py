"""Choose the diversity run's quality budget on domain A's TRAINING prompts (the quickstart domain).

    python examples/budget_selection.py train --fraction 0.25 --seed 0   # budget run + its placebo
    python examples/budget_selection.py evaluate                         # -> benchmarks/results/budget_selection_music.json

Each candidate is the shipped ``examples/configs/distill_beta15.yaml`` (and its placebo) with only
the budget's ``relative_to: gain`` / ``max_increase`` and the seed changed; it starts from the domain's
quality model (``runs/distill_beta0``, from the quickstart or ``distill_beta0.yaml``) and distils towards
``runs/base``'s CFG. The evaluation uses the data module's TRAIN prompts and the package's selection seeds
(disjoint from the evaluation seeds); the held-out prompts and evaluation seeds are left for the
confirmation (``examples/recurrent/confirm.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_runner import RUNS, budget_readout, last, run_fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs"

OUT = Path("benchmarks/results/budget_selection_music.json")
LOG = RUNS / "selection_configs" / "runs.json"
# what was chosen from these runs, and why (the trajectories are in each run's TensorBoard log)
DECISION = (
    "relative_to=gain, max_increase=0.25, controller=proportional, 400 steps without the diversity plateau "
    "stop. The dual controller (sel_gain0.25_dual_plateau) drove beta to beta_max=100 by step 80 before the "
    "smoothed KL responded, overshot the KL target 2.5x (0.123 vs 0.050) and was stopped at step 225 by the "
    "group-diversity plateau mid-transient (bigram diversity +0.010 over beta=0); its placebo was not run. "
    "The proportional controller held the smoothed KL at 0.040-0.067 around its 0.050 target with beta "
    "8-18 and beat its placebo on the train prompts (two training seeds)."
)


def _last(name: str) -> str:
    return str(last(name))


def _candidate(kind: str, fraction: float, seed: int, controller: str, steps: int) -> tuple[str, dict]:
    """The shipped budget config with the gain budget ``fraction`` and ``controller``; ``steps`` > 0: a fixed
    length (no diversity plateau), 0: the config's own stopping."""
    config = yaml.safe_load((CONFIGS / f"distill_{kind}.yaml").read_text())
    name = f"sel_gain{fraction:g}_{controller}_{steps or 'plateau'}_s{seed}_{kind}"
    if steps:
        config["trainer"]["max_steps"] = steps
        config["trainer"]["callbacks"] = [
            c for c in config["trainer"]["callbacks"] if not c["class_path"].endswith("PlateauStopping")
        ]
    config["seed_everything"] = seed
    config["model"]["init_args"]["seed"] = seed
    config["trainer"]["logger"]["init_args"]["name"] = name
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("DiversityRewardCallback"):
            budget = callback["init_args"]["quality_budget"]
            budget.update(relative=True, relative_to="gain", max_increase=fraction, controller=controller)
            callback["init_args"]["seed"] = seed
    return name, config


def train(fraction: float, seed: int, controller: str, steps: int) -> None:
    from lightning_cfgrl.training.stopping import stopped_step

    for kind in ("beta15", "placebo"):
        name, config = _candidate(kind, fraction, seed, controller, steps)
        path = RUNS / "selection_configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        _, wall, cpu = run_fit(["--config", str(path)], name)
        saved = torch.load(_last(name), map_location="cpu", weights_only=True)
        budget = budget_readout(saved)
        assert budget, f"{name}: no quality budget in its DiversityRewardCallback state"
        info = {
            "fraction": fraction,
            "controller": controller,
            "fixed_steps": steps or None,
            "candidate": name.rsplit("_s", 1)[0],
            "seed": seed,
            "kind": kind,
            "steps": int(saved["global_step"]),
            "stopped_step": stopped_step(saved),
            "wall_s": wall,
            "cpu_s": cpu,
        } | budget
        print(f"[{name}] {info}", flush=True)
        runs = json.loads(LOG.read_text()) if LOG.exists() else {}
        runs[name] = info
        LOG.write_text(json.dumps(runs, indent=2))


def evaluate(num_samples: int, num_seeds: int) -> None:
    from lightning_cfgrl.core.sampling import SamplingConfig
    from lightning_cfgrl.embedders import ContrastiveTokenEmbedder, TokenHistogramEmbedder
    from lightning_cfgrl.eval.candidates import Measurement, evaluate_candidate
    from lightning_cfgrl.eval.machine import describe_machine
    from lightning_cfgrl.eval.protocol import selection_seeds
    from lightning_cfgrl.eval.stats import mean_se
    from lightning_cfgrl.experiments import PromptAdherence, SyntheticPromptDataModule
    from lightning_cfgrl.io import load_generator
    from lightning_cfgrl.training.prompts import PromptSplit

    prompts = SyntheticPromptDataModule(
        split=PromptSplit(heldout_fraction=0.25)
    ).train_prompts  # TRAIN prompts only
    scorer = PromptAdherence()
    embedders = {
        "diversity": TokenHistogramEmbedder(vocab_size=32, ngram=2),
        "reward_diversity": ContrastiveTokenEmbedder(checkpoint=_last("embedder")).eval(),
    }
    seeds = selection_seeds(num_seeds)
    measurement = Measurement(prompts, 32, [scorer], embedders, num_samples, seeds)

    def run(name: str, path: str, guidance: float = 1.0) -> dict:
        result = evaluate_candidate(
            name, load_generator(path), SamplingConfig(guidance_scale=guidance), measurement
        )
        return {m: result.metrics[m][0] for m in ("adherence", "diversity", "reward_diversity")}

    table = {
        "base": run("base", _last("base")),
        "cfg3": run("cfg3", _last("base"), 3.0),
        "beta0": run("beta0", _last("distill_beta0")),
    }
    if Path(_last("distill_beta15")).exists():  # the fixed beta = 15 of the quickstart, for comparison
        table["fixed_beta15"] = run("fixed_beta15", _last("distill_beta15"))
        table["fixed_placebo"] = run("fixed_placebo", _last("distill_placebo"))
    runs = json.loads(LOG.read_text())
    for name in runs:
        table[name] = run(name, _last(name))
    plain, cfg = table["base"]["adherence"], table["cfg3"]["adherence"]
    for row in table.values():
        row["fraction_of_cfg_gain_over_base"] = (row["adherence"] - plain) / (cfg - plain)

    def stat(values: list[float]) -> tuple[float, float]:
        return mean_se(values) if len(values) > 1 else (values[0], float("nan"))

    candidates: dict[str, dict] = {}
    for key in sorted({info["candidate"] for info in runs.values()}):
        seeds_run = sorted({i["seed"] for i in runs.values() if i["candidate"] == key})
        pairs = [(f"{key}_s{s}_beta15", f"{key}_s{s}_placebo") for s in seeds_run]
        pairs = [(a, b) for a, b in pairs if a in table and b in table]
        if not pairs:
            continue
        candidates[key] = {
            "training_seeds": len(pairs),
            "diversity_minus_placebo": stat(
                [table[a]["diversity"] - table[b]["diversity"] for a, b in pairs]
            ),
            "reward_diversity_minus_placebo": stat(
                [table[a]["reward_diversity"] - table[b]["reward_diversity"] for a, b in pairs]
            ),
            "diversity_minus_cfg3": stat(
                [table[a]["diversity"] - table["cfg3"]["diversity"] for a, _ in pairs]
            ),
            "fraction_of_cfg_gain_over_base": stat(
                [table[a]["fraction_of_cfg_gain_over_base"] for a, _ in pairs]
            ),
            "share_of_beta0_gain_kept": stat(
                [(table[a]["adherence"] - plain) / (table["beta0"]["adherence"] - plain) for a, _ in pairs]
            ),
            "budget_keeps": 1.0 - runs[pairs[0][0]]["fraction"],
        }
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(
        subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    )
    result = {
        "what": "quality-budget choice for the diversity run, domain A (synthetic music), TRAIN prompts only",
        "commit": commit,
        "dirty": dirty,
        "machine": describe_machine(),
        "config": {
            "candidates": "examples/configs/budget/distill_{beta15,placebo}.yaml with quality_budget "
            "relative_to: gain, max_increase: <fraction>",
            "eval_prompts": "train split (SyntheticPromptDataModule(split=PromptSplit(heldout_fraction=0.25)).train_prompts)",
            "selection_seeds": seeds,
            "samples_per_prompt": num_samples,
        },
        "chance_adherence": scorer.chance,
        "table": table,
        "runs": runs,
        "candidates": candidates,
        "decision": DECISION,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(candidates, indent=2))
    print(f"saved {OUT}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["train", "evaluate"])
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--controller", choices=["dual", "proportional"], default="dual")
    parser.add_argument(
        "--steps", type=int, default=0, help="fixed length without the plateau stop (0: the config's)"
    )
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--selection-seeds", type=int, default=3)
    args = parser.parse_args()
    if args.stage == "train":
        train(args.fraction, args.seed, args.controller, args.steps)
    else:
        evaluate(args.samples, args.selection_seeds)


if __name__ == "__main__":
    main()
