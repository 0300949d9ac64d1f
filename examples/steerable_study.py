"""Steerable one-pass student vs CFG, the merged (LERP) front and temperature/top-p, on one built-in domain.

    python examples/steerable_study.py                                   # SyntheticMusic
    python examples/steerable_study.py --domain lightning_cfgrl.experiments.HMMMusic \\
        --configs examples/configs/hmm --name hmm

Stages (ordinary ``cfgrl`` commands, run with ``--workdir`` as the working directory so each domain keeps
its own ``runs/``; a stage whose output exists is reused): ``pretrain.yaml`` (base), ``embedder.yaml``
(the reward's embedder), ``distill_beta0.yaml`` and ``distill_beta15.yaml`` (the two-model recipe),
``cfgrl merge`` (LERP, lambda 0..1), ``steerable.yaml`` (one run, g and beta as inputs). Then one
:class:`~lightning_cfgrl.eval.Evaluation` (what ``cfgrl evaluate`` runs) samples every candidate on the
held-out prompts over the fixed evaluation seeds: the base with CFG (2 passes per token, 1 at g = 1),
with temperature / top-p, the two distilled models, the merged models, and the steerable student at
control g x diversity weight (1 pass). Its claims include, for the steerable student, ``s_g=<g>`` (the
student at control g, diversity weight 0, reaches 95 % of CFG-at-g's adherence gain over chance) and
``s_front*`` (its front's hypervolume vs the CFG, merged and temperature/top-p fronts), each with the
2-SE rule and a paired t-test over the seeds. The training cost (wall time of each ``cfgrl fit``, steps)
of the steerable run is reported beside the two-model recipe's.

Writes ``benchmarks/results/steerable_<name>.json`` (the evaluation's results.json plus the training cost
and the machine) and ``docs/images/steerable_<name>.png``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from lightning_cfgrl.cli.main import main as cfgrl
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder, TokenHistogramEmbedder
from lightning_cfgrl.eval import Candidates, Evaluation, EvaluationOutput, EvaluationProtocol, PromptSource
from lightning_cfgrl.eval.candidates import DIVERSITY
from lightning_cfgrl.eval.claims import format_claims
from lightning_cfgrl.eval.plotting import plot_quality_diversity
from lightning_cfgrl.eval.report import report_dict
from lightning_cfgrl.experiments import LogLikelihood, PromptAdherence, SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import atomic_save_json, atomic_write, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# fixed before any run (the evaluation seeds themselves are fixed in lightning_cfgrl/eval/protocol.py)
NUM_SEEDS, NUM_SAMPLES = 5, 16
GUIDANCE_SWEEP = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0]
TEMPERATURES, TOP_PS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.9, 0.8, 0.6]
LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]
CONTROL_G = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]  # the training range of steerable.yaml: [1, 5]
CONTROL_W = [0.0, 5.0, 10.0, 15.0]  # the training range: [0, 15]
STAGES = ("pretrain", "embedder", "distill_beta0", "distill_beta15", "steerable")  # configs, in order
TWO_MODEL = ("distill_beta0", "distill_beta15")


@contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_stage(run: str, argv: list[str], times: dict[str, Any], max_steps: int | None = None) -> None:
    """``cfgrl <argv>`` unless ``runs/<run>`` holds its finished output; record its wall time (cwd-relative).
    A fit whose periodic ``last.ckpt`` stopped short of ``max_steps`` (a killed run) is started again."""
    done = Path("runs", run, "checkpoints", "last.ckpt") if argv[0] == "fit" else Path("runs", run)
    if done.exists() and argv[0] == "fit" and int(load_checkpoint(done)["global_step"]) < (max_steps or 0):
        print(f"[{run}] {done} stopped short of {max_steps} steps: training again", flush=True)
        shutil.rmtree(Path("runs", run))
    elif done.exists():
        print(f"[{run}] cached ({done})", flush=True)
        return
    print(f"[{run}] cfgrl {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = cfgrl(argv)
    if code:
        raise SystemExit(f"[{run}] failed with exit code {code}")
    times[run] = time.perf_counter() - start
    atomic_save_json(times, "stage_times.json")
    print(f"[{run}] done in {times[run]:.0f} s", flush=True)


def run_name(config: Path) -> tuple[str, int]:
    """The run a stage config writes to (its logger's name: ``runs/<name>/checkpoints/last.ckpt``) and
    its ``max_steps``."""
    trainer = yaml.safe_load(config.read_text())["trainer"]
    return trainer["logger"]["init_args"]["name"], int(trainer["max_steps"])


def cost_table(times: dict[str, Any], steps: dict[str, int], runs: dict[str, str]) -> tuple[dict, str]:
    def wall(stages: tuple[str, ...]) -> float | None:
        values = [times.get(runs[s]) for s in stages]
        return None if None in values else sum(values)

    cost = {
        "steerable": {"steps": steps["steerable"], "wall_s": times.get(runs["steerable"])},
        "two_model_recipe": {
            "steps": sum(steps[s] for s in TWO_MODEL),
            "wall_s": wall(TWO_MODEL),
            "runs": {runs[s]: {"steps": steps[s], "wall_s": times.get(runs[s])} for s in TWO_MODEL},
        },
    }

    def fmt(seconds: float | None) -> str:
        return f"{seconds:.0f} s" if seconds is not None else "n/a (reused run)"

    table = "\n".join(
        [
            "| training | runs | steps | wall time (cfgrl fit, with validation) |",
            "|---|---|---|---|",
            f"| steerable student | 1 | {cost['steerable']['steps']} | {fmt(cost['steerable']['wall_s'])} |",
            f"| beta = 0 and beta = 15 students (then merged) | 2 | {cost['two_model_recipe']['steps']} | "
            f"{fmt(cost['two_model_recipe']['wall_s'])} |",
        ]
    )
    return cost, table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domain", default="lightning_cfgrl.experiments.SyntheticMusic", help="domain class")
    parser.add_argument("--configs", default=str(ROOT / "examples/configs"), help="folder of the stage YAMLs")
    parser.add_argument("--name", default="synthetic", help="suffix of the JSON and PNG written")
    parser.add_argument(
        "--workdir", default=None, help="where the stages run (default runs/steerable_study/<name>)"
    )
    parser.add_argument(
        "--fit-args", default="", help='extra arguments for every cfgrl fit: --fit-args="--trainer.x=1 ..."'
    )
    args = parser.parse_args()
    configs = Path(args.configs).resolve()
    workdir = Path(args.workdir or ROOT / "runs" / "steerable_study" / args.name).resolve()
    module_name, _, class_name = args.domain.rpartition(".")
    domain = getattr(importlib.import_module(module_name), class_name)()
    runs, max_steps = {}, {}
    for stage in STAGES:
        runs[stage], max_steps[stage] = run_name(configs / f"{stage}.yaml")
    ckpt = {stage: f"runs/{run}/checkpoints/last.ckpt" for stage, run in runs.items()}
    merged = f"runs/{runs['pretrain'].removesuffix('base')}merged"  # runs/merged, runs/hmm_merged

    with working_directory(workdir):
        times: dict[str, Any] = (
            json.loads(Path("stage_times.json").read_text()) if Path("stage_times.json").exists() else {}
        )
        for stage in STAGES:
            fit = ["fit", "--config", str(configs / f"{stage}.yaml"), *args.fit_args.split()]
            run_stage(runs[stage], fit, times, max_steps[stage])
        lambdas = ",".join(f"{x:g}" for x in LAMBDAS)
        merge = ["merge", "--quality", ckpt["distill_beta0"], "--diversity", ckpt["distill_beta15"]]
        run_stage(Path(merged).name, [*merge, "--lambdas", lambdas, "--out", merged], times)
        steps = {stage: int(load_checkpoint(path)["global_step"]) for stage, path in ckpt.items()}
        evaluation = Evaluation(
            scorers=[PromptAdherence(domain), LogLikelihood(domain)],
            embedder=TokenHistogramEmbedder(domain.vocab_size),  # independent of the reward
            reward_embedder=ContrastiveTokenEmbedder(checkpoint=ckpt["embedder"]),
            candidates=Candidates(
                base=ckpt["pretrain"],
                guidance_scales=GUIDANCE_SWEEP,
                temperatures=TEMPERATURES,
                top_ps=TOP_PS,
                distilled={"beta=0": ckpt["distill_beta0"], "beta=15": ckpt["distill_beta15"]},
                quality_model="beta=0",
                diversity_model="beta=15",
                merged_dir=merged,
                steerable={"student": ckpt["steerable"]},
                control_guidance_scales=CONTROL_G,
                control_diversity_weights=CONTROL_W,
            ),
            protocol=EvaluationProtocol(
                num_frames=domain.num_frames, num_samples=NUM_SAMPLES, num_seeds=NUM_SEEDS
            ),
            # the held-out split of the training configs
            prompts=PromptSource(datamodule=SyntheticPromptDataModule(domain)),
            output=EvaluationOutput(out="runs/eval_steerable", progress=False),
        )
        start = time.perf_counter()
        report = evaluation.run()
        print(
            f"evaluated {len(report.results)} candidates in {time.perf_counter() - start:.0f} s", flush=True
        )

    cost, cost_md = cost_table(times, steps, runs)
    hypervolumes = "\n".join(
        f"hypervolume of the fronts ({metric}): " + ", ".join(f"{k} {v:.3f}" for k, v in fronts.items())
        for metric, fronts in report.hypervolumes.items()
    )
    print(hypervolumes)
    print(format_claims(report.claims))
    print(cost_md)

    settings = report.settings
    fig = plot_quality_diversity(
        report.results,
        settings["quality"],
        fronts={k: v for k, v in report.fronts[DIVERSITY].items() if k != "distilled"},
        reference=tuple(settings["reference_point"]),
    )
    fig.axes[0].set_title(f"Steerable student vs CFG, merged and temperature/top-p ({args.name})")
    image = ROOT / "docs" / "images" / f"steerable_{args.name}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(image) as f:
        fig.savefig(f, format="png", dpi=120)
    out = ROOT / "benchmarks" / "results" / f"steerable_{args.name}.json"
    document = report_dict(report)
    document.update(
        domain=args.domain,
        configs=str(configs.relative_to(ROOT) if configs.is_relative_to(ROOT) else configs),
        training_cost=cost,
        plot=str(image.relative_to(ROOT)),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_json(document, out)
    print(f"saved {out.relative_to(ROOT)} and {image.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
