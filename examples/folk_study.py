"""Real music: the shipped recipe on folk tunes of the Essen collection (music21's corpus; the optional
extra ``pip install -e ".[music]"``), judged by models and rules nobody trained to agree with the student.

    python examples/folk_study.py prepare                 # parse (cached), judge; cfgrl fit: base, embedder
    python examples/folk_study.py sweep                   # CFG vs temperature / top-p on the held-out prompts
    python examples/folk_study.py train --seeds 0 1 2     # cfgrl fit: beta=0 / beta=15 / placebo per seed
    python examples/folk_study.py train --seeds 0 --stages steerable   # the steerable student
    python examples/folk_study.py claims --seeds 0 1 2    # held-out evaluation of those runs, the claims
    python examples/folk_study.py steerable               # the steerable student's claims (cfgrl merge too)

Every model is trained by ``cfgrl fit --config examples/configs/folk/<stage>.yaml``: the shipped YAMLs of
``examples/configs/`` with only the model and data (and the files they read) swapped, a test checks it.
Training seed s > 0 adds ``--seed_everything s --model.init_args.seed s`` and the run name
``folk_<stage>_s<s>`` on the command line. To rerun only the diversity stages after a recipe change:
``train --seeds 0 1 2 --stages distill_beta15 distill_placebo --retrain`` then ``claims``.

Protocol (as examples/recipe_study.py; fixed before any run): nothing is tuned on this domain, claims are
measured on the corpus's HELD-OUT prompts with the package's 5 evaluation seeds, the best temperature/top-p
point is chosen on the selection seeds, quality is the judge's adherence (chance log 1/P), diversity is
measured by ``MelodyProfileEmbedder`` (interval/duration/position/pitch-class profiles, independent of the
reward's contrastive embedder) and by the reward's own embedder. The judge is trained on tunes the generator
never saw and tested on tunes neither saw. Outputs: ``benchmarks/results/real_music_{setup,sweep,claims,
steerable}.json``, runs under ``runs/folk_*``, audio (WAV + MIDI) under ``runs/folk_study/audio``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import recipe_study as rs  # noqa: E402  (the protocol, pooling and per-seed claims)
from fit_runner import budget_readout, run_fit  # noqa: E402

from lightning_cfgrl.core.sampling import SamplingConfig  # noqa: E402
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder  # noqa: E402
from lightning_cfgrl.embedders.contrastive_training import triplet_accuracy  # noqa: E402
from lightning_cfgrl.eval.candidates import CandidateResult, Measurement, evaluate_candidate  # noqa: E402
from lightning_cfgrl.eval.claims import ClaimInputs, check_claims, format_claims  # noqa: E402
from lightning_cfgrl.eval.machine import describe_machine  # noqa: E402
from lightning_cfgrl.eval.stats import paired_t_test  # noqa: E402
from lightning_cfgrl.eval.training_runs import pool_training_runs, training_run_claims  # noqa: E402
from lightning_cfgrl.experiments.folk import (  # noqa: E402
    FolkCorpus,
    FolkJudgeAdherence,
    FolkRenderer,
    KeyProfileMode,
    MelodyProfileEmbedder,
    MeterAlignment,
    judge_accuracy,
    key_correlations,
    meter_alignment,
    save_judge,
    train_judge,
)
from lightning_cfgrl.experiments.folk.judge import calibrate_temperature, load_judge  # noqa: E402
from lightning_cfgrl.io import load_generator  # noqa: E402
from lightning_cfgrl.io.checkpoints import atomic_save_json, load_checkpoint  # noqa: E402
from lightning_cfgrl.merging.streaming import merge_state_dicts  # noqa: E402
from lightning_cfgrl.training.stopping import stopped_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs" / "folk"
STAGES = ("distill_beta0", "distill_beta15", "distill_placebo", "steerable")
KINDS = {"beta=0": "distill_beta0", "beta=15": "distill_beta15", "placebo": "distill_placebo"}
JUDGE_STEPS = 1500
CACHE = Path("runs/folk_study")
RESULTS = Path("benchmarks/results")
TIMES = CACHE / "fit_runs.json"  # CPU / wall time and stopping point of each cfgrl fit


def stage_config(stage: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text())


def corpus_args() -> dict:
    return stage_config("pretrain")["data"]["init_args"]["corpus"]["init_args"]


def corpus() -> FolkCorpus:
    """The corpus the folk YAMLs name (same collections, frames and threshold)."""
    return FolkCorpus(**corpus_args())


def run_name(stage: str, seed: int = 0) -> str:
    """The YAML's run name for seed 0 (the documented command), ``<name>_s<seed>`` for other seeds."""
    name = stage_config(stage)["trainer"]["logger"]["init_args"]["name"]
    return name if seed == 0 else f"{name}_s{seed}"


