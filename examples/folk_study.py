"""Real music: the shipped recipe on folk tunes of the Essen collection (music21's corpus; the optional
extra ``pip install -e ".[music]"``), judged by models and rules nobody trained to agree with the student.

    python examples/folk_study.py prepare   # parse (cached), judge, base (<= 10 min CPU), reward embedder
    python examples/folk_study.py sweep     # CFG vs temperature / top-p on the held-out prompts
    python examples/folk_study.py train --seeds 0 1 2   # the beta=0 / beta=15 / placebo students (cached)
    python examples/folk_study.py claims    # students (trained if not cached), merges, the claims table

Protocol (as examples/recipe_study.py; fixed before any run): the recipe is the shipped one
(examples/configs/distill_*.yaml; nothing is tuned on this domain), claims are measured on the corpus's
HELD-OUT prompts with the package's 5 evaluation seeds, the best temperature/top-p point is chosen on the
selection seeds, quality is the judge's adherence (chance log 1/P), diversity is measured by
``MelodyProfileEmbedder`` (interval/duration/position/pitch-class profiles, independent of the reward's
contrastive embedder) and by the reward's own embedder. The judge is trained on tunes the generator never
saw and tested on tunes neither saw. Outputs: ``benchmarks/results/real_music_{setup,sweep,claims}.json``,
models under ``runs/folk_study/``, audio (WAV + MIDI) under ``runs/folk_study/audio`` and in TensorBoard.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import lightning.pytorch as pl
import torch
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import recipe_study as rs  # noqa: E402  (the protocol, Recipe, pooling and per-seed claims)

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DiversityRewardCallback  # noqa: E402
from lightning_cfgrl.core.sampling import SamplingConfig  # noqa: E402
from lightning_cfgrl.embedders import ContrastiveEmbedderModule, ContrastiveTokenEmbedder  # noqa: E402
from lightning_cfgrl.embedders.contrastive_training import triplet_accuracy  # noqa: E402
from lightning_cfgrl.eval.candidates import CandidateResult, evaluate_candidate  # noqa: E402
from lightning_cfgrl.eval.claims import ClaimInputs, check_claims, format_claims  # noqa: E402
from lightning_cfgrl.eval.machine import describe_machine  # noqa: E402
from lightning_cfgrl.experiments.folk import (  # noqa: E402
    FolkCorpus,
    FolkJudgeAdherence,
    FolkPromptDataModule,
    FolkRenderer,
    FolkTuneDataModule,
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
from lightning_cfgrl.io.checkpoints import atomic_save_json  # noqa: E402
from lightning_cfgrl.merging.streaming import merge_state_dicts  # noqa: E402
from lightning_cfgrl.models import AudioTokenTransformer  # noqa: E402
from lightning_cfgrl.training.pretrain import PretrainModule  # noqa: E402

# examples/configs/folk/*.yaml hold the same settings
COLLECTIONS = ("han1", "han2", "lux", "lot", "zuccal0")  # China, Luxembourg, Lorraine, Germany
MIN_TUNES = 40
GENERATOR = dict(num_codebooks=2, vocab_size=40, dim=64, num_layers=3, num_heads=4, max_frames=48)
NUM_FRAMES = 48  # three 4/4 bars, four 3/4 or 6/8 bars, six 2/4 bars
PRETRAIN = dict(steps=1000, learning_rate=3e-3, batch_size=64, condition_dropout=0.2)
EMBEDDER = dict(num_codebooks=2, vocab_size=40, dim=96, embed_dim=64, num_layers=2, kernel_size=5)
EMBEDDER_STEPS, CHUNK_FRAMES = 400, 24
JUDGE_STEPS = 1500
CACHE = Path("runs/folk_study")
RESULTS = Path("benchmarks/results")


def corpus() -> FolkCorpus:
    return FolkCorpus(collections=list(COLLECTIONS), num_frames=NUM_FRAMES, min_tunes=MIN_TUNES)


def generator(data: FolkCorpus) -> AudioTokenTransformer:
    return AudioTokenTransformer(condition_sizes=list(data.attribute_sizes), **GENERATOR)


def config() -> dict:
    return {
        "collections": COLLECTIONS,
        "min_tunes": MIN_TUNES,
        "num_frames": NUM_FRAMES,
        "generator": GENERATOR,
        "pretrain": PRETRAIN,
        "embedder": EMBEDDER,
        "embedder_steps": EMBEDDER_STEPS,
        "chunk_frames": CHUNK_FRAMES,
        "judge_steps": JUDGE_STEPS,
        "trainer": rs.SHIPPED_TRAINER,
    }


def git_state() -> dict:
    """The commit the numbers came from, and whether the tree had uncommitted changes."""
    import subprocess

    def run(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty": bool(run("status", "--porcelain", "--untracked-files=no")),
    }


def provenance() -> dict:
    return {"git": git_state(), "machine": describe_machine(), "config": config()}


# -- prepare -----------------------------------------------------------------------------------------
def rule_accuracies(data: FolkCorpus) -> dict:
    """The rule judges as classifiers on the test tunes: meter = the corpus meter with the best
    alignment; major vs minor = the sign of the key-profile difference (major and minor tunes only)."""
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
    predicted = ["major" if major[i] > minor[i] else "minor" for i in rows]
    mode_acc = sum(p == modes[i] for p, i in zip(predicted, rows, strict=True)) / max(len(rows), 1)
    majority = max(modes.count("major"), modes.count("minor")) / max(len(rows), 1)
    return {
        "meter_rule_accuracy": meter_acc,
        "meter_chance": 1 / len(meters),
        "mode_rule_accuracy_major_vs_minor": mode_acc,
        "mode_majority_rate": majority,
        "test_tunes": len(truth),
    }


def cmd_prepare(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    data = corpus()
    stats = data.statistics()
    stats["prompt_table"] = [
        {"prompt": ", ".join(c), "tunes": n}
        for c, n in zip(data.prompt_table.combos, data.prompt_table.counts, strict=True)
    ]
    print(
        f"corpus: {stats['tunes_parsed']} tunes, {stats['prompts']} prompts, {stats['tokens']} tokens "
        f"({time.perf_counter() - start:.0f} s to load)",
        flush=True,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    cpu = time.process_time()
    if (CACHE / "judge.safetensors").exists():
        judge, prior, _ = load_judge(CACHE / "judge.safetensors", data)
    else:
        judge, prior = train_judge(data, steps=JUDGE_STEPS)
    temperature = calibrate_temperature(judge, prior, data, "generator")
    save_judge(judge, prior, data, CACHE / "judge.safetensors", temperature)
    judge_cpu = time.process_time() - cpu
    accuracy = judge_accuracy(judge, prior, data, "test", temperature)
    accuracy["uncalibrated"] = judge_accuracy(judge, prior, data, "test")
    rules = rule_accuracies(data)
    print(f"judge: {accuracy}\nrules: {rules}", flush=True)

    if args.judge_only:  # recalibrate a trained judge; the rest is cached
        setup = RESULTS / "real_music_setup.json"
        saved = json.loads(setup.read_text())
        saved.update(judge_heldout=accuracy, rule_judges_heldout=rules, **provenance())
        atomic_save_json(saved, setup)
        return
    pl.seed_everything(0)
    base = generator(data)
    module = PretrainModule(
        base, condition_dropout=PRETRAIN["condition_dropout"], learning_rate=PRETRAIN["learning_rate"]
    )
    wall, cpu = time.perf_counter(), time.process_time()
    rs.quiet_trainer(max_steps=PRETRAIN["steps"]).fit(
        module, FolkTuneDataModule(data, PRETRAIN["batch_size"])
    )
    base_wall, base_cpu = time.perf_counter() - wall, time.process_time() - cpu
    save_file(base.state_dict(), str(CACHE / "base.safetensors"))
    print(f"base: {PRETRAIN['steps']} steps in {base_wall:.0f} s wall, {base_cpu:.0f} s CPU", flush=True)

    pl.seed_everything(0)
    embedder = ContrastiveTokenEmbedder(**EMBEDDER)
    emb_module = ContrastiveEmbedderModule(embedder, chunk_frames=CHUNK_FRAMES, learning_rate=3e-3)
    cpu = time.process_time()
    rs.quiet_trainer(max_steps=EMBEDDER_STEPS).fit(emb_module, FolkTuneDataModule(data, 64))
    embedder_cpu = time.process_time() - cpu
    save_file(embedder.state_dict(), str(CACHE / "embedder.safetensors"))
    test_frames, _ = data.data("test")
    triplet = float(
        triplet_accuracy(embedder.eval(), test_frames, CHUNK_FRAMES, torch.Generator().manual_seed(0))
    )
    print(f"reward embedder: triplet accuracy {triplet:.3f} on the test tunes", flush=True)
    atomic_save_json(
        {
            "corpus": stats,
            "judge_heldout": accuracy,
            "rule_judges_heldout": rules,
            "reward_embedder_triplet_accuracy": triplet,
            "cpu_seconds": {"judge": judge_cpu, "base": base_cpu, "embedder": embedder_cpu},
            "wall_seconds": {"base": base_wall},
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
        return evaluate_candidate(
            name,
            model,
            self.data.heldout_prompts,
            self.data.num_frames,
            config or SamplingConfig(),
            self.scorers,
            self.embedders,
            num_samples=self.samples,
            seeds=self.seeds,
            family=family,
        )

    def adherence(self, model: nn.Module, config: SamplingConfig) -> float:
        return self("", model, config).mean("adherence")


def load_base(data: FolkCorpus) -> AudioTokenTransformer:
    model = generator(data)
    model.load_state_dict(load_file(str(CACHE / "base.safetensors")))
    return model.eval()


def load_reward() -> ContrastiveTokenEmbedder:
    embedder = ContrastiveTokenEmbedder(**EMBEDDER)
    embedder.load_state_dict(load_file(str(CACHE / "embedder.safetensors")))
    return embedder.eval()


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


def saved_sweep(data, base, evaluator, selector):
    """The sweep that ``sweep`` saved (same commit's settings), else computed again."""
    path = RESULTS / "real_music_sweep.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config") == json.loads(json.dumps(config())):
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
    verdict = rs.paired_t_test(d)
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
            **provenance(),
        },
        RESULTS / "real_music_sweep.json",
    )
    log_audio(data, {"base": base, "cfg3": base}, {"cfg3": SamplingConfig(guidance_scale=3.0)})


