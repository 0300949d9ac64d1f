"""The recipe study (issue 12): what makes CFG distillation and the diversity reward work, on both
built-in domains, with a protocol fixed before any result. A thin grid: every model is a ``cfgrl fit`` run
(``fit_runner.py``) of a shipped stage YAML (``examples/configs/``; domain B: ``examples/configs/hmm/``)
with a few edits (KEYS), and every number comes from ``lightning_cfgrl.eval``.

    python examples/recipe_study.py prepare --domain music      # base + reward embedder (their stages)
    python examples/recipe_study.py ablate --study distill      # domain A, training prompts only
    python examples/recipe_study.py ablate --study diversity
    python examples/recipe_study.py curve --domain music        # held-out prompts, every 25 steps
    python examples/recipe_study.py claims --domain music       # the final claims table
    python examples/recipe_study.py claims --domain hmm         # ... confirmed on domain B, unchanged
    python examples/recipe_study.py plot                        # docs/images/recipe_curve.png
    python examples/recipe_study.py --smoke claims              # toy sizes, in minutes, JSON under runs/

Protocol (fixed before any run; docs: Results, the recipe on two domains): settings are chosen on domain
A's TRAINING prompts (ABLATION_SEEDS, ABLATION_TRAIN_SEEDS), then run unchanged on domain B; claims are
measured on the HELD-OUT prompts (EVAL_SEEDS x TRAIN_SEEDS, the best temperature/top-p point chosen on
SELECTION_SEEDS), holding beyond 2 standard errors, with three diversity embedders (bigrams, the exact
latent mode, the reward's own) and the exact log-likelihood as naturalness. The claims measure the paper's
form (CLAIMS: 300 steps, the default schedule, a fixed beta = 15 from the base, no quality budget).

Provenance: the committed ``benchmarks/results/recipe_*.json`` were measured by the earlier, in-process
version of this script (``git show 17c0768:examples/recipe_study.py``), at the commits their
``machine.commit`` names (claims: 000253c for A, 3fa45c3 for B; ablations and curves: c2ed7c0, df06959,
a2c1747, 8d51ff0). At the same base, embedder, settings and seed, the students trained here are
bit-identical to that script's and score the same to the last digit (checked with ``--smoke`` on the
claims' models and the distill, diversity, custom and nested ablation rows). A full rerun differs where
the stages do: the base and embedder come from their YAMLs (the embedder stops by measurement, the old
script ran 400 fixed steps), and CPU seconds are the ``cfgrl fit`` process's (start-up included).
Results: ``benchmarks/results/recipe_*.json`` (``--smoke``: ``runs/recipe_study/smoke/``); runs:
``runs/recipe_<domain>_<label>_<config hash>`` (a finished run of the same config is reused).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import torch
import yaml

from lightning_cfgrl.core.sampling import SamplingConfig
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder, TokenHistogramEmbedder
from lightning_cfgrl.eval import (
    ClaimInputs,
    Measurement,
    check_claims,
    evaluate_candidate,
    format_claims,
    mean_se,
)
from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.eval.protocol import evaluation_seeds, selection_seeds
from lightning_cfgrl.eval.training_runs import pool_training_runs, training_run_claims
from lightning_cfgrl.experiments import (
    HMMMusic,
    LatentModeEmbedder,
    LogLikelihood,
    PromptAdherence,
    SyntheticMusic,
    SyntheticPromptDataModule,
)
from lightning_cfgrl.io import load_generator
from lightning_cfgrl.io.checkpoints import atomic_save_json
from lightning_cfgrl.merging.streaming import merge_state_dicts
from lightning_cfgrl.training.configs import RolloutConfig
from lightning_cfgrl.training.prompts import PromptSplit, split_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_runner import RUNS, last, run_fit  # noqa: E402

# Every YAML key the study edits, in one table: ``a.b[Class].c`` is the callback whose class_path ends with
# Class, ``[+]`` appends one; the value DROP removes the key or callback (the class default applies).
DROP = object()
CB = "trainer.callbacks"
REWARD = f"{CB}[DiversityRewardCallback]"
KEYS = {
    "seed": "seed_everything",
    "module_seed": "model.init_args.seed",
    "shuffle_seed": "data.init_args.split.shuffle_seed",
    "data": "data.class_path",
    "reward_seed": f"{REWARD}.init_args.gradient.seed",
    "name": "trainer.logger.init_args.name",
    "steps": "trainer.max_steps",
    "no_validation": "trainer.limit_val_batches",
    "gradient_clip_val": "trainer.gradient_clip_val",
    "plateau": f"{CB}[PlateauStopping]",
    "add_callback": f"{CB}[+]",
    "num_train": "data.init_args.num_train",
    "num_val": "data.init_args.num_val",
    "prompts_per_batch": "data.init_args.batch_size",
    "init": "model.init_args.init_checkpoint",
    "group_size": "model.init_args.rollout.num_samples_per_prompt",
    "learning_rate": "model.init_args.optimization.learning_rate",
    "lr_warmup_steps": "model.init_args.optimization.lr_warmup_steps",
    "lr_decay": "model.init_args.optimization.lr_decay",
    "distill_class": f"{CB}[DistillCallback].class_path",
    "teacher": f"{CB}[DistillCallback].init_args.teacher.checkpoint",
    "reduction": f"{CB}[DistillCallback].init_args.reduction",
    "teacher_fraction": f"{CB}[DistillCallback].init_args.teacher_fraction",
    "reward": REWARD,
    "embedder": f"{REWARD}.init_args.embedder.init_args.checkpoint",
    "beta": f"{REWARD}.init_args.beta",
    "quality_budget": f"{REWARD}.init_args.quality_budget",
    "baseline": f"{REWARD}.init_args.gradient.baseline",
    "advantage_norm": f"{REWARD}.init_args.gradient.advantage_norm",
    "beta_scale": f"{REWARD}.init_args.gradient.beta_scale",
    "shuffle_rewards": f"{REWARD}.init_args.gradient.shuffle_rewards",
    "log_grad_norm": f"{REWARD}.init_args.gradient.log_norm",
}

# -- the protocol, fixed before any run ------------------------------------------------------------------
ABLATION_SEEDS = (100, 101, 102)  # sampling seeds of the ablations (training prompts only)
ABLATION_TRAIN_SEEDS = (10, 11)  # training seeds of the ablations (never the claims' seeds)
EVAL_SEEDS = tuple(evaluation_seeds(5))  # the package's fixed evaluation seeds
SELECTION_SEEDS = tuple(selection_seeds(3))  # choose the best temperature/top-p point on these only
TRAIN_SEEDS = (0, 1, 2)  # training seeds of the claims' models
EVAL_SAMPLES = 16  # samples per prompt
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 5.0)
TEMPERATURES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
TOP_PS = (0.9, 0.8, 0.6)
MERGE_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
REFERENCE_GUIDANCE = 3.0
FRACTION = 0.95
RESULTS = Path("benchmarks/results")
CONFIGS = Path(__file__).resolve().parent / "configs"
SMOKE = dict(steps=4, base_steps=20, train_seeds=(0, 1), seeds=2, samples=4, prompts=4)  # --smoke

# each domain: its stage YAMLs and sizes (B has no placebo stage: its beta = 15 stage, rewards shuffled)
DOMAINS = {
    "music": dict(configs=CONFIGS, truth=SyntheticMusic, frames=32, codebooks=2, vocab=32,
                  placebo=("distill_placebo", {})),
    "hmm": dict(configs=CONFIGS / "hmm", truth=HMMMusic, frames=64, codebooks=3, vocab=64,
                placebo=("distill_beta15", {"shuffle_rewards": True})),
}  # fmt: skip

# -- the grid --------------------------------------------------------------------------------------------
FIXED = dict(plateau=DROP, no_validation=0, log_grad_norm=False)  # every student: fixed length, no validation
CLAIMS = dict(steps=300, learning_rate=DROP, lr_decay=DROP, quality_budget=DROP)  # the paper's form
# the recipe of the first round (and of the failing run)
PAPER = dict(CLAIMS, steps=150, learning_rate=3e-4, lr_warmup_steps=0, lr_decay="constant",
             prompts_per_batch=8, group_size=2, reduction="sum",
             baseline="running_mean", advantage_norm="none", beta_scale="paper")  # fmt: skip
COSINE = dict(PAPER, learning_rate=1e-3, lr_warmup_steps=10, lr_decay="cosine")
MIX = dict(COSINE, distill_class="lightning_cfgrl.experimental.TeacherMixDistillCallback")
DISTILL_VARIANTS = {
    "paper (lr 3e-4 const, 150 steps, 8x2)": PAPER,
    "lr 1e-3 const": dict(PAPER, learning_rate=1e-3),
    "lr 1e-3, warm-up 10 + cosine": COSINE,
    "lr 2e-3, warm-up 10 + cosine": dict(COSINE, learning_rate=2e-3),
    "lr 1e-3, warm-up 10 + linear": dict(COSINE, lr_decay="linear"),
    "lr 1e-3 cosine, 300 steps": dict(COSINE, steps=300),
    "lr 1e-3 cosine, 16 prompts x 2": dict(COSINE, prompts_per_batch=16),
    "lr 1e-3 cosine, 4 prompts x 4": dict(COSINE, prompts_per_batch=4, group_size=4),
    "lr 1e-3 cosine, reduction mean": dict(COSINE, reduction="mean"),
    "lr 1e-3 cosine, clip 1.0": dict(COSINE, gradient_clip_val=1.0),
    "lr 1e-3 cosine, teacher fraction 0.25": dict(MIX, teacher_fraction=0.25),
    "lr 1e-3 cosine, teacher fraction 0.5": dict(MIX, teacher_fraction=0.5),
}
PAPER_SCALE = dict(reduction="sum", advantage_norm="none", beta_scale="paper")
PER_TOKEN = dict(reduction="mean", beta_scale="per_token")
G2 = dict(group_size=2, prompts_per_batch=8, baseline="running_mean")
G4 = dict(group_size=4, prompts_per_batch=4, baseline="other_pairs")
DIVERSITY_SETTINGS = {  # each at --beta, with its placebo, over the claims' distillation
    "G=2 running mean, paper scale (first round)": {**G2, **PAPER_SCALE},
    "G=4 other_pairs, paper scale": {**G4, **PAPER_SCALE},
    "G=2 running mean, per-token, batch norm": {**G2, **PER_TOKEN, "advantage_norm": "batch"},
    "G=4 other_pairs, per-token, batch norm": {**G4, **PER_TOKEN, "advantage_norm": "batch"},
    "G=4 other_pairs, per-token, group norm": {**G4, **PER_TOKEN, "advantage_norm": "group"},
}


def claim_models(domain: str, beta: float, extra: dict) -> dict[str, tuple[str, dict]]:
    """The claims' three models, ``{key: (stage, edits)}``: beta = 0 (distillation only), beta, placebo."""
    stage, edits = DOMAINS[domain]["placebo"]
    return {
        "beta=0": ("distill_beta0", {**CLAIMS, **extra, "reward": DROP}),
        f"beta={beta:g}": ("distill_beta15", {**CLAIMS, **extra, "beta": beta}),
        "placebo": (stage, {**CLAIMS, **extra, "beta": beta, **edits}),
    }