def last(stage: str, seed: int = 0) -> Path:
    return Path("runs") / run_name(stage, seed) / "checkpoints" / "last.ckpt"


def config() -> dict:
    """What the results depend on: the folk YAMLs themselves."""
    return {
        "configs": {s: stage_config(s) for s in ("pretrain", "embedder", *STAGES)},
        "judge_steps": JUDGE_STEPS,
    }


def git_state() -> dict:
    """The commit the numbers came from, and whether the tree had uncommitted changes."""

    def run(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty": bool(run("status", "--porcelain", "--untracked-files=no")),
    }


def provenance() -> dict:
    return {"git": git_state(), "machine": describe_machine(), "config": config()}


# -- cfgrl fit -----------------------------------------------------------------------------------------
def fit(stage: str, seed: int = 0, retrain: bool = False) -> dict:
    """``cfgrl fit --config examples/configs/folk/<stage>.yaml`` (plus the seed and run name for seed > 0),
    unless its finished run exists; records CPU / wall seconds and where it stopped in ``fit_runs.json``."""
    key = f"{stage}/seed{seed}"
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    path = last(stage, seed)
    max_steps = int(stage_config(stage)["trainer"]["max_steps"])
    if path.exists() and not retrain:
        saved = load_checkpoint(path)
        if stopped_step(saved) is not None or int(saved["global_step"]) >= max_steps:
            print(f"[{key}] cached ({path})", flush=True)
            return times.get(key, {})
    args = [
        "--config",
        os.path.relpath(CONFIGS / f"{stage}.yaml"),
    ]  # as the docs write it, from the repo root
    if seed:
        args += [f"--seed_everything={seed}", f"--trainer.logger.init_args.name={run_name(stage, seed)}"]
        if stage_config(stage)["model"]["class_path"].endswith("CFGRLModule"):
            args += [f"--model.init_args.seed={seed}"]
    if retrain and path.parent.parent.exists():
        shutil.rmtree(path.parent.parent)
    command = "cfgrl fit " + " ".join([*args, "--trainer.enable_progress_bar=false"])
    print(
        f"[{key}] lightning_cfgrl.cli.main fit {' '.join(args)} --trainer.enable_progress_bar=false",
        flush=True,
    )
    _, wall, cpu = run_fit(args, key, log=Path("runs") / run_name(stage, seed) / "fit.log")
    saved = load_checkpoint(path)
    info = {
        "command": command,
        "steps": int(saved["global_step"]),
        "max_steps": max_steps,
        "stopped_step": stopped_step(saved),
        "cpu_s": cpu,
        "wall_s": wall,
    }
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}  # another driver may have written
    times[key] = info
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_json(times, TIMES)
    print(f"[{key}] {info}", flush=True)
    return info


# -- prepare -----------------------------------------------------------------------------------------
def rule_accuracies(data: FolkCorpus) -> dict:
    """The rule judges as classifiers on the test tunes: meter = the corpus meter with the best
    alignment; major vs minor = the sign of the key-profile difference (major and minor tunes only).
    The mode rule is reported with its balanced accuracy (the mean of the per-class recalls, chance
    0.5) beside its raw accuracy, since the classes are unbalanced (most major/minor tunes are major)."""
    frames, condition = data.data("test")
    tok = data.tokenizer
    onsets, live = tok.onsets(frames), tok.live(frames)
    meters = list(data.prompt_table.names[1])
    scores = torch.stack([meter_alignment(onsets, live, m) for m in meters], 1)
    truth = [meters.index(m) for m in data.prompt_table.meter_of(condition)]
    meter_acc = float((scores.argmax(1) == torch.tensor(truth)).double().mean())
    major, minor = key_correlations(tok.sounding(frames))
    modes = data.prompt_table.mode_of(condition)
    rows = [i for i, m in enumerate(modes) if m in ("major", "minor")]
    predicted = {i: "major" if major[i] > minor[i] else "minor" for i in rows}
    mode_acc = sum(predicted[i] == modes[i] for i in rows) / max(len(rows), 1)
    recalls = {}
    for label in ("major", "minor"):
        of = [i for i in rows if modes[i] == label]
        recalls[label] = sum(predicted[i] == label for i in of) / len(of) if of else float("nan")
    majority = max(modes.count("major"), modes.count("minor")) / max(len(rows), 1)
    return {
        "meter_rule_accuracy": meter_acc,
        "meter_chance": 1 / len(meters),
        "mode_rule_accuracy_major_vs_minor": mode_acc,
        "mode_rule_balanced_accuracy": sum(recalls.values()) / 2,
        "mode_rule_recall": recalls,
        "mode_tunes": {label: sum(modes[i] == label for i in rows) for label in ("major", "minor")},
        "mode_majority_rate": majority,
        "test_tunes": len(truth),
    }


