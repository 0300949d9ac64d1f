"""Steerable one-pass student vs CFG, the merged (LERP) front and temperature/top-p, on one domain.

    python examples/steerable_study.py                                  # the built-in SyntheticMusic
    python examples/steerable_study.py --domain lightning_cfgrl.experiments.HMMMusic \\
        --configs examples/configs/hmm --name hmm

Stages (ordinary ``cfgrl`` commands run with ``--workdir`` as the working directory, so each domain keeps
its own ``runs/``; a stage whose ``runs/<stage>/checkpoints/last.ckpt`` exists is reused):
``pretrain.yaml`` (base), ``embedder.yaml`` (reward embedder), ``distill_beta0.yaml`` and
``distill_beta15.yaml`` (the two-model recipe), ``cfgrl merge`` (LERP, lambda 0..1), ``steerable.yaml``
(one run, g and beta as inputs). Then every candidate is sampled on the held-out prompts with
``evaluate_candidate`` over fixed evaluation seeds:

* the base with CFG, g in {1, 1.5, 2, 3, 4, 5, 7} (2 forward passes per token; 1 at g = 1),
* the base with temperature / top-p (1 pass),
* the merged models, lambda in {0, 0.25, 0.5, 0.75, 1} (1 pass),
* the steerable student at control g in {1, 1.5, 2, 3, 4, 5} x diversity weight in {0, 5, 10, 15} (1 pass).

Reported: each front's hypervolume (reference point: chance adherence log 1/P, diversity 0), the
steerable front minus each other front per evaluation seed (mean ± SE; "beyond 2 SE" when mean > 2 SE),
and for g in {1.5, 2, 3, 5} the student's adherence (control g, diversity weight 0) as a fraction of
CFG-at-g's gain over chance; the training cost (wall time of each ``cfgrl fit`` stage, steps) of the
steerable run beside the two-model recipe. Writes ``benchmarks/results/steerable_<name>.json`` and
``docs/images/steerable_<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.machine

from benchmarks.machine import describe_machine, save_result  # noqa: E402
from lightning_cfgrl.cli.main import main as cfgrl  # noqa: E402
from lightning_cfgrl.core.controls import DIVERSITY, GUIDANCE  # noqa: E402
from lightning_cfgrl.core.sampling import SamplingConfig  # noqa: E402
from lightning_cfgrl.embedders import TokenHistogramEmbedder  # noqa: E402
from lightning_cfgrl.eval.candidates import CandidateResult, evaluate_candidate  # noqa: E402
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front  # noqa: E402
from lightning_cfgrl.experiments import LogLikelihood, PromptAdherence, SyntheticPromptDataModule  # noqa: E402
from lightning_cfgrl.io.checkpoints import load_checkpoint  # noqa: E402
from lightning_cfgrl.io.generators import load_generator  # noqa: E402
from lightning_cfgrl.io.specs import instantiate_spec  # noqa: E402

# fixed before any run
EVAL_SEEDS = (0, 1, 2, 3, 4)
NUM_SAMPLES = 16
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
TEMPERATURES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
TOP_PS = (0.9, 0.8, 0.6)
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
CONTROL_G = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
CONTROL_BETA = (0.0, 5.0, 10.0, 15.0)
TABLE_G = (1.5, 2.0, 3.0, 5.0)
FRONTS = {
    "cfg": ("cfg",),
    "temperature": ("temperature", "top_p"),
    "merged": ("merged",),
    "steerable": ("steerable",),
}
STAGES = {
    "base": "pretrain",
    "embedder": "embedder",
    "distill_beta0": "distill_beta0",
    "distill_beta15": "distill_beta15",
    "steerable": "steerable",
}


@contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_stage(run: str, argv: list[str], times: dict[str, Any]) -> None:
    """Run ``cfgrl <argv>`` unless ``runs/<run>`` has its output; record its wall time (in the cwd)."""
    done = (
        Path("runs", run, "checkpoints", "last.ckpt")
        if argv[0] == "fit"
        else Path("runs", run, "merged_lambda=1.00.json")
    )
    if done.exists():
        print(f"[{run}] cached ({done})", flush=True)
        return
    print(f"[{run}] cfgrl {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = cfgrl(argv)
    if code:
        raise SystemExit(f"[{run}] failed with exit code {code}")
    times[run] = time.perf_counter() - start
    Path("stage_times.json").write_text(json.dumps(times, indent=1))
    print(f"[{run}] done in {times[run]:.0f} s", flush=True)


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def front_hypervolumes(members: list[CandidateResult], reference: tuple[float, float]) -> list[float]:
    """Hypervolume of the members' front, one per evaluation seed (paired across fronts)."""
    out = []
    for s in range(len(EVAL_SEEDS)):
        points = [(m.per_seed["adherence"][s], m.per_seed["diversity"][s]) for m in members]
        out.append(hypervolume_2d([points[i] for i in pareto_front(points)], reference))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--domain", default="lightning_cfgrl.experiments.SyntheticMusic", help="domain class_path"
    )
    parser.add_argument("--configs", default=str(ROOT / "examples/configs"), help="folder of the stage YAMLs")
    parser.add_argument("--name", default="synthetic", help="suffix of the JSON and PNG written")
    parser.add_argument(
        "--workdir",
        default=None,
        help="working directory of the stages (default runs/steerable_study/<name>)",
    )
    parser.add_argument(
        "--fit-args", default="", help='extra arguments for every cfgrl fit: --fit-args="--trainer.x=1 ..."'
    )
    args = parser.parse_args()
    configs = Path(args.configs).resolve()
    workdir = Path(args.workdir or ROOT / "runs" / "steerable_study" / args.name).resolve()

    with working_directory(workdir):
        times: dict[str, Any] = (
            json.loads(Path("stage_times.json").read_text()) if Path("stage_times.json").exists() else {}
        )
        for run, config in STAGES.items():
            run_stage(
                run, ["fit", "--config", str(configs / f"{config}.yaml"), *args.fit_args.split()], times
            )
        run_stage(
            "merged",
            [
                "merge",
                "--quality",
                "runs/distill_beta0/checkpoints/last.ckpt",
                "--diversity",
                "runs/distill_beta15/checkpoints/last.ckpt",
                "--lambdas",
                ",".join(f"{x:g}" for x in LAMBDAS),
                "--out",
                "runs/merged",
            ],
            times,
        )
        steps = {
            run: int(load_checkpoint(f"runs/{run}/checkpoints/last.ckpt")["global_step"])
            for run in ("distill_beta0", "distill_beta15", "steerable")
        }
        base = load_generator("runs/base/checkpoints/last.ckpt")
        student = load_generator("runs/steerable/checkpoints/last.ckpt")
        merged = {
            lam: load_generator(next(Path("runs/merged").glob(f"*lambda={lam:.2f}.ckpt"))) for lam in LAMBDAS
        }

    torch.manual_seed(0)
    domain = instantiate_spec({"class_path": args.domain})
    prompts = SyntheticPromptDataModule(domain).heldout_prompts
    chance = math.log(1 / domain.num_prompts)
    reference = (chance, 0.0)
    scorers = [PromptAdherence(domain), LogLikelihood(domain)]
    embedder = TokenHistogramEmbedder(domain.vocab_size)  # not the reward's embedder

    plan: list[tuple[str, str, Any, SamplingConfig, dict | None]] = []
    plan += [(f"CFG g={g:g}", "cfg", base, SamplingConfig(guidance_scale=g), None) for g in GUIDANCE_SWEEP]
    plan += [
        (f"temperature {t:g}", "temperature", base, SamplingConfig(temperature=t), None) for t in TEMPERATURES
    ]
    plan += [(f"top-p {p:g}", "top_p", base, SamplingConfig(top_p=p), None) for p in TOP_PS]
    plan += [
        (f"merged lambda={lam:g}", "merged", model, SamplingConfig(), None) for lam, model in merged.items()
    ]
    plan += [
        (f"steerable g={g:g} w={w:g}", "steerable", student, SamplingConfig(), {GUIDANCE: g, DIVERSITY: w})
        for g in CONTROL_G
        for w in CONTROL_BETA
    ]
    results, families = [], {}
    start = time.perf_counter()
    for name, family, model, config, controls in plan:
        results.append(
            evaluate_candidate(
                name,
                model,
                prompts,
                domain.num_frames,
                config,
                scorers,
                embedder,
                num_samples=NUM_SAMPLES,
                seeds=EVAL_SEEDS,
                controls=controls,
            )
        )
        families[name] = family
        adherence, diversity = results[-1].metrics["adherence"], results[-1].metrics["diversity"]
        print(
            f"{name:28s} adherence {adherence[0]:7.3f} ± {adherence[1]:.3f}  diversity {diversity[0]:.3f} ± {diversity[1]:.3f}",
            flush=True,
        )
    print(f"evaluated {len(plan)} candidates in {time.perf_counter() - start:.0f} s")

    by_name = {r.name: r for r in results}
    hv = {
        front: front_hypervolumes([r for r in results if families[r.name] in fams], reference)
        for front, fams in FRONTS.items()
    }
    comparisons = {
        other: mean_se([a - b for a, b in zip(hv["steerable"], hv[other], strict=True)])
        for other in ("cfg", "merged", "temperature")
    }
    per_g = []
    for g in TABLE_G:
        s, c = by_name[f"steerable g={g:g} w=0"], by_name[f"CFG g={g:g}"]
        fractions = [
            (a - chance) / (b - chance)
            for a, b in zip(s.per_seed["adherence"], c.per_seed["adherence"], strict=True)
        ]
        gaps = [
            (a - chance) - 0.95 * (b - chance)
            for a, b in zip(s.per_seed["adherence"], c.per_seed["adherence"], strict=True)
        ]
        per_g.append(
            {
                "g": g,
                "student_adherence": s.metrics["adherence"],
                "cfg_adherence": c.metrics["adherence"],
                "fraction_of_cfg_gain": mean_se(fractions),
                "margin_over_95_percent": mean_se(gaps),
                "student_diversity": s.metrics["diversity"],
                "cfg_diversity": c.metrics["diversity"],
            }
        )

    lines = [
        f"## {args.name}: fronts (hypervolume, reference ({chance:.3f}, 0); {len(EVAL_SEEDS)} seeds x {len(prompts)} held-out prompts x {NUM_SAMPLES} samples)",
        "",
        "| front | passes/token | hypervolume | steerable minus it | beyond 2 SE? |",
        "|---|---|---|---|---|",
    ]
    passes = {
        "cfg": "2 (1 at g=1)",
        "temperature": "1",
        "merged": "1 (two training runs)",
        "steerable": "1 (one training run)",
    }
    for front, values in hv.items():
        m, se = mean_se(values)
        if front == "steerable":
            lines.append(f"| steerable | {passes[front]} | {m:.3f} ± {se:.3f} | — | — |")
        else:
            d, dse = comparisons[front]
            verdict = (
                "yes (steerable better)"
                if d > 2 * dse
                else ("no: it is better" if -d > 2 * dse else "no (within 2 SE)")
            )
            lines.append(
                f"| {front} | {passes[front]} | {m:.3f} ± {se:.3f} | {d:+.3f} ± {dse:.3f} | {verdict} |"
            )
    lines += [
        "",
        "| g | student (control g, w=0) adherence | CFG g adherence | fraction of CFG's gain over chance | >= 95 % beyond 2 SE? | student / CFG diversity |",
        "|---|---|---|---|---|---|",
    ]
    for row in per_g:
        f, fse = row["fraction_of_cfg_gain"]
        gap, gse = row["margin_over_95_percent"]
        lines.append(
            f"| {row['g']:g} | {row['student_adherence'][0]:.3f} ± {row['student_adherence'][1]:.3f} | "
            f"{row['cfg_adherence'][0]:.3f} ± {row['cfg_adherence'][1]:.3f} | {100 * f:.0f} % ± {100 * fse:.0f} | "
            f"{'yes' if gap > 2 * gse else 'no'} | {row['student_diversity'][0]:.3f} / {row['cfg_diversity'][0]:.3f} |"
        )
    two_model = {k: times.get(k) for k in ("distill_beta0", "distill_beta15")}
    cost = {
        "steerable": {"steps": steps["steerable"], "wall_s": times.get("steerable")},
        "two_model_recipe": {
            "steps": steps["distill_beta0"] + steps["distill_beta15"],
            "wall_s": sum(two_model.values()) if None not in two_model.values() else None,
            "per_run": {k: {"steps": steps[k], "wall_s": v} for k, v in two_model.items()},
        },
    }
    fmt = lambda s: f"{s:.0f} s" if s is not None else "n/a (cached run)"  # noqa: E731
    lines += [
        "",
        "| training | steps | wall time (cfgrl fit, incl. validation) |",
        "|---|---|---|",
        f"| steerable (one run) | {cost['steerable']['steps']} | {fmt(cost['steerable']['wall_s'])} |",
        f"| beta=0 + beta=15 (two runs, then merge) | {cost['two_model_recipe']['steps']} | {fmt(cost['two_model_recipe']['wall_s'])} |",
    ]
    table = "\n".join(lines)

    from lightning_cfgrl.eval.plotting import plot_quality_diversity

    fronts = {}
    for front, fams in FRONTS.items():
        members = [i for i, r in enumerate(results) if families[r.name] in fams]
        points = [(results[i].metrics["adherence"][0], results[i].metrics["diversity"][0]) for i in members]
        fronts[front] = [members[j] for j in pareto_front(points)]
    fig = plot_quality_diversity(results, families, "adherence", fronts, reference)
    fig.axes[0].set_title(f"Steerable student vs CFG, merged and temperature/top-p ({args.name})")
    image = ROOT / "docs" / "images" / f"steerable_{args.name}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image.with_suffix(".tmp.png"), dpi=120)
    image.with_suffix(".tmp.png").replace(image)

    result = {
        "domain": args.domain,
        "configs": str(configs),
        "eval_seeds": list(EVAL_SEEDS),
        "num_heldout_prompts": len(prompts),
        "num_samples": NUM_SAMPLES,
        "chance_adherence": chance,
        "reference_point": reference,
        "hypervolumes_per_seed": hv,
        "steerable_minus_front": {k: {"mean": m, "se": se} for k, (m, se) in comparisons.items()},
        "per_g": per_g,
        "training_cost": cost,
        "results": [dict(r.as_dict(), family=families[r.name]) for r in results],
        "machine": describe_machine(),
        "plot": str(image.relative_to(ROOT)),
    }
    save_result(result, str(ROOT / "benchmarks" / "results" / f"steerable_{args.name}.json"), table)


if __name__ == "__main__":
    main()