# -- claims ---------------------------------------------------------------------------------------------
def train_student(data, state, embedder, recipe: rs.Recipe, seed: int) -> tuple[AudioTokenTransformer, float]:
    """As examples/configs/folk/distill_*.yaml (the shipped recipe), on the corpus's train prompts."""
    merged = {**rs.SHIPPED_TRAINER, **{k: v for k, v in asdict(recipe).items() if v is not None}}
    pl.seed_everything(seed)
    model = generator(data)
    model.load_state_dict(state)
    module = CFGRLModule(
        model,
        seed=seed,
        rollout={"num_frames": data.num_frames, "num_samples_per_prompt": merged["group_size"]},
    )
    callbacks: list[pl.Callback] = [CFGDistillCallback(guidance_scale=rs.REFERENCE_GUIDANCE)]
    if recipe.beta > 0:
        callbacks.append(
            DiversityRewardCallback(
                embedder,
                beta=recipe.beta,
                shuffle_rewards=recipe.shuffle_rewards,
                seed=seed,
                log_grad_norm=False,
            )
        )
    prompts = FolkPromptDataModule(data, batch_size=merged["prompts_per_batch"], shuffle_seed=seed)
    cpu = time.process_time()
    rs.quiet_trainer(max_steps=merged["steps"], callbacks=callbacks).fit(module, prompts)
    return model.eval(), time.process_time() - cpu


