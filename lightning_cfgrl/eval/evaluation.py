"""``Evaluation``: the quality-diversity plane of any domain, with the paper's claims, from Python or YAML.

    from lightning_cfgrl.eval import Candidates, Evaluation, EvaluationProtocol, PromptSource
    report = Evaluation(scorers=[MyScorer()], embedder=MyEmbedder(),
                        candidates=Candidates(base="base.ckpt", distilled={"beta=0": "q.ckpt"}),
                        protocol=EvaluationProtocol(num_frames=250),
                        prompts=PromptSource(file="prompts.json")).run()

The settings come in groups (:class:`~lightning_cfgrl.eval.protocol.EvaluationProtocol`,
:class:`~lightning_cfgrl.eval.prompts.PromptSource`, :class:`~lightning_cfgrl.eval.report.EvaluationOutput`),
which a ``cfgrl evaluate`` YAML nests (``protocol: {num_frames: 250, num_seeds: 5}``).

Constructing an ``Evaluation`` validates every argument, reads the prompts and loads every checkpoint
once, so a bad value fails before the first sample; :meth:`Evaluation.run` then samples every candidate
over the evaluation seeds (and the temperature / top-p sweep also over the selection seeds, to choose
the best point for claim (a) without testing it on the seeds it was chosen on), computes fronts,
hypervolumes and claims, and writes the outputs (:mod:`lightning_cfgrl.eval.report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from lightning_cfgrl.core.checks import check_settings
from lightning_cfgrl.core.condition import Condition, condition_batch_size, condition_to
from lightning_cfgrl.eval.candidates import DIVERSITY, CandidateResult, Measurement, evaluate_candidate
from lightning_cfgrl.eval.claims import Claim, ClaimInputs, check_claims
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.eval.plan import (
    SAMPLING_FAMILIES,
    Candidates,
    PlannedCandidate,
    check_checkpoints,
    load_candidate,
    plan_candidates,
)
from lightning_cfgrl.eval.prompts import PromptSource
from lightning_cfgrl.eval.protocol import EvaluationProtocol
from lightning_cfgrl.eval.report import EvaluationOutput
from lightning_cfgrl.eval.sanity import reference_above_every_point, saturated_embedder
from lightning_cfgrl.eval.scorers import Scorer

REWARD_DIVERSITY = "reward_diversity"  # the metric of the reward's own embedder, when given
SAMPLING_FRONT = "sampling"  # temperature and top-p together: what one could do instead of CFG


@dataclass
class EvaluationReport:
    """Everything an evaluation measured; ``settings`` records how (JSON-ready)."""

    results: list[CandidateResult]
    selection: list[CandidateResult]
    best_sampling: str | None
    fronts: dict[str, dict[str, list[str]]]  # diversity metric -> front -> candidate names
    hypervolumes: dict[str, dict[str, float]]  # diversity metric -> front -> hypervolume of the means
    claims: list[Claim]
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # numbers that cannot be read as meant (eval/sanity.py)

    def by_name(self, name: str) -> CandidateResult:
        return next(r for r in self.results if r.name == name)


class Evaluation:
    """Quality-diversity evaluation of CFG, temperature / top-p, distilled, merged, placebo and steerable
    candidates.

    Args:
        scorers: per-sample quality scorers (each with its name, direction and chance level).
        embedder: the independent evaluation embedder, frames ``[N, K, T]`` -> ``[N, D]``: the headline
            diversity (``diversity``). Not the reward's embedder: that one can be hacked.
        candidates: what to sample (:class:`~lightning_cfgrl.eval.plan.Candidates`).
        protocol: frames, samples and seeds per candidate, the quality axis and the claims' reference
            (:class:`~lightning_cfgrl.eval.protocol.EvaluationProtocol`).
        prompts: a datamodule's held-out prompts, a prompt file or the prompts themselves
            (:class:`~lightning_cfgrl.eval.prompts.PromptSource`).
        reward_embedder: the reward's own embedder, reported beside the headline (``reward_diversity``).
        output: the result files, TensorBoard and the progress bar
            (:class:`~lightning_cfgrl.eval.report.EvaluationOutput`).
        device: where candidates sample.
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        embedder: nn.Module,
        candidates: Candidates,
        protocol: EvaluationProtocol,
        prompts: PromptSource,
        reward_embedder: nn.Module | None = None,
        output: EvaluationOutput = EvaluationOutput(),
        device: str = "cpu",
    ) -> None:
        protocol = check_settings("protocol", protocol, EvaluationProtocol)
        prompts = check_settings("prompts", prompts, PromptSource)
        output = check_settings("output", output, EvaluationOutput)
        self.protocol = protocol
        self.scorers = _check_scorers(scorers)
        names = [s.name for s in self.scorers]
        self.quality = names[0] if protocol.quality is None else protocol.quality
        if self.quality not in names:
            raise ValueError(
                f"protocol.quality must be the name of one of the scorers {names}, got {protocol.quality!r}"
            )
        scorer = self.scorers[names.index(self.quality)]
        self.sign = 1.0 if scorer.higher_is_better else -1.0
        self.reference = _reference(scorer, protocol.reference)
        self.chance = self.reference[0]
        self.embedders = {DIVERSITY: _check_embedder(embedder, "embedder")}
        if reward_embedder is not None:
            self.embedders[REWARD_DIVERSITY] = _check_embedder(reward_embedder, "reward_embedder")
        self.num_frames, self.num_samples = protocol.num_frames, protocol.num_samples
        self.seeds = protocol.evaluation_seeds()
        self.fraction = float(protocol.fraction)
        self.device = _check_device(device)
        self.out = _check_folder(output.out, "output.out")
        self.log_dir = _check_folder(output.log_dir, "output.log_dir")
        self.progress = output.progress
        if isinstance(candidates, dict):
            candidates = Candidates(**candidates)
        if not isinstance(candidates, Candidates):
            raise TypeError(f"candidates must be a Candidates (or its dict), got {type(candidates).__name__}")
        self.candidates = candidates
        self.plan = plan_candidates(candidates)
        needs_selection = candidates.quality_model is not None and any(
            row.family in SAMPLING_FAMILIES for row in self.plan
        )
        self.selection_seeds = protocol.selection_seeds() if needs_selection else []
        self.prompts: Condition = prompts.load()
        check_checkpoints(self.plan, self.num_frames)

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> EvaluationReport:
        """Sample and score every candidate; return the report (and write it when ``out`` is set)."""
        prompts = condition_to(self.prompts, self.device)
        embedders = {
            k: e.to(self.device) if isinstance(e, nn.Module) else e for k, e in self.embedders.items()
        }
        selected = (
            [row for row in self.plan if row.family in SAMPLING_FAMILIES] if self.selection_seeds else []
        )
        total = len(self.plan) * len(self.seeds) + len(selected) * len(self.selection_seeds)
        results, selection = [], []
        loaded: tuple[str, nn.Module] | None = None
        with tqdm(total=total, desc="cfgrl evaluate", unit="seed", disable=not self.progress) as bar:
            for row in self.plan:
                if loaded is None or loaded[0] != row.checkpoint:
                    loaded = None  # release the previous model before loading the next
                    loaded = (row.checkpoint, load_candidate(row.checkpoint).to(self.device))
                bar.set_postfix_str(row.name)
                model = loaded[1]
                results.append(self._measure(row, model, prompts, embedders, self.seeds, bar.update))
                if row in selected:  # the same point again, on the seeds that only choose
                    selection.append(
                        self._measure(row, model, prompts, embedders, self.selection_seeds, bar.update)
                    )
        report = self.summarize(results, selection)
        if self.out is not None or self.log_dir is not None:
            from lightning_cfgrl.eval.report import write_report

            write_report(report, self.out, self.log_dir)
        return report

    def _measure(
        self,
        row: PlannedCandidate,
        generator: nn.Module,
        prompts: Condition,
        embedders: dict[str, nn.Module],
        seeds: list[int],
        on_seed: Callable[[], object],
    ) -> CandidateResult:
        measurement = Measurement(prompts, self.num_frames, self.scorers, embedders, self.num_samples, seeds)
        return evaluate_candidate(
            row.name,
            generator,
            row.config,
            measurement,
            family=row.family,
            setting=row.setting,
            controls=row.controls,
            on_seed=on_seed,
        )

    def summarize(self, results: list[CandidateResult], selection: list[CandidateResult]) -> EvaluationReport:
        """Fronts, hypervolumes, the selected temperature / top-p point and the claims of measured results."""
        families = sorted({r.family for r in results}, key=_FAMILY_ORDER.index)
        groups = {f: [r for r in results if r.family == f] for f in families}
        sampling = [r for r in results if r.family in SAMPLING_FAMILIES]
        if sampling:
            groups[SAMPLING_FRONT] = sampling
        fronts: dict[str, dict[str, list[str]]] = {}
        hypervolumes: dict[str, dict[str, float]] = {}
        ref = (self.sign * self.reference[0], self.reference[1])
        for metric in self.embedders:
            fronts[metric], hypervolumes[metric] = {}, {}
            for front, members in groups.items():
                points = [(self.sign * r.mean(self.quality), r.mean(metric)) for r in members]
                indices = pareto_front(points)
                fronts[metric][front] = [members[i].name for i in indices]
                hypervolumes[metric][front] = hypervolume_2d([points[i] for i in indices], ref)
        best = None
        if selection:  # chosen on the selection seeds; tested below on the evaluation seeds
            chosen = max(selection, key=lambda r: self.sign * r.mean(self.quality))
            best = next(r for r in results if r.name == chosen.name)
        by_role = {name: r for r in results for name in r.setting.get("roles", [])}
        cfg_reference = next((r for r in results if r.setting.get("cfg_reference")), None)
        inputs = ClaimInputs(
            quality=self.quality,
            sign=self.sign,
            chance=self.chance,
            reference=self.reference,
            diversity_metrics=list(self.embedders),
            cfg_reference=cfg_reference,
            quality_model=by_role.get("quality_model"),
            diversity_model=by_role.get("diversity_model"),
            placebo=next((r for r in results if r.family == "placebo"), None),
            best_sampling=best,
            cfg=groups.get("cfg", []),
            sampling=sampling,
            merged=groups.get("merged", []),
            steerable=groups.get("steerable", []),
            fraction=self.fraction,
        )
        names = {
            DIVERSITY: "evaluation embedder (embedder)",
            REWARD_DIVERSITY: "reward embedder (reward_embedder)",
        }
        problems = [saturated_embedder(results, metric, names[metric]) for metric in self.embedders]
        problems.append(reference_above_every_point(results, self.quality, self.sign, self.reference))
        settings = self.settings()
        settings["warnings"] = [p for p in problems if p is not None]
        return EvaluationReport(
            results=results,
            selection=selection,
            best_sampling=best.name if best is not None else None,
            fronts=fronts,
            hypervolumes=hypervolumes,
            claims=check_claims(inputs),
            settings=settings,
            warnings=settings["warnings"],
        )

    def settings(self) -> dict[str, Any]:
        """How this evaluation was run (saved in ``results.json``)."""
        from lightning_cfgrl.eval.machine import describe_machine

        return {
            "quality": self.quality,
            "higher_is_better": self.sign > 0,
            "chance": self.chance,
            "reference_point": list(self.reference),
            "fraction": self.fraction,
            "num_prompts": condition_batch_size(self.prompts),
            "num_samples": self.num_samples,
            "num_frames": self.num_frames,
            "evaluation_seeds": self.seeds,
            "selection_seeds": self.selection_seeds,
            "scorers": [
                {
                    "name": s.name,
                    "class": _class_path(s),
                    "higher_is_better": bool(s.higher_is_better),
                    "chance": s.chance,
                }
                for s in self.scorers
            ],
            "embedders": {metric: _class_path(e) for metric, e in self.embedders.items()},
            "candidates": [
                {"name": r.name, "family": r.family, "checkpoint": r.checkpoint} for r in self.plan
            ],
            "machine": describe_machine(self.device),
        }