# -- training: cfgrl fit ---------------------------------------------------------------------------------
def edit(config: dict, path: str, value) -> None:
    """Set (DROP: remove) one key path of KEYS in a loaded YAML, creating missing parents."""
    *parents, key = path.replace("[", ".[").split(".")
    node = config
    for part in parents:
        if part.startswith("["):
            found = [c for c in node if c["class_path"].endswith(part[1:-1])]
            if not found and value is DROP:
                return
            if not found:
                raise KeyError(f"{path}: the config has no callback {part[1:-1]}")
            node = found[0]
        else:
            node = node.get(part, {}) if value is DROP else node.setdefault(part, {})
    if key == "[+]":
        node.append(value)
    elif key.startswith("["):
        node[:] = [c for c in node if value is not DROP or not c["class_path"].endswith(key[1:-1])]
    elif value is DROP:
        node.pop(key, None)
    else:
        node[key] = value


def fit(domain: str, stage: str, edits: dict, label: str) -> dict:
    """``cfgrl fit`` on the domain's stage YAML with ``edits`` ({KEYS name: value}), written to
    ``runs/recipe_study/configs/<run>.yaml``; a finished run of the same config is reused. Returns the
    run's record: name, checkpoint, steps, trained tokens per step, wall and CPU seconds."""
    config = yaml.safe_load((DOMAINS[domain]["configs"] / f"{stage}.yaml").read_text())
    for key, value in sorted(edits.items(), key=lambda kv: kv[1] is DROP and KEYS[kv[0]].endswith("]")):
        edit(config, KEYS[key], value)  # a callback is dropped after the edits of its arguments
    digest = hashlib.sha256(yaml.safe_dump(config).encode()).hexdigest()[:10]
    name = f"recipe_{domain}_{label}_{digest}"
    edit(config, KEYS["name"], name)
    path = RUNS / "recipe_study" / "configs" / f"{name}.yaml"
    if path.with_suffix(".json").exists():
        return json.loads(path.with_suffix(".json").read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"[{name}] cfgrl fit --config {path}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 1 thread, as the committed results
    trusted = ["--import", __file__] if config["data"]["class_path"] == NESTED else []  # NestedPrompts
    _, wall, cpu = run_fit([*trusted, "--config", str(path)], name, path.with_suffix(".log"))
    steps = int(torch.load(last(name), map_location="cpu", weights_only=True)["global_step"])
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    rows = data.get("batch_size", 0) * model.get("rollout", {}).get(
        "num_samples_per_prompt", RolloutConfig().num_samples_per_prompt
    )
    share = next((c["init_args"].get("teacher_fraction", 0) for c in config["trainer"]["callbacks"]
                  if "teacher_fraction" in c.get("init_args", {})), 0)  # fmt: skip
    rows += round(share * rows / (1 - share))  # the teacher-sampled rows the loss also trains on
    info = dict(run=name, checkpoint=str(last(name)), config=str(path), steps=steps, wall_seconds=wall,
                cpu_seconds=cpu, tokens_per_step=rows * DOMAINS[domain]["codebooks"] * DOMAINS[domain]["frames"])  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(info))
    return info