def corpus_summary(stats: dict) -> dict:
    """The corpus's counts as one flat table (the results page shows it)."""
    shares = stats["tunes_per_share"]
    return {
        "Essen files": stats["files"],
        "tunes parsed": stats["tunes_parsed"],
        "notes parsed": stats["notes_parsed"],
        "prompts (collection, meter, mode) with enough tunes": stats["prompts"],
        "training / held-out prompts": f"{stats['train_prompts']} / {stats['heldout_prompts']}",
        "held-out prompts": "; ".join(stats["heldout_prompt_text"]),
        "tunes in prompts": stats["tunes_in_prompts"],
        "tunes: generator / judge / test share": f"{shares['generator']} / {shares['judge']} / {shares['test']}",
        "frames per tune (sixteenths) x codebooks": f"{stats['frames_per_tune']} x {stats['codebooks']}",
        "tokens": stats["tokens"],
    }


def judges_summary(accuracy: dict, rules: dict, triplet: float) -> dict:
    """The judges' held-out accuracies as one flat table, each beside its chance level."""
    return {
        "learned judge: top-1 over the prompts": accuracy["accuracy"],
        "learned judge: balanced top-1": accuracy["balanced_accuracy"],
        "learned judge: chance top-1 (1/P)": accuracy["chance_accuracy"],
        "learned judge: mean log p(true prompt)": accuracy["adherence"],
        "learned judge: chance log p (log 1/P)": accuracy["chance_adherence"],
        "learned judge: logit temperature (fitted on the generator's tunes)": accuracy["temperature"],
        "learned judge, uncalibrated: mean log p(true prompt)": accuracy["uncalibrated"]["adherence"],
        "meter rule: accuracy over the meters": rules["meter_rule_accuracy"],
        "meter rule: chance": rules["meter_chance"],
        "key-profile rule: balanced accuracy, major vs minor (chance 0.5)": rules[
            "mode_rule_balanced_accuracy"
        ],
        "key-profile rule: raw accuracy (majority rate beside it)": rules[
            "mode_rule_accuracy_major_vs_minor"
        ],
        "key-profile rule: majority rate": rules["mode_majority_rate"],
        "reward embedder: triplet accuracy (chance 0.5)": triplet,
    }


