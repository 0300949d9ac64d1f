"""Quality / diversity / cost of one sampling candidate, repeated over evaluation seeds.

Plain torch: usable from a notebook, the quickstart, or :class:`~lightning_cfgrl.eval.evaluation.Evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import nn

from lightning_cfgrl.core.condition import Condition, repeat_condition
from lightning_cfgrl.core.generator import TokenGenerator
from lightning_cfgrl.core.sampling import SamplingConfig, sample
from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity
from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.eval.stats import mean_se

DIVERSITY = "diversity"  # the metric of the headline (evaluation) embedder


@dataclass
class CandidateResult:
    """Mean and standard error (over ``seeds``) of every metric of one candidate, and the per-seed values.

    ``family`` groups candidates on the plane (``cfg``, ``temperature``, ``top_p``, ``distilled``,
    ``merged``, ``placebo``); ``setting`` holds what distinguishes it within its family
    (``{"guidance_scale": 3.0}``, ``{"checkpoint": ...}``).
    """

    name: str
    metrics: dict[str, tuple[float, float]]
    forward_passes_per_token: int
    tokens_per_s: float
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    family: str = ""
    setting: dict[str, Any] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        return self.metrics[metric][0]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Measurement:
    """What every candidate is measured on; the same for all, so that comparisons are paired per seed.

    Args:
        prompts: the condition batch ``[P, ...]`` (a tensor or a dict of tensors).
        num_frames: frames T sampled per sequence.
        scorers: per-sample quality scorers (frames ``[N, K, T]`` and conditions -> scores ``[N]``).
        diversity_embedders: a metric name -> an embedder (frames ``[N, K, T]`` -> ``[N, D]``); a single
            module is named ``"diversity"``. Use an embedder other than the one a model was rewarded with
            for the headline.
        num_samples: samples per prompt; diversity is the mean pairwise ``1 - cos`` among them (>= 2).
        seeds: evaluation seeds, one sampling of every prompt each (>= 2, for standard errors).
    """

    prompts: Condition
    num_frames: int
    scorers: Sequence[Scorer]
    diversity_embedders: nn.Module | Mapping[str, nn.Module]
    num_samples: int = 16
    seeds: Sequence[int] = (0, 1, 2, 3, 4)

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 to measure diversity, got {self.num_samples}")
        if len(self.seeds) < 2:
            raise ValueError(
                f"seeds must hold >= 2 evaluation seeds to report standard errors, got {list(self.seeds)}"
            )

    @property
    def embedders(self) -> Mapping[str, nn.Module]:
        """``diversity_embedders`` by metric name (a single module is ``"diversity"``)."""
        if isinstance(self.diversity_embedders, nn.Module):
            return {DIVERSITY: self.diversity_embedders}
        return self.diversity_embedders


@torch.no_grad()
def evaluate_candidate(
    name: str,
    generator: TokenGenerator,
    config: SamplingConfig,
    measurement: Measurement,
    family: str = "",
    setting: Mapping[str, Any] | None = None,
    controls: Mapping[str, float] | None = None,
    on_seed: Callable[[], None] | None = None,
) -> CandidateResult:
    """Sample ``measurement.num_samples`` per prompt for each of its seeds; score quality per sample and
    diversity per prompt (:class:`Measurement`).

    ``family`` and ``setting`` are recorded in the result (see :class:`CandidateResult`). ``controls`` (e.g.
    ``{"guidance_scale": 3.0}``) steer a control-aware generator (passed to ``sample``). ``on_seed`` is
    called after each seed (progress bars).
    """
    if not isinstance(measurement, Measurement):
        raise TypeError(f"measurement must be a Measurement, got {type(measurement).__name__}")
    prompts, num_frames, scorers = measurement.prompts, measurement.num_frames, measurement.scorers
    num_samples, seeds, embedders = measurement.num_samples, measurement.seeds, measurement.embedders
    generator.eval()
    per_seed: dict[str, list[float]] = {}
    tokens, seconds = 0, 0.0
    repeated = repeat_condition(prompts, num_samples)
    for seed in seeds:
        start = time.perf_counter()
        steps = sample(
            generator, prompts, num_frames, config, num_samples=num_samples, seed=seed, controls=controls
        )
        seconds += time.perf_counter() - start
        frames = generator.pattern.steps_to_frames(steps)
        tokens += frames.numel()
        for scorer in scorers:
            scores = scorer(frames, repeated)
            _check_scores(scores, scorer, frames.shape[0], name)
            per_seed.setdefault(scorer.name, []).append(scores.double().mean().item())
        for metric, embedder in embedders.items():
            embeddings = rearrange(embedder(frames), "(b g) d -> b g d", g=num_samples)
            per_seed.setdefault(metric, []).append(
                pairwise_cosine_diversity(embeddings).double().mean().item()
            )
        if on_seed is not None:
            on_seed()
    return CandidateResult(
        name=name,
        metrics={key: mean_se(values) for key, values in per_seed.items()},
        forward_passes_per_token=config.forward_passes_per_step,
        tokens_per_s=tokens / seconds,
        per_seed=per_seed,
        seeds=[int(s) for s in seeds],
        family=family,
        setting=dict(setting or {}),
    )


def _check_scores(scores: torch.Tensor, scorer: Scorer, n: int, candidate: str) -> None:
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(
            f"scorer {scorer.name!r} must return one score per sample, shape ({n},), got {shape}"
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(
            f"scorer {scorer.name!r} returned {int((~torch.isfinite(scores)).sum())} non-finite scores "
            f"for candidate {candidate!r}; scores must be finite numbers"
        )


def format_table(results: Sequence[CandidateResult]) -> str:
    """Markdown table: one row per candidate, ``mean ± se`` per metric."""
    keys = list(results[0].metrics)
    lines = [
        "| candidate | " + " | ".join(keys) + " | passes/token | tokens/s |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for r in results:
        cells = [f"{r.metrics[k][0]:.3f} ± {r.metrics[k][1]:.3f}" for k in keys]
        lines.append(
            f"| {r.name} | "
            + " | ".join(cells)
            + f" | {r.forward_passes_per_token} | {r.tokens_per_s:,.0f} |"
        )
    return "\n".join(lines)


__all__ = ["DIVERSITY", "CandidateResult", "Measurement", "evaluate_candidate", "format_table"]