def prepare(domain: str, smoke: bool = False) -> tuple[dict, dict]:
    """The domain's base and reward embedder: its pretrain and embedder stages (shortened by --smoke)."""
    short = dict(steps=SMOKE["base_steps"], plateau=DROP, no_validation=0) if smoke else {}
    return fit(domain, "pretrain", short, "base"), fit(domain, "embedder", short, "embedder")


def train(domain: str, stage: str, edits: dict, label: str, seed: int, base: dict, embedder: dict) -> dict:
    """One student of ``stage`` + FIXED + ``edits`` from the base, towards the base's CFG, at ``seed``."""
    files = dict(init=base["checkpoint"], teacher=base["checkpoint"], embedder=embedder["checkpoint"])
    seeds = dict(seed=seed, module_seed=seed, shuffle_seed=seed, reward_seed=seed)
    return fit(domain, stage, {**FIXED, **files, **edits, **seeds}, f"{label}_s{seed}")


def recorded(edits: dict) -> dict:
    """Edits as the results JSON records them (a removed key or callback: "dropped")."""
    return {k: "dropped" if v is DROP else v for k, v in edits.items()}


def parse(item: str) -> tuple[str, object]:
    """``"key=value"`` (a KEYS name) -> (key, int / float / bool / None / DROP / str)."""
    key, _, text = item.partition("=")
    for cast in (int, float):
        try:
            return key, cast(text)
        except ValueError:
            pass
    return key, {"True": True, "False": False, "None": None, "dropped": DROP}.get(text, text)