def cmd_prepare(args: argparse.Namespace) -> None:
    """Corpus statistics, the learned judge (not a cfgrl stage: a classifier trained here on the judge's
    share) and the rule judges' held-out accuracies; then ``cfgrl fit`` of folk/pretrain.yaml and
    folk/embedder.yaml."""
    start = time.perf_counter()
    data = corpus()
    stats = data.statistics()
    stats["prompt_table"] = [
        {"prompt": ", ".join(c), "tunes": n}
        for c, n in zip(data.prompt_table.combos, data.prompt_table.counts, strict=True)
    ]
    stats["heldout_prompt_text"] = [data.describe(p) for p in data.heldout_prompts]
    print(
        f"corpus: {stats['tunes_parsed']} tunes, {stats['prompts']} prompts, {stats['tokens']} tokens "
        f"({time.perf_counter() - start:.0f} s to load)",
        flush=True,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    cpu, judge_time = time.process_time(), CACHE / "judge_cpu_seconds.json"
    if (CACHE / "judge.safetensors").exists() and judge_time.exists():
        judge, prior, _ = load_judge(CACHE / "judge.safetensors", data)
        judge_cpu = json.loads(judge_time.read_text())["cpu_s"]
    else:
        judge, prior = train_judge(data, steps=JUDGE_STEPS)
        temperature = calibrate_temperature(judge, prior, data, "generator")
        save_judge(judge, prior, data, CACHE / "judge.safetensors", temperature)
        judge_cpu = time.process_time() - cpu
        atomic_save_json({"cpu_s": judge_cpu}, judge_time)
    temperature = calibrate_temperature(judge, prior, data, "generator")
    accuracy = judge_accuracy(judge, prior, data, "test", temperature)
    accuracy["uncalibrated"] = judge_accuracy(judge, prior, data, "test")
    rules = rule_accuracies(data)
    print(f"judge: {accuracy}\nrules: {rules}", flush=True)
    if args.judge_only:
        return
    base = fit("pretrain")
    embedder_run = fit("embedder")
    embedder = ContrastiveTokenEmbedder(checkpoint=str(last("embedder"))).eval()
    test_frames, _ = data.data("test")
    chunk = int(stage_config("embedder")["model"]["init_args"]["chunk_frames"])
    triplet = float(triplet_accuracy(embedder, test_frames, chunk, torch.Generator().manual_seed(0)))
    print(f"reward embedder: triplet accuracy {triplet:.3f} on the test tunes", flush=True)
    atomic_save_json(
        {
            "corpus": stats,
            "corpus_summary": corpus_summary(stats),
            "judges_summary": judges_summary(accuracy, rules, triplet),
            "judge_heldout": accuracy,
            "rule_judges_heldout": rules,
            "reward_embedder_triplet_accuracy": triplet,
            "cpu_seconds": {
                "judge": judge_cpu,
                "base": base.get("cpu_s"),
                "embedder": embedder_run.get("cpu_s"),
            },
            "fit_runs": {"pretrain": base, "embedder": embedder_run},
            **provenance(),
        },
        RESULTS / "real_music_setup.json",
    )


# -- evaluation ------------------------------------------------------------------------------------------
class Evaluator:
    """Samples candidates on the held-out prompts: judge adherence, rule scores, two diversities."""

    def __init__(
        self, data: FolkCorpus, seeds, reward: nn.Module | None = None, samples: int = rs.EVAL_SAMPLES
    ):
        self.data, self.seeds, self.samples = data, tuple(seeds), samples
        self.scorers = [
            FolkJudgeAdherence(data, str(CACHE / "judge.safetensors")),
            MeterAlignment(data),
            KeyProfileMode(data),
        ]
        self.embedders = {"diversity": MelodyProfileEmbedder(data.num_frames, data.vocab_size)}
        if reward is not None:
            self.embedders["reward_diversity"] = reward
        self.chance = -math.log(data.num_prompts)

    def __call__(
        self, name: str, model: nn.Module, config: SamplingConfig | None = None, family: str = ""
    ) -> CandidateResult:
        measurement = Measurement(
            self.data.heldout_prompts,
            self.data.num_frames,
            self.scorers,
            self.embedders,
            num_samples=self.samples,
            seeds=self.seeds,
        )
        return evaluate_candidate(name, model, config or SamplingConfig(), measurement, family=family)

    def adherence(self, model: nn.Module, config: SamplingConfig) -> float:
        return self("", model, config).mean("adherence")


def load_base(data: FolkCorpus | None = None) -> nn.Module:
    """The base that folk/pretrain.yaml trained (``runs/folk_base/checkpoints/last.ckpt``)."""
    return load_generator(str(last("pretrain"))).eval()


def load_reward() -> ContrastiveTokenEmbedder:
    return ContrastiveTokenEmbedder(checkpoint=str(last("embedder"))).eval()


def table(results) -> str:
    keys = ("adherence", "meter", "mode_key", "diversity", "reward_diversity")
    lines = ["| candidate | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in results:
        cells = [f"{r.metrics[k][0]:.3f} ± {r.metrics[k][1]:.3f}" if k in r.metrics else "" for k in keys]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweeps(data, base, evaluator, selector):
    cfg = [
        evaluator(f"CFG g={g:g}", base, SamplingConfig(guidance_scale=g), "cfg") for g in rs.GUIDANCE_SWEEP
    ]
    sweep = [(f"temperature {t:g}", SamplingConfig(temperature=t), "temperature") for t in rs.TEMPERATURES]
    sweep += [(f"top-p {p:g}", SamplingConfig(top_p=p), "top_p") for p in rs.TOP_PS]
    sampling = [evaluator(name, base, c, family) for name, c, family in sweep]
    best = max(range(len(sweep)), key=lambda i: selector.adherence(base, sweep[i][1]))
    return cfg, sampling, best


def sweep_key() -> dict:
    """What the sweep depends on: the base's and the embedder's YAMLs, the judge, the protocol."""
    return {
        "configs": {s: stage_config(s) for s in ("pretrain", "embedder")},
        "judge_steps": JUDGE_STEPS,
        "protocol": [rs.EVAL_SEEDS, rs.SELECTION_SEEDS, rs.EVAL_SAMPLES, rs.GUIDANCE_SWEEP],
    }


def saved_sweep(data, base, evaluator, selector):
    """The sweep that ``sweep`` saved (same commit's settings), else computed again."""
    path = RESULTS / "real_music_sweep.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("sweep_key") == json.loads(json.dumps(sweep_key())):  # same base, judge and protocol
            results = [CandidateResult(**r) for r in saved["results"]]
            cfg = [r for r in results if r.family == "cfg"]
            sampling = [r for r in results if r.family != "cfg"]
            best = [r.name for r in sampling].index(saved["best_sampling"])
            print(f"sweep read from {path}", flush=True)
            return cfg, sampling, best
    return sweeps(data, base, evaluator, selector)


def log_audio(data: FolkCorpus, models: dict[str, nn.Module], configs: dict[str, SamplingConfig]) -> None:
    """Two held-out prompts x 2 samples per model: WAV + MIDI files and TensorBoard audio tagged with the
    prompt's text."""
    from torch.utils.tensorboard import SummaryWriter

    from lightning_cfgrl.core.sampling import sample
    from lightning_cfgrl.io.audio import write_audio

    renderer = FolkRenderer(data.tokenizer)
    writer = SummaryWriter(str(CACHE / "tensorboard"))
    for name, model in models.items():
        prompts = data.heldout_prompts[:2]
        steps = sample(
            model, prompts, data.num_frames, configs.get(name, SamplingConfig()), num_samples=2, seed=0
        )
        frames = model.pattern.steps_to_frames(steps)
        wavs = renderer.decode(frames)
        for j in range(frames.shape[0]):
            prompt = data.describe(prompts[j // 2])
            slug = (
                f"{name}_{prompt}_{j % 2}".replace(", ", "_")
                .replace("/", "-")
                .replace(" ", "_")
                .replace("=", "")
            )
            write_audio(CACHE / "audio" / f"{slug}.wav", wavs[j], renderer.sample_rate)
            meter = data.prompt_table.meter_of(prompts[j // 2 : j // 2 + 1])[0]
            renderer.write_midi(frames[j], CACHE / "audio" / f"{slug}.mid", meter=meter)
            writer.add_audio(
                f"{name}/{prompt}/sample{j % 2}", wavs[j, 0], 0, sample_rate=renderer.sample_rate
            )
    writer.close()
    print(f"audio: {CACHE / 'audio'} and TensorBoard {CACHE / 'tensorboard'}", flush=True)


def cmd_sweep(args: argparse.Namespace) -> None:
    data = corpus()
    base = load_base(data)
    evaluator = Evaluator(data, rs.EVAL_SEEDS, load_reward())
    selector = Evaluator(data, rs.SELECTION_SEEDS)
    cfg, sampling, best = sweeps(data, base, evaluator, selector)
    print(table([*cfg, *sampling]))
    reference = cfg[rs.GUIDANCE_SWEEP.index(rs.REFERENCE_GUIDANCE)]
    best_s = sampling[best]
    d = [a - b for a, b in zip(reference.per_seed["adherence"], best_s.per_seed["adherence"], strict=True)]
    verdict = paired_t_test(d)
    summary = (
        f"CFG g=3 adherence {reference.mean('adherence'):.3f} (diversity {reference.mean('diversity'):.3f}) vs the best "
        f"temperature/top-p point ({best_s.name}, chosen on selection seeds) {best_s.mean('adherence'):.3f} "
        f"(diversity {best_s.mean('diversity'):.3f}): margin {verdict.mean:.3f} ± {verdict.standard_error:.3f}, "
        f"CFG {'beats' if verdict.mean > 2 * verdict.standard_error else 'does not beat'} temperature here; "
        f"chance {evaluator.chance:.3f}"
    )
    print(summary)
    atomic_save_json(
        {
            "results": [r.as_dict() for r in [*cfg, *sampling]],
            "best_sampling": best_s.name,
            "cfg3_minus_best_sampling": {
                "mean": verdict.mean,
                "se": verdict.standard_error,
                "p": verdict.p_value,
            },
            "summary": summary,
            "chance": evaluator.chance,
            "heldout_prompts": [data.describe(p) for p in data.heldout_prompts],
            "sweep_key": sweep_key(),
            **provenance(),
        },
        RESULTS / "real_music_sweep.json",
    )
    log_audio(data, {"base": base, "cfg3": base}, {"cfg3": SamplingConfig(guidance_scale=3.0)})


# -- training (cfgrl fit) ---------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> None:
    """``cfgrl fit`` of the given stages for each training seed (finished runs are reused)."""
    for seed in args.seeds:
        for stage in args.stages:
            fit(stage, seed, retrain=args.retrain)


def trained(stage: str, seed: int) -> nn.Module:
    return load_generator(str(last(stage, seed))).eval()


# -- claims ---------------------------------------------------------------------------------------------
def fit_table(runs: dict) -> list[dict]:
    """Every recorded ``cfgrl fit`` as one flat row: run, steps, where it stopped, CPU and wall seconds."""
    return [
        {
            "run": key,
            "steps": r.get("steps"),
            "max_steps": r.get("max_steps"),
            "stopped": r.get("stopped_step"),
            "CPU s": r.get("cpu_s"),
            "wall s": r.get("wall_s"),
        }
        for key, r in sorted(runs.items())
    ]


def cmd_claims(args: argparse.Namespace) -> None:
    data = corpus()
    base = load_base(data)
    reward = load_reward()
    evaluator = Evaluator(data, rs.EVAL_SEEDS, reward)
    selector = Evaluator(data, rs.SELECTION_SEEDS)
    chance = evaluator.chance
    cfg, sampling, best = saved_sweep(data, base, evaluator, selector)
    students = {k: [] for k in KINDS}
    merged = {lam: [] for lam in rs.MERGE_LAMBDAS}
    seeds = tuple(args.seeds)
    runs = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    for seed in seeds:
        states = {}
        for key, stage in KINDS.items():
            model = trained(stage, seed)
            states[key] = {k: v.clone() for k, v in model.state_dict().items()}
            students[key].append(evaluator(f"{key} seed {seed}", model, family="distilled"))
            print(f"{key} seed {seed}: adherence {students[key][-1].mean('adherence'):.3f}", flush=True)
        for lam in rs.MERGE_LAMBDAS:
            if lam in (0.0, 1.0):  # the students themselves: same seeds, same samples; not sampled twice
                same = students["beta=0" if lam == 0.0 else "beta=15"][-1]
                merged[lam].append(replace(same, name=f"merged {lam:g} seed {seed}", family="merged"))
                continue
            model = trained("distill_beta0", seed)  # LERP (what cfgrl merge writes), in memory
            model.load_state_dict(merge_state_dicts(states["beta=0"], states["beta=15"], lam))
            merged[lam].append(evaluator(f"merged {lam:g} seed {seed}", model.eval(), family="merged"))
    quality = pool_training_runs("distilled beta=0", students["beta=0"], "distilled")
    diversity = pool_training_runs("distilled beta=15", students["beta=15"], "distilled")
    placebo = pool_training_runs("placebo (shuffled rewards)", students["placebo"], "placebo")
    merged_pooled = [
        pool_training_runs(f"merged lambda={lam:g}", merged[lam], "merged") for lam in rs.MERGE_LAMBDAS
    ]
    reference = cfg[rs.GUIDANCE_SWEEP.index(rs.REFERENCE_GUIDANCE)]
    inputs = ClaimInputs(
        quality="adherence",
        sign=1.0,
        chance=chance,
        reference=(chance, 0.0),
        diversity_metrics=("diversity", "reward_diversity"),
        cfg_reference=reference,
        quality_model=quality,
        diversity_model=diversity,
        placebo=placebo,
        best_sampling=sampling[best],
        cfg=cfg,
        sampling=sampling,
        merged=merged_pooled,
        fraction=rs.FRACTION,
    )
    claims = check_claims(inputs)
    gain = reference.mean("adherence") - chance
    if len(seeds) >= 2:  # training runs as the unit
        claims += training_run_claims(
            inputs, students["beta=0"], students["beta=15"], students["placebo"], "beta=15"
        )
    everything = [*cfg, *sampling, quality, diversity, placebo, *merged_pooled]
    print(table(everything))
    fraction = (quality.mean("adherence") - chance) / gain
    print(
        f"\nchance {chance:.3f}; beta=0 reaches {fraction:.1%} of CFG g=3's adherence gain; best temperature/top-p: {sampling[best].name}"
    )
    print(format_claims(claims))
    atomic_save_json(
        {
            "domain": "folk (Essen: " + ", ".join(corpus_args()["collections"]) + ")",
            "protocol": {
                "eval_seeds": rs.EVAL_SEEDS,
                "selection_seeds": rs.SELECTION_SEEDS,
                "train_seeds": seeds,
                "prompts": data.heldout_prompts.tolist(),
                "prompt_text": [data.describe(p) for p in data.heldout_prompts],
                "samples": rs.EVAL_SAMPLES,
                "chance": chance,
                "reference_point": (chance, 0.0),
            },
            "configs": {k: f"examples/configs/folk/{v}.yaml" for k, v in KINDS.items()},
            "fit_table": fit_table(runs),
            "fit_runs": {k: [runs.get(f"{v}/seed{s}", {}) for s in seeds] for k, v in KINDS.items()},
            # where each quality budget ended: beta, the reference / base / last smoothed KL ({} without one)
            "budget": {
                k: [budget_readout(load_checkpoint(last(v, s), mmap=True)) for s in seeds]
                for k, v in KINDS.items()
                if k != "beta=0"
            },
            "results": [r.as_dict() for r in everything],
            "per_training_seed": {k: [r.as_dict() for r in v] for k, v in students.items()},
            "best_sampling": sampling[best].name,
            "fraction_of_cfg_gain_beta0": fraction,
            "claims": [c.as_dict() for c in claims],
            **provenance(),
        },
        RESULTS / args.out,
    )
    log_audio(data, {"beta0": trained("distill_beta0", 0), "beta15": trained("distill_beta15", 0)}, {})


# -- the steerable student -----------------------------------------------------------------------------
CONTROL_G = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]  # steerable.yaml trains g in [1, 5]
CONTROL_W = [0.0, 15.0]  # the ends of the trained diversity-weight range [0, 15] (CPU budget: 2 of 4)


def cmd_steerable(args: argparse.Namespace) -> None:
    """The library's evaluation (what ``cfgrl evaluate`` runs) of the steerable student of each training
    seed beside the base's CFG and temperature / top-p sweeps, the two-model recipe of the same seed and its
    ``cfgrl merge`` front (the placebo is in real_music_claims.json): claims (a), (c), s_g and s_front."""
    from lightning_cfgrl.cli.main import main as cfgrl
    from lightning_cfgrl.eval import (
        Candidates,
        Evaluation,
        EvaluationOutput,
        EvaluationProtocol,
        PromptSource,
    )
    from lightning_cfgrl.eval.report import report_dict
    from lightning_cfgrl.experiments.folk import FolkPromptDataModule

    data = corpus()
    runs = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    reports = {}
    for seed in args.seeds:
        merged = Path("runs") / f"folk_merged_s{seed}"
        if merged.exists():  # merged again from this seed's runs: never a folder an earlier run left
            shutil.rmtree(merged)
        lambdas = ",".join(f"{x:g}" for x in rs.MERGE_LAMBDAS)
        code = cfgrl(
            ["merge", "--quality", str(last("distill_beta0", seed)), "--diversity",
             str(last("distill_beta15", seed)), "--lambdas", lambdas, "--out", str(merged)]
        )  # fmt: skip
        if code:
            raise SystemExit(f"cfgrl merge failed with exit code {code}")
        start = time.perf_counter()
        evaluation = Evaluation(
            scorers=[
                FolkJudgeAdherence(data, str(CACHE / "judge.safetensors")),
                MeterAlignment(data),
                KeyProfileMode(data),
            ],
            embedder=MelodyProfileEmbedder(data.num_frames, data.vocab_size),  # independent of the reward
            reward_embedder=load_reward(),
            candidates=Candidates(
                base=str(last("pretrain")),
                guidance_scales=CONTROL_G,  # CFG at each control g, for the s_g claims
                temperatures=list(rs.TEMPERATURES),
                top_ps=list(rs.TOP_PS),
                distilled={
                    "beta=0": str(last("distill_beta0", seed)),
                    "beta=15": str(last("distill_beta15", seed)),
                },
                quality_model="beta=0",
                diversity_model="beta=15",
                merged_dir=str(merged),
                steerable={"student": str(last("steerable", seed))},
                control_guidance_scales=CONTROL_G,
                control_diversity_weights=CONTROL_W,
            ),
            protocol=EvaluationProtocol(
                num_frames=data.num_frames, num_samples=rs.EVAL_SAMPLES, num_seeds=len(rs.EVAL_SEEDS)
            ),
            prompts=PromptSource(datamodule=FolkPromptDataModule(data)),  # its held-out prompts
            output=EvaluationOutput(out=str(CACHE / f"eval_steerable_s{seed}"), progress=False),
        )
        report = evaluation.run()
        print(
            f"seed {seed}: {len(report.results)} candidates in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        print(format_claims(report.claims), flush=True)
        document = report_dict(report)
        document["evaluation_wall_s"] = time.perf_counter() - start
        reports[str(seed)] = document
    cost = {}
    for seed in args.seeds:
        two = {
            run_name(v, seed): runs.get(f"{v}/seed{seed}", {}) for v in ("distill_beta0", "distill_beta15")
        }
        cost[str(seed)] = {
            "steerable": runs.get(f"steerable/seed{seed}", {}),
            "two_model_recipe": {
                "steps": sum(r.get("steps", 0) for r in two.values()),
                "wall_s": sum(r.get("wall_s", 0.0) for r in two.values()),
                "cpu_s": sum(r.get("cpu_s", 0.0) for r in two.values()),
                "runs": two,
            },
        }
    first = str(args.seeds[0])
    document = dict(reports[first])  # the first seed's evaluation at the top (what the results pages read)
    document.update(
        domain="folk (Essen: " + ", ".join(corpus_args()["collections"]) + ")",
        configs="examples/configs/folk/",
        train_seed=args.seeds[0],
        train_seeds=list(args.seeds),
        control_guidance_scales=CONTROL_G,
        control_diversity_weights=CONTROL_W,
        training_cost=cost[first],
        training_cost_per_seed=cost,
        per_training_seed={
            k: {"claims": v["claims"], "hypervolumes": v.get("hypervolumes")} for k, v in reports.items()
        },
        **provenance(),
    )
    atomic_save_json(document, RESULTS / "real_music_steerable.json")


# -- audio examples for the docs ------------------------------------------------------------------------
DOCS_AUDIO = ROOT / "docs" / "audio" / "folk"


def write_wav_8bit(path: Path, wav: torch.Tensor, sample_rate: int) -> None:
    """Mono ``[S]`` in [-1, 1] -> an 8-bit PCM WAV: a few seconds of plucked tones stay under 60 KB."""
    import wave

    data = (wav.clamp(-1, 1) * 127 + 128).round().to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(1)
        f.setframerate(sample_rate)
        f.writeframes(data)


def cmd_audio(args: argparse.Namespace) -> None:
    """One sample per model for one held-out prompt (training seed 0, sampling seed 0), rendered by
    ``FolkRenderer`` at 8 kHz / 8 bit / 120 bpm into docs/audio/folk/ (small enough to commit)."""
    from lightning_cfgrl.core.sampling import sample

    data = corpus()
    renderer = FolkRenderer(data.tokenizer, sample_rate=8000, tempo=120.0)
    prompt = data.heldout_prompts[args.prompt : args.prompt + 1]
    models = {
        "base_g1": (load_base(data), SamplingConfig(), None),
        "cfg_g3": (load_base(data), SamplingConfig(guidance_scale=3.0), None),
        "distilled_beta0": (trained("distill_beta0", 0), SamplingConfig(), None),
        "distilled_beta15": (trained("distill_beta15", 0), SamplingConfig(), None),
    }
    if last("steerable").exists():
        controls = {"guidance_scale": 3.0, "diversity_weight": 15.0}
        models["steerable_g3_w15"] = (trained("steerable", 0), SamplingConfig(), controls)
    written = {}
    for name, (model, sampling, controls) in models.items():
        steps = sample(model, prompt, data.num_frames, sampling, num_samples=1, seed=0, controls=controls)
        frames = model.pattern.steps_to_frames(steps)
        path = DOCS_AUDIO / f"{name}.wav"
        write_wav_8bit(path, renderer.decode(frames)[0, 0], renderer.sample_rate)
        written[name] = path.stat().st_size
    total = sum(written.values())
    print(f"prompt {data.describe(prompt[0])}: {written} ({total / 1000:.0f} KB)", flush=True)
    atomic_save_json({"prompt": data.describe(prompt[0]), "bytes": written}, DOCS_AUDIO / "index.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare")
    prepare.add_argument("--judge_only", action="store_true", help="recalibrate the judge, keep the rest")
    sub.add_parser("sweep")
    train = sub.add_parser("train")
    train.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    train.add_argument(
        "--stages", nargs="+", default=list(KINDS.values()), choices=["pretrain", "embedder", *STAGES]
    )
    train.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    claims = sub.add_parser("claims")
    claims.add_argument(
        "--seeds", type=int, nargs="+", default=list(rs.TRAIN_SEEDS), help="training seeds of the students"
    )
    claims.add_argument("--out", default="real_music_claims.json", help="file name under benchmarks/results")
    audio = sub.add_parser("audio")
    audio.add_argument("--prompt", type=int, default=0, help="index of the held-out prompt")
    steer = sub.add_parser("steerable")
    steer.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of the student")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    commands = {"prepare": cmd_prepare, "sweep": cmd_sweep, "train": cmd_train, "claims": cmd_claims}
    commands.update(steerable=cmd_steerable, audio=cmd_audio)
    commands[args.command](args)


if __name__ == "__main__":
    main()
