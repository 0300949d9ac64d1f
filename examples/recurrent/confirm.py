"""Confirm the shipped recipe on a model family it was not chosen on: the FiLM GRU of ``film_gru.py``.

    python examples/recurrent/confirm.py prepare          # the GRU base (pretrain.yaml, model swapped)
    python examples/recurrent/confirm.py train --seed 0   # distill_beta0 -> distill_beta15 + placebo
    python examples/recurrent/confirm.py evaluate         # held-out prompts -> benchmarks/results/recurrent_film_gru.json

Each stage runs ``cfgrl fit`` on a copy of a shipped YAML (``examples/configs/``) in which only the
generator, the checkpoints it reads, the run's name and the seed differ: nothing is tuned for this model.
The reward embedder is the domain's (``runs/embedder``, from the quickstart or ``embedder.yaml``). The
evaluation uses the held-out prompts of domain A (``SyntheticPromptDataModule(split=PromptSplit(heldout_fraction=0.25))``),
the package's evaluation seeds, the exact adherence ``log p*(prompt | sample)`` and the diversity of an
independent (bigram-histogram) embedder beside the reward embedder's own. Training runs are the unit of
the statistics (mean and standard error over training seeds).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fit_runner import RUNS, budget_readout, last, run_fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "configs"

OUT = Path("benchmarks/results/recurrent_film_gru.json")
GENERATOR = {
    "class_path": "examples.recurrent.film_gru.FilmGRU",
    "init_args": {
        "num_codebooks": 2,
        "vocab_size": 32,
        "condition_sizes": [4, 4, 3],
        "dim": 96,
        "num_layers": 2,
    },
}
# the shipped stages: the diversity and placebo runs hold the gain budget (keep 75 % of the quality gain)
STAGES = {"beta0": "distill_beta0", "beta15": "distill_beta15", "placebo": "distill_placebo"}


def _last(name: str) -> str:
    return str(last(name))


def _swap(config: dict, name: str, seed: int, init: str, teacher: str | None) -> dict:
    """The shipped config with only the model (and the files it reads), the run name and the seed swapped."""
    config = copy.deepcopy(config)
    config["seed_everything"] = seed
    model = config["model"]["init_args"]
    model["generator"] = copy.deepcopy(GENERATOR)
    model["init_checkpoint"] = init
    if "seed" in model or config["model"]["class_path"].endswith("CFGRLModule"):
        model["seed"] = seed
    config["trainer"]["logger"]["init_args"]["name"] = name
    for callback in config["trainer"]["callbacks"]:
        args = callback.setdefault("init_args", {})
        if callback["class_path"].endswith("CFGDistillCallback") and teacher is not None:
            args["teacher"] = {**args.get("teacher", {}), "checkpoint": teacher}
        if callback["class_path"].endswith("DiversityRewardCallback"):
            args["gradient"] = {**args.get("gradient", {}), "seed": seed}
    return config


def _fit(config: dict, name: str) -> dict:
    """``cfgrl fit`` on ``config`` (written to runs/recurrent_configs/<name>.yaml); returns its timing."""
    path = RUNS / "recurrent_configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    from lightning_cfgrl.training.stopping import stopped_step

    if Path(_last(name)).exists():  # a finished run (stopped, or at its cap) is reused
        saved = torch.load(_last(name), map_location="cpu", weights_only=True)
        if stopped_step(saved) is not None or saved["global_step"] >= config["trainer"]["max_steps"]:
            print(f"[{name}] cached", flush=True)
            return {"steps": int(saved["global_step"]), "stopped_step": stopped_step(saved), "cached": True}
    print(
        f"[{name}] lightning_cfgrl.cli.main fit --config {path} --trainer.enable_progress_bar=false",
        flush=True,
    )
    result, wall, cpu_s = run_fit(["--config", str(path)], name)
    tail = [line for line in result.stderr.splitlines() if "[PlateauStopping]" in line or "Error" in line]
    print("\n".join(tail[-3:]), flush=True)
    saved = torch.load(_last(name), map_location="cpu", weights_only=True)
    info = {
        "steps": int(saved["global_step"]),
        "stopped_step": stopped_step(saved),
        "wall_s": wall,
        "cpu_s": cpu_s,
    } | budget_readout(saved)
    print(f"[{name}] {info}", flush=True)
    return info


def prepare() -> None:
    config = yaml.safe_load((CONFIGS / "pretrain.yaml").read_text())
    config["model"]["init_args"]["generator"] = copy.deepcopy(GENERATOR)
    config["trainer"]["logger"]["init_args"]["name"] = "gru_base"
    config["trainer"]["callbacks"] = [
        c for c in config["trainer"]["callbacks"] if "AudioSample" not in c["class_path"]
    ]
    _record("prepare", _fit(config, "gru_base"))


def train(seed: int) -> None:
    base = _last("gru_base")
    shipped = {key: yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text()) for key, stage in STAGES.items()}
    beta0 = f"gru_s{seed}_beta0"
    _record(f"s{seed}/beta0", _fit(_swap(shipped["beta0"], beta0, seed, base, None), beta0))
    for key in ("beta15", "placebo"):
        name = f"gru_s{seed}_{key}"
        _record(f"s{seed}/{key}", _fit(_swap(shipped[key], name, seed, _last(beta0), base), name))


def _record(key: str, info: dict) -> None:
    log = RUNS / "recurrent_configs" / "runs.json"
    runs = json.loads(log.read_text()) if log.exists() else {}
    if info.get("cached") and key in runs:
        return  # keep the timing of the run that trained it
    runs[key] = info
    log.write_text(json.dumps(runs, indent=2))


def evaluate(num_samples: int, num_seeds: int) -> None:
    import examples.recurrent.film_gru  # noqa: F401  (a checkpoint's spec may only name imported modules)
    from lightning_cfgrl.core.sampling import SamplingConfig
    from lightning_cfgrl.embedders import ContrastiveTokenEmbedder, TokenHistogramEmbedder
    from lightning_cfgrl.eval.candidates import Measurement, evaluate_candidate
    from lightning_cfgrl.eval.machine import describe_machine
    from lightning_cfgrl.eval.protocol import evaluation_seeds
    from lightning_cfgrl.eval.stats import mean_se
    from lightning_cfgrl.experiments import PromptAdherence, SyntheticPromptDataModule
    from lightning_cfgrl.io import load_generator
    from lightning_cfgrl.training.prompts import PromptSplit

    prompts = SyntheticPromptDataModule(split=PromptSplit(heldout_fraction=0.25)).heldout_prompts
    scorer = PromptAdherence()
    embedders = {
        "diversity": TokenHistogramEmbedder(vocab_size=32, ngram=2),
        "reward_diversity": ContrastiveTokenEmbedder(checkpoint=_last("embedder")).eval(),
    }
    seeds = evaluation_seeds(num_seeds)
    measurement = Measurement(prompts, 32, [scorer], embedders, num_samples, seeds)

    def run(name: str, path: str, guidance: float = 1.0) -> dict:
        result = evaluate_candidate(
            name, load_generator(path), SamplingConfig(guidance_scale=guidance), measurement
        )
        return {
            metric: result.metrics[metric][0] for metric in ("adherence", "diversity", "reward_diversity")
        }

    base = _last("gru_base")
    table = {"base": run("base", base), "cfg3": run("cfg3", base, 3.0)}
    runs = json.loads((RUNS / "recurrent_configs" / "runs.json").read_text())
    seeds_done = sorted({int(k[1:].split("/")[0]) for k in runs if k.startswith("s")})
    per_seed: dict[str, dict[str, list[float]]] = {key: {} for key in STAGES}
    for seed in seeds_done:
        for key in STAGES:
            name = f"gru_s{seed}_{key}"
            if f"s{seed}/{key}" not in runs:
                continue
            for metric, value in run(name, _last(name)).items():
                per_seed[key].setdefault(metric, []).append(value)
    chance, cfg, plain = scorer.chance, table["cfg3"]["adherence"], table["base"]["adherence"]
    summary: dict[str, dict] = {}
    for key, metrics in per_seed.items():
        if not metrics:
            continue
        summary[key] = {m: mean_se(v) if len(v) > 1 else (v[0], float("nan")) for m, v in metrics.items()}
        fraction = [(a - chance) / (cfg - chance) for a in metrics["adherence"]]
        gain = [(a - plain) / (cfg - plain) for a in metrics["adherence"]]
        summary[key]["fraction_of_cfg_gain_over_chance"] = (
            mean_se(fraction) if len(fraction) > 1 else (fraction[0], float("nan"))
        )
        summary[key]["fraction_of_cfg_gain_over_base"] = (
            mean_se(gain) if len(gain) > 1 else (gain[0], float("nan"))
        )
    comparisons: dict[str, tuple[float, float]] = {}  # paired by training seed, mean and SE
    for versus in ("placebo", "beta0"):
        if per_seed["beta15"] and per_seed[versus]:
            n = min(len(per_seed["beta15"]["diversity"]), len(per_seed[versus]["diversity"]))
            for metric in ("diversity", "reward_diversity"):
                diffs = [per_seed["beta15"][metric][i] - per_seed[versus][metric][i] for i in range(n)]
                comparisons[f"beta15_minus_{versus}_{metric}"] = (
                    mean_se(diffs) if n > 1 else (diffs[0], float("nan"))
                )
    for key in ("beta15", "placebo"):
        if per_seed[key]:  # against the fixed CFG g = 3 reference (the same numbers for every seed)
            diffs = [d - table["cfg3"]["diversity"] for d in per_seed[key]["diversity"]]
            comparisons[f"{key}_minus_cfg3_diversity"] = (
                mean_se(diffs) if len(diffs) > 1 else (diffs[0], float("nan"))
            )
    if per_seed["beta15"] and per_seed["beta0"]:
        # the share of its own quality model's gain over the base that each diversity run kept (paired by
        # seed): the adherence side of a budget stated as a fraction of the gain
        kept = [
            (a - plain) / (q - plain)
            for a, q in zip(per_seed["beta15"]["adherence"], per_seed["beta0"]["adherence"], strict=False)
        ]
        comparisons["beta15_share_of_beta0_gain_kept"] = (
            mean_se(kept) if len(kept) > 1 else (kept[0], float("nan"))
        )
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(
        subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    )
    result = {
        "what": "shipped YAMLs with only the model swapped to a FiLM GRU (examples/recurrent/film_gru.py), domain A",
        "commit": commit,
        "dirty": dirty,
        "machine": describe_machine(),
        "config": {
            "generator": GENERATOR,
            "configs": [f"examples/configs/{s}.yaml" for s in ("pretrain", *STAGES.values())],
            "eval_prompts": "held-out (heldout_fraction=0.25)",
            "eval_seeds": seeds,
            "samples_per_prompt": num_samples,
            "training_seeds": seeds_done,
            "diversity_budget": _budget_of(CONFIGS / f"{STAGES['beta15']}.yaml"),
        },
        "chance_adherence": chance,
        "references": table,
        "runs": runs,
        "summary": summary,
        "comparisons": comparisons,
        "per_seed": per_seed,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"references": table, "summary": summary, "comparisons": comparisons}, indent=2))
    print(f"saved {OUT}")


def _budget_of(path: Path) -> dict:
    """The diversity run's quality budget and length, as the shipped YAML states them."""
    config = yaml.safe_load(path.read_text())
    callback = next(
        c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("DiversityRewardCallback")
    )
    return {
        "quality_budget": callback["init_args"].get("quality_budget"),
        "max_steps": config["trainer"]["max_steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["prepare", "train", "evaluate"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--eval-seeds", type=int, default=5)
    args = parser.parse_args()
    if args.stage == "prepare":
        prepare()
    elif args.stage == "train":
        train(args.seed)
    else:
        evaluate(args.samples, args.eval_seeds)


if __name__ == "__main__":
    main()
