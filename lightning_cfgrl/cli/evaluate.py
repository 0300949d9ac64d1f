"""``cfgrl evaluate``: the quality-diversity plane of base + CFG, base + temperature / top-p,
distilled, merged and placebo models on the synthetic domain's held-out prompts.

    cfgrl evaluate --base runs/base/checkpoints/last.ckpt \\
        --students '{"beta=0": "runs/beta0/checkpoints/last.ckpt", "beta=15": "runs/beta15/checkpoints/last.ckpt"}' \\
        --merged_dir runs/merged --placebo runs/placebo/checkpoints/last.ckpt --out runs/eval

Writes ``results.csv``, ``results.json`` (metrics, fronts, hypervolumes), ``quality_diversity.png``
and the figure to TensorBoard (``<out>/tensorboard``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import ArgumentParser
from torch import nn
from tqdm import tqdm

from lightning_cfgrl.core.sampling import SamplingConfig
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.eval.candidates import CandidateResult, evaluate_candidate, format_table
from lightning_cfgrl.eval.claims import Claim, check_claims, format_claims
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.experiments import (
    LogLikelihood,
    PromptAdherence,
    SyntheticMusic,
    SyntheticPromptDataModule,
)
from lightning_cfgrl.experiments.judge import JudgeAdherence
from lightning_cfgrl.io.checkpoints import atomic_save_json
from lightning_cfgrl.io.generators import load_generator
from lightning_cfgrl.merging.streaming import complete_merged_sets

# Fixed before any result was seen: adherence at chance (log 1/48: a sample that carries no prompt
# information) and zero diversity (all samples of a prompt identical).
DEFAULT_REFERENCE = (math.log(1 / 48), 0.0)


@dataclass
class EvaluationReport:
    results: list[CandidateResult]
    families: dict[str, str]
    fronts: dict[str, list[int]] = field(default_factory=dict)
    hypervolumes: dict[str, float] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)


def _merged_checkpoints(merged_dir: str | None) -> list[tuple[float, Path]]:
    if merged_dir is None:
        return []
    # only sets whose sidecar's sha256 match the files beside it (an interrupted merge leaves none)
    found = [(lam, files.checkpoint) for lam, files in complete_merged_sets(merged_dir) if files.checkpoint]
    if not found:
        raise ValueError(
            f"merged_dir {merged_dir!r} holds no merged checkpoints (*.ckpt with a .json sidecar)"
        )
    return sorted(found)


def run_evaluation(
    base: str,
    students: dict[str, str] | None = None,
    merged_dir: str | None = None,
    placebo: str | None = None,
    judge: str | None = None,
    guidance_scales: Sequence[float] = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0),
    temperatures: Sequence[float] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4),
    top_ps: Sequence[float] = (0.9, 0.8, 0.6),
    num_samples: int = 16,
    num_seeds: int = 5,
    quality: str = "adherence",
    reference: tuple[float, float] = DEFAULT_REFERENCE,
    out: str = "runs/eval",
    quality_student: str | None = None,
    diversity_student: str | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Evaluate every candidate on the held-out prompts; write CSV, JSON, PNG and a TensorBoard figure.

    ``students`` maps a name to a checkpoint; naming the quality (beta = 0) and diversity (beta = 15)
    students also checks the paper's claims (:mod:`lightning_cfgrl.eval.claims`)."""
    if num_seeds < 2:
        raise ValueError(f"num_seeds must be >= 2 to report standard errors, got {num_seeds}")
    domain = SyntheticMusic()
    prompts = SyntheticPromptDataModule(domain).heldout_prompts
    scorers = [PromptAdherence(domain), LogLikelihood(domain)] + ([JudgeAdherence(judge)] if judge else [])
    if quality not in [s.name for s in scorers]:
        raise ValueError(f"quality must be one of {[s.name for s in scorers]}, got {quality!r}")
    embedder = TokenHistogramEmbedder(domain.vocab_size)

    base_model = load_generator(base)
    plan: list[tuple[str, str, nn.Module, SamplingConfig]] = []
    plan += [(f"CFG g={g:g}", "cfg", base_model, SamplingConfig(guidance_scale=g)) for g in guidance_scales]
    plan += [
        (f"temperature {t:g}", "temperature", base_model, SamplingConfig(temperature=t)) for t in temperatures
    ]
    plan += [(f"top-p {p:g}", "top_p", base_model, SamplingConfig(top_p=p)) for p in top_ps]
    plan += [
        (f"distilled {name}", "distilled", load_generator(path), SamplingConfig())
        for name, path in (students or {}).items()
    ]
    plan += [
        (f"merged lambda={lam:g}", "merged", load_generator(path), SamplingConfig())
        for lam, path in _merged_checkpoints(merged_dir)
    ]
    if placebo:
        plan.append(("placebo (shuffled rewards)", "placebo", load_generator(placebo), SamplingConfig()))

    results, families = [], {}
    for name, family, model, config in tqdm(plan, desc="evaluate", disable=not progress):
        results.append(
            evaluate_candidate(
                name,
                model,
                prompts,
                domain.num_frames,
                config,
                scorers,
                embedder,
                num_samples=num_samples,
                seeds=range(num_seeds),
            )
        )
        families[name] = family

    report = EvaluationReport(results, families)
    points = [(r.metrics[quality][0], r.metrics["diversity"][0]) for r in results]
    # the "temperature" front is everything a user could do instead of CFG: temperature and top-p
    for front_name, members_of in (
        ("cfg", ("cfg",)),
        ("temperature", ("temperature", "top_p")),
        ("merged", ("merged",)),
    ):
        members = [i for i, r in enumerate(results) if families[r.name] in members_of]
        if members:
            front = [members[j] for j in pareto_front([points[i] for i in members])]
            report.fronts[front_name] = front
            report.hypervolumes[front_name] = hypervolume_2d([points[i] for i in front], reference)
    if quality_student and diversity_student:
        report.claims = check_claims(
            results,
            families,
            quality,
            chance=DEFAULT_REFERENCE[0],
            reference=reference,
            quality_model=f"distilled {quality_student}",
            diversity_model=f"distilled {diversity_student}",
        )
    _write(report, quality, reference, Path(out))
    return report