_FAMILY_ORDER = ["cfg", "temperature", "top_p", "distilled", "merged", "placebo", "steerable"]


def _check_scorers(scorers: Sequence[Scorer]) -> list[Scorer]:
    scorers = list(scorers or [])
    if not scorers:
        raise ValueError("scorers must name at least one quality scorer (a lightning_cfgrl.eval.Scorer)")
    for s in scorers:
        if not isinstance(s, Scorer):
            raise TypeError(f"scorers must be lightning_cfgrl.eval.Scorer instances, got {type(s).__name__}")
        if not isinstance(s.name, str) or not s.name:
            raise ValueError(f"scorer {type(s).__name__} has no name (set the class attribute name = '...')")
        if s.chance is not None and not math.isfinite(s.chance):
            raise ValueError(
                f"scorer {s.name!r} has chance level {s.chance!r}; expected a finite number or None"
            )
    names = [s.name for s in scorers]
    clash = sorted({n for n in names if names.count(n) > 1} | ({DIVERSITY, REWARD_DIVERSITY} & set(names)))
    if clash:
        raise ValueError(
            f"scorer names must be unique and differ from {DIVERSITY!r}/{REWARD_DIVERSITY!r}, got {names}"
        )
    return scorers


def _reference(scorer: Scorer, reference: Sequence[float] | None) -> tuple[float, float]:
    if reference is None:
        if scorer.chance is None:
            raise ValueError(
                f"the quality scorer {scorer.name!r} ({type(scorer).__name__}) has no chance level, which "
                "claims and hypervolumes are measured from: set its `chance` attribute or give "
                "protocol.reference: [<quality at chance>, 0.0]"
            )
        return (float(scorer.chance), 0.0)
    values = list(reference)  # checked by EvaluationProtocol: two finite numbers
    return (float(values[0]), float(values[1]))


def _check_embedder(embedder: Any, name: str) -> Any:
    if not callable(embedder):
        raise TypeError(
            f"{name} must map frames [N, K, T] to [N, D] (an nn.Module), got {type(embedder).__name__}"
        )
    if isinstance(embedder, nn.Module):
        embedder.eval()
    return embedder


def _check_device(device: str) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be like 'cpu' or 'cuda:0', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, but torch.cuda.is_available() is False")
    return resolved


def _check_folder(path: str | None, name: str) -> Path | None:
    if path is None:
        return None
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name}={str(path)!r} is a file; expected a folder (existing or to create)")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name}={str(path)!r} cannot be created: {str(parent)!r} is a file")
            break
    return folder


def _class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


__all__ = ["REWARD_DIVERSITY", "SAMPLING_FRONT", "Evaluation", "EvaluationReport"]