class NestedPrompts(SyntheticPromptDataModule):
    """``ablate --nested``: the training prompts split again (27 / 9), to train on the first part and
    measure on prompts the students never saw without touching the held-out ones."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.train_prompts, self.heldout_prompts = split_rows(self.train_prompts, 0.25, seed=1)


NESTED = "recipe_study.NestedPrompts"


# -- evaluation: lightning_cfgrl.eval --------------------------------------------------------------------
class Protocol:
    """The domain's exact scorers and the three diversity embedders on fixed prompts and seeds."""

    def __init__(self, domain: str, split: str, seeds, smoke: bool = False, reward: str | None = None):
        spec = DOMAINS[domain]
        self.truth, self.frames = spec["truth"](), spec["frames"]
        data = SyntheticPromptDataModule(self.truth, split=PromptSplit(heldout_fraction=0.25))
        self.prompts = data.train_prompts if split == "train" else data.heldout_prompts
        if split == "nested_val":
            self.prompts = NestedPrompts(self.truth).heldout_prompts
        self.seeds, self.samples = list(seeds), EVAL_SAMPLES
        if smoke:
            self.prompts, self.seeds = self.prompts[: SMOKE["prompts"]], self.seeds[: SMOKE["seeds"]]
            self.samples = SMOKE["samples"]
        self.chance = math.log(1.0 / self.truth.num_prompts)
        self.scorers = [PromptAdherence(self.truth), LogLikelihood(self.truth)]
        self.embedders = {
            "diversity": TokenHistogramEmbedder(spec["vocab"]),
            "latent_diversity": LatentModeEmbedder(self.truth),
        }
        if reward is not None:
            self.embedders["reward_diversity"] = ContrastiveTokenEmbedder(checkpoint=reward).eval()

    def __call__(self, name, generator, config=None, family="", seeds=None):
        """``evaluate_candidate`` of a generator or a checkpoint's, unguided by default."""
        generator = load_generator(generator) if isinstance(generator, str) else generator
        config = config or SamplingConfig()
        measurement = Measurement(
            self.prompts, self.frames, self.scorers, self.embedders, self.samples, seeds or self.seeds
        )
        return evaluate_candidate(name, generator, config, measurement, family=family)

    def true_process(self) -> dict:
        """The domain's own samples scored like a candidate: the reference levels."""
        per_seed: dict[str, list[float]] = {}
        repeated = self.prompts.repeat_interleave(self.samples, 0)
        for seed in self.seeds:
            frames = self.truth.sample(repeated, torch.Generator().manual_seed(int(seed)))
            for scorer in self.scorers:
                per_seed.setdefault(scorer.name, []).append(float(scorer(frames, repeated).mean()))
            for metric in ("diversity", "latent_diversity"):
                e = self.embedders[metric](frames).reshape(len(self.prompts), self.samples, -1)
                per_seed.setdefault(metric, []).append(float(pairwise_cosine_diversity(e).mean()))
        return {k: mean_se(v) for k, v in per_seed.items()}