def cached_student(data, state, embedder, recipe, seed, key: str):
    path = CACHE / "students" / f"{key}_seed{seed}.safetensors"
    model = generator(data)
    if path.exists():
        tensors = load_file(str(path))
        cpu = float(tensors.pop("cpu_seconds"))
        model.load_state_dict(tensors)
        return model.eval(), cpu
    model, cpu = train_student(data, state, embedder, recipe, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({**model.state_dict(), "cpu_seconds": torch.tensor(cpu)}, str(path))
    return model, cpu


KINDS = {
    "beta=0": rs.Recipe(),
    "beta=15": rs.Recipe(beta=15.0),
    "placebo": rs.Recipe(beta=15.0, shuffle_rewards=True),
}


def cmd_train(args: argparse.Namespace) -> None:
    """Train (and cache) the three students of the given training seeds, e.g. beside ``sweep``."""
    data = corpus()
    state = load_base(data).state_dict()
    reward = load_reward() if any(KINDS[k].beta > 0 for k in args.kinds) else None
    for seed in args.seeds:
        for key in args.kinds:
            recipe = KINDS[key]
            _, cpu = cached_student(data, state, reward, recipe, seed, key.replace("=", ""))
            print(f"trained {key} seed {seed}: {cpu:.0f} CPU s", flush=True)


def cmd_claims(args: argparse.Namespace) -> None:
    data = corpus()
    base = load_base(data)
    reward = load_reward()
    evaluator = Evaluator(data, rs.EVAL_SEEDS, reward)
    selector = Evaluator(data, rs.SELECTION_SEEDS)
    chance = evaluator.chance
    cfg, sampling, best = saved_sweep(data, base, evaluator, selector)
    state = base.state_dict()
    kinds = KINDS
    trained = {k: [] for k in kinds}
    seconds = {k: [] for k in kinds}
    merged = {lam: [] for lam in rs.MERGE_LAMBDAS}
    seeds = rs.TRAIN_SEEDS[: args.train_seeds]
    for seed in seeds:
        states = {}
        for key, recipe in kinds.items():
            model, cpu = cached_student(data, state, reward, recipe, seed, key.replace("=", ""))
            states[key] = {k: v.clone() for k, v in model.state_dict().items()}
            seconds[key].append(cpu)
            trained[key].append(evaluator(f"{key} seed {seed}", model, family="distilled"))
            print(
                f"trained {key} seed {seed}: {cpu:.0f} CPU s; adherence {trained[key][-1].mean('adherence'):.3f}",
                flush=True,
            )
        for lam in rs.MERGE_LAMBDAS:
            if lam in (0.0, 1.0):  # the students themselves: same seeds, same samples; not sampled twice
                same = trained["beta=0" if lam == 0.0 else "beta=15"][-1]
                merged[lam].append(replace(same, name=f"merged {lam:g} seed {seed}", family="merged"))
                continue
            model = generator(data)
            model.load_state_dict(merge_state_dicts(states["beta=0"], states["beta=15"], lam))
            merged[lam].append(evaluator(f"merged {lam:g} seed {seed}", model.eval(), family="merged"))
    quality = rs.pooled("distilled beta=0", trained["beta=0"], "distilled")
    diversity = rs.pooled("distilled beta=15", trained["beta=15"], "distilled")
    placebo = rs.pooled("placebo (shuffled rewards)", trained["placebo"], "placebo")
    merged_pooled = [rs.pooled(f"merged lambda={lam:g}", merged[lam], "merged") for lam in rs.MERGE_LAMBDAS]
    reference = cfg[rs.GUIDANCE_SWEEP.index(rs.REFERENCE_GUIDANCE)]
    claims = check_claims(
        ClaimInputs(
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
    )
    gain = reference.mean("adherence") - chance
    if len(seeds) >= 2:
        claims.append(
            rs.over_training_seeds(
                "a_train_seeds",
                f"beta=0 reaches {rs.FRACTION:.0%} of {reference.name}'s gain (per training seed)",
                [(m.mean("adherence") - chance) - rs.FRACTION * gain for m in trained["beta=0"]],
                "adherence",
                "fractions "
                + ", ".join(f"{(m.mean('adherence') - chance) / gain:.1%}" for m in trained["beta=0"]),
            )
        )
        for metric in ("diversity", "reward_diversity"):
            b, p = ([m.mean(metric) for m in trained[k]] for k in ("beta=15", "placebo"))
            claims.append(
                rs.over_training_seeds(
                    "b_vs_placebo_train_seeds",
                    "beta=15 more diverse than its placebo (per training seed)",
                    [x - y for x, y in zip(b, p, strict=True)],
                    metric,
                    ", ".join(f"{x:.4f} vs {y:.4f}" for x, y in zip(b, p, strict=True)),
                )
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
            "domain": "folk (Essen: " + ", ".join(COLLECTIONS) + ")",
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
            "recipe": asdict(rs.Recipe()),
            "trainer": rs.SHIPPED_TRAINER,
            "beta": 15.0,
            "train_cpu_seconds": seconds,
            "results": [r.as_dict() for r in everything],
            "per_training_seed": {k: [r.as_dict() for r in v] for k, v in trained.items()},
            "best_sampling": sampling[best].name,
            "fraction_of_cfg_gain_beta0": fraction,
            "claims": [c.as_dict() for c in claims],
            **provenance(),
        },
        RESULTS / "real_music_claims.json",
    )
    log_audio(
        data,
        {"beta0": trained_model(data, "beta0"), "beta15": trained_model(data, "beta15")},
        {},
    )


def trained_model(data, key: str) -> AudioTokenTransformer:
    model = generator(data)
    tensors = load_file(str(CACHE / "students" / f"{key}_seed{rs.TRAIN_SEEDS[0]}.safetensors"))
    tensors.pop("cpu_seconds")
    model.load_state_dict(tensors)
    return model.eval()


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
    train.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="which students")
    claims = sub.add_parser("claims")
    claims.add_argument("--train_seeds", type=int, default=3, help="training seeds per student (1-3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    {"prepare": cmd_prepare, "sweep": cmd_sweep, "train": cmd_train, "claims": cmd_claims}[args.command](args)


if __name__ == "__main__":
    main()