def _write(report: EvaluationReport, quality: str, reference: tuple[float, float], out: Path) -> None:
    from lightning_cfgrl.eval.plotting import plot_quality_diversity

    out.mkdir(parents=True, exist_ok=True)
    metrics = list(report.results[0].metrics)
    with open(out / "results.csv.tmp", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "candidate",
                "family",
                *[f"{m}_{s}" for m in metrics for s in ("mean", "se")],
                "forward_passes_per_token",
                "tokens_per_s",
            ]
        )
        for r in report.results:
            writer.writerow(
                [
                    r.name,
                    report.families[r.name],
                    *[f"{v:.6g}" for m in metrics for v in r.metrics[m]],
                    r.forward_passes_per_token,
                    f"{r.tokens_per_s:.1f}",
                ]
            )
    (out / "results.csv.tmp").replace(out / "results.csv")
    atomic_save_json(
        {
            "quality_metric": quality,
            "reference_point": reference,
            "results": [dict(r.as_dict(), family=report.families[r.name]) for r in report.results],
            "fronts": {k: [report.results[i].name for i in v] for k, v in report.fronts.items()},
            "hypervolumes": report.hypervolumes,
            "claims": [c.as_dict() for c in report.claims],
        },
        out / "results.json",
    )
    fig = plot_quality_diversity(report.results, report.families, quality, report.fronts, reference)
    fig.savefig(out / "quality_diversity.png.tmp.png", dpi=120)
    (out / "quality_diversity.png.tmp.png").replace(out / "quality_diversity.png")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as writer:
        writer.add_figure("evaluation/quality_diversity", fig)
        for family, hv in report.hypervolumes.items():
            writer.add_scalar(f"evaluation/hypervolume_{family}", hv)


def evaluate_main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="cfgrl evaluate", description=__doc__)
    parser.add_argument("--config", action="config")
    parser.add_function_arguments(run_evaluation)
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("config", "__default_config__")}
    report = run_evaluation(**kwargs)
    print(format_table(report.results))
    for family, hv in report.hypervolumes.items():
        print(f"hypervolume[{family}] = {hv:.4f}")
    if report.claims:
        print(format_claims(report.claims))
    print(f"wrote {kwargs['out']}/results.csv, results.json, quality_diversity.png")
    return 0