def save(data: dict, name: str, smoke: bool) -> None:
    out = (RUNS / "recipe_study" / "smoke" if smoke else RESULTS) / name
    atomic_save_json({**data, "machine": describe_machine()}, out)
    print(f"saved {out}")


# -- subcommands -----------------------------------------------------------------------------------------
def cmd_prepare(args) -> None:
    """Train (or find) the base and the reward embedder; the embedder's run records its triplet accuracy."""
    for run in prepare(args.domain, args.smoke):
        print(f"[{args.domain}] {run['run']}: {run['steps']} steps, {run['checkpoint']}")


def cmd_ablate(args) -> None:
    base, embedder = prepare(args.domain, args.smoke)
    split = "nested_val" if args.nested else "train"
    evaluate = Protocol(args.domain, split, ABLATION_SEEDS, args.smoke, embedder["checkpoint"])
    cfg = evaluate("CFG g=3", base["checkpoint"], SamplingConfig(guidance_scale=REFERENCE_GUIDANCE))
    plain, chance = evaluate("CFG g=1", base["checkpoint"]), evaluate.chance
    variants = DISTILL_VARIANTS
    if args.study == "diversity":
        variants = {k + p: {**CLAIMS, **v, "beta": args.beta, "shuffle_rewards": bool(p)}
                    for k, v in DIVERSITY_SETTINGS.items() for p in ("", " [placebo]")}  # fmt: skip
    elif args.study == "custom":
        variants = {v: dict(CLAIMS, **dict(map(parse, v.split(",")))) for v in args.variants}
    rows = []
    for label, edits in variants.items():
        if args.only and not any(o in label for o in args.only):
            continue
        stage = "distill_beta15" if edits.get("beta") else "distill_beta0"
        edits = {**edits, **({} if edits.get("beta") else {"reward": DROP}), **smoke_steps(args)}
        edits = {**edits, "data": NESTED} if args.nested else edits
        per_seed = []
        for seed in ABLATION_TRAIN_SEEDS:
            run = train(args.domain, stage, edits, "ablate", seed, base, embedder)
            m = evaluate(label, run["checkpoint"]).metrics
            per_seed.append({
                "seed": seed, "adherence": m["adherence"][0], "diversity": m["diversity"][0],
                "fraction": (m["adherence"][0] - chance) / (cfg.mean("adherence") - chance),
                "reward_diversity": m["reward_diversity"][0], "train_cpu_seconds": run["cpu_seconds"],
                "wall_seconds": run["wall_seconds"], "tokens": run["steps"] * run["tokens_per_step"],
            })  # fmt: skip
        s = {k: mean_se([p[k] for p in per_seed]) for k in per_seed[0] if k != "seed"}
        rows.append(
            {"variant": label, "stage": stage, "recipe": recorded(edits), "per_seed": per_seed, "summary": s}
        )
        print(f"{label}: fraction {s['fraction'][0]:.3f} ± {s['fraction'][1]:.3f}, diversity "
              f"{s['diversity'][0]:.4f}, reward diversity {s['reward_diversity'][0]:.4f}", flush=True)  # fmt: skip
    result = dict(domain=args.domain, prompts=split, sampling_seeds=ABLATION_SEEDS, train_seeds=ABLATION_TRAIN_SEEDS,
                  cfg_reference=cfg.as_dict(), plain=plain.as_dict(), chance=chance, variants=rows)  # fmt: skip
    save(result, f"recipe_ablation_{args.study}_{args.domain}{args.tag}.json", args.smoke)


def smoke_steps(args) -> dict:
    return {"steps": SMOKE["steps"]} if args.smoke else ({"steps": args.steps} if args.steps else {})


def cmd_curve(args) -> None:
    """Fraction of CFG g=3's gain over chance every ``--every`` steps of one run (training seed 0)."""
    base, embedder = prepare(args.domain, args.smoke)
    evaluate = Protocol(args.domain, "heldout", EVAL_SEEDS, args.smoke)
    chance = evaluate.chance
    cfg = evaluate("", base["checkpoint"], SamplingConfig(guidance_scale=REFERENCE_GUIDANCE)).mean(
        "adherence"
    )
    every = {"class_path": "lightning_cfgrl.RunCheckpoint", "init_args": {"filename": "step{step}",
             "every_n_train_steps": args.every, "save_top_k": -1, "auto_insert_metric_name": False}}  # fmt: skip
    curves = {}
    for name, recipe in {"shipped": CLAIMS, "paper (first round)": PAPER}.items():
        edits = {**recipe, "reward": DROP, **smoke_steps(args)}
        run = train(
            args.domain, "distill_beta0", {**edits, "add_callback": every}, "curve", 0, base, embedder
        )
        steps = sorted(int(p.stem[4:]) for p in Path(run["checkpoint"]).parent.glob("step*.ckpt"))
        points = [
            (0, base["checkpoint"]),
            *((s, Path(run["checkpoint"]).parent / f"step{s}.ckpt") for s in steps),
        ]
        curve = [
            {"step": s, "tokens": s * run["tokens_per_step"], "cpu_seconds": run["cpu_seconds"] * s / run["steps"],
             "value": (evaluate("", str(path)).mean("adherence") - chance) / (cfg - chance)}
            for s, path in points
        ]  # fmt: skip
        curves[name] = {"recipe": recorded(edits), "tokens": curve[-1]["tokens"], "cpu_seconds": run["cpu_seconds"],
                        "curve": curve}  # fmt: skip
        print(f"[{args.domain}] {name}: fraction {curve[-1]['value']:.3f} after {curve[-1]['step']} steps")
    note = "cpu_seconds: the fit process's CPU seconds (start-up included), spread evenly over its steps"
    result = dict(
        domain=args.domain, cfg_adherence=cfg, chance=chance, seeds=evaluate.seeds, curves=curves, note=note
    )
    save(result, f"recipe_curve_{args.domain}.json", args.smoke)


def cmd_claims(args) -> None:
    """CFG and temperature/top-p sweeps of the base and the claims' three models over TRAIN_SEEDS (merged
    per seed) on the held-out prompts; the claims pooled over training runs, and with them as units."""
    base, embedder = prepare(args.domain, args.smoke)
    evaluate = Protocol(args.domain, "heldout", EVAL_SEEDS, args.smoke, embedder["checkpoint"])
    chance, model = evaluate.chance, load_generator(base["checkpoint"])
    cfg = [evaluate(f"CFG g={g:g}", model, SamplingConfig(guidance_scale=g), "cfg") for g in GUIDANCE_SWEEP]
    sweep = [(f"temperature {t:g}", SamplingConfig(temperature=t), "temperature") for t in TEMPERATURES]
    sweep += [(f"top-p {p:g}", SamplingConfig(top_p=p), "top_p") for p in TOP_PS]
    sampling = [evaluate(name, model, config, family) for name, config, family in sweep]
    select = list(SELECTION_SEEDS[: SMOKE["seeds"] if args.smoke else None])  # the best point: these only
    best = max(
        range(len(sweep)), key=lambda i: evaluate("", model, sweep[i][1], seeds=select).mean("adherence")
    )

    beta = f"beta={args.beta:g}"
    kinds = claim_models(args.domain, args.beta, smoke_steps(args))
    train_seeds = SMOKE["train_seeds"] if args.smoke else TRAIN_SEEDS
    trained, seconds = {k: [] for k in kinds}, {k: [] for k in kinds}
    merged = {lam: [] for lam in MERGE_LAMBDAS}
    for seed in train_seeds:
        files = {}
        for key, (stage, edits) in kinds.items():
            run = train(args.domain, stage, edits, key.replace("=", ""), seed, base, embedder)
            seconds[key].append(run["cpu_seconds"])
            files[key] = run["checkpoint"]
            trained[key].append(evaluate(f"{key} seed {seed}", files[key], family="distilled"))
        states = [load_generator(files[key]).state_dict() for key in ("beta=0", beta)]
        for lam in MERGE_LAMBDAS:
            model.load_state_dict(merge_state_dicts(*states, lam))
            merged[lam].append(evaluate(f"merged {lam:g} seed {seed}", model.eval(), family="merged"))

    quality = pool_training_runs("distilled beta=0", trained["beta=0"], "distilled")
    diversity = pool_training_runs(f"distilled {beta}", trained[beta], "distilled")
    placebo = pool_training_runs("placebo (shuffled rewards)", trained["placebo"], "placebo")
    fronts = [pool_training_runs(f"merged lambda={lam:g}", merged[lam], "merged") for lam in MERGE_LAMBDAS]
    inputs = ClaimInputs(
        quality="adherence", sign=1.0, chance=chance, reference=(chance, 0.0),
        diversity_metrics=("diversity", "latent_diversity", "reward_diversity"),
        cfg_reference=cfg[GUIDANCE_SWEEP.index(REFERENCE_GUIDANCE)], quality_model=quality,
        diversity_model=diversity, placebo=placebo, best_sampling=sampling[best], cfg=cfg,
        sampling=sampling, merged=fronts, fraction=FRACTION,
    )  # fmt: skip
    claims = check_claims(inputs)
    claims += training_run_claims(inputs, trained["beta=0"], trained[beta], trained["placebo"], beta)
    # (b)'s side condition: adherence of the temperature/top-p front at the diversity model's diversity
    at_least = [r.mean("adherence") for r in sampling if r.mean("diversity") >= diversity.mean("diversity")]
    everything = [*cfg, *sampling, quality, diversity, placebo, *fronts]
    print(f"best temperature/top-p point (selection seeds): {sampling[best].name}\n{format_claims(claims)}")
    result = {
        "domain": args.domain,
        "protocol": {
            "eval_seeds": evaluate.seeds,
            "selection_seeds": select,
            "train_seeds": train_seeds,
            "prompts": evaluate.prompts.tolist(),
            "samples": evaluate.samples,
            "chance": chance,
            "reference_point": (chance, 0.0),
        },
        "recipe": {k: {"stage": stage, **recorded(edits)} for k, (stage, edits) in kinds.items()},
        "beta": args.beta,
        "train_cpu_seconds": seconds,
        "true_process": evaluate.true_process(),
        "results": [r.as_dict() for r in everything],
        "per_training_seed": {k: [r.as_dict() for r in v] for k, v in trained.items()},
        "best_sampling": sampling[best].name,
        "temperature_front_adherence_at_diversity_model": max(at_least, default=None),
        "claims": [c.as_dict() for c in claims],
    }
    save(result, f"recipe_claims_{args.domain}{args.tag}.json", args.smoke)


def cmd_plot(args) -> None:
    """docs/images/recipe_curve.png: fraction of CFG g=3's adherence gain vs trained tokens and CPU time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for domain, color in (("music", "tab:blue"), ("hmm", "tab:red")):
        path = RESULTS / f"recipe_curve_{domain}.json"
        for label, curve in json.loads(path.read_text())["curves"].items() if path.exists() else ():
            for ax, key in zip(axes, ("tokens", "cpu_seconds"), strict=True):
                x, y = [p[key] for p in curve["curve"]], [p["value"] for p in curve["curve"]]
                style = "-" if label == "shipped" else "--"
                ax.plot(x, y, style, color=color, marker="o", markersize=3, label=f"{domain}: {label}")
    for ax, xlabel in zip(axes, ("trained tokens", "CPU seconds of training (1 thread)"), strict=True):
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(FRACTION, color="gray", lw=0.8, ls=":")
        ax.set(xlabel=xlabel, ylabel="fraction of CFG g=3's adherence gain over chance")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("On-policy CFG distillation (held-out prompts, 5 evaluation seeds): shipped vs the paper's")
    fig.tight_layout()
    out = Path("docs/images/recipe_curve.png")
    fig.savefig(out.with_name("recipe_curve.tmp.png"), dpi=110)
    out.with_name("recipe_curve.tmp.png").replace(out)
    print(f"saved {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("prepare", "ablate", "curve", "claims", "plot"))
    parser.add_argument("--smoke", action="store_true", help=f"toy sizes {SMOKE}; results under runs/")
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="music")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--beta", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=None, help="curve and claims: the students' length")
    parser.add_argument("--every", type=int, default=25, help="curve: evaluate every this many steps")
    parser.add_argument("--study", choices=("distill", "diversity", "custom"), default="distill")
    parser.add_argument(
        "--nested", action="store_true", help="ablate: train on 27 training prompts, test on 9"
    )
    parser.add_argument("--only", nargs="*", help="ablate: the variants whose name contains one of these")
    parser.add_argument("--variants", nargs="*", default=[], help="ablate --study custom: key=value,...")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    globals()[f"cmd_{args.command}"](args)


if __name__ == "__main__":
    main()
