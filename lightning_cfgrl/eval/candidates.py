"""Quality / diversity / cost of one sampling candidate, repeated over evaluation seeds.

Plain torch: usable from a notebook, the quickstart, or a future ``cfgrl evaluate``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from einops import rearrange
from torch import nn

from lightning_cfgrl.core.condition import Condition, repeat_condition
from lightning_cfgrl.core.generator import TokenGenerator
from lightning_cfgrl.core.sampling import SamplingConfig, sample
from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity
from lightning_cfgrl.eval.scorers import Scorer


@dataclass
class CandidateResult:
    """Mean and standard error (over evaluation seeds) of every metric of one candidate."""

    name: str
    metrics: dict[str, tuple[float, float]]
    forward_passes_per_token: int
    tokens_per_s: float
    per_seed: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


@torch.no_grad()
def evaluate_candidate(
    name: str,
    generator: TokenGenerator,
    prompts: Condition,
    num_frames: int,
    config: SamplingConfig,
    scorers: Sequence[Scorer],
    diversity_embedder: nn.Module,
    num_samples: int = 16,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    controls: Mapping[str, float] | None = None,
) -> CandidateResult:
    """Sample ``num_samples`` per prompt for each seed; score quality per sample and diversity per prompt.

    ``diversity_embedder`` maps frames ``[N, K, T]`` to ``[N, D]``; diversity is the mean pairwise
    ``1 - cos`` within a prompt. Use an embedder other than the one a model was rewarded with.
    ``controls`` (e.g. ``{"guidance_scale": 3.0}``) steer a control-aware generator, passed to ``sample``.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 to measure diversity, got {num_samples}")
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
            per_seed.setdefault(scorer.name, []).append(scorer(frames, repeated).float().mean().item())
        embeddings = rearrange(diversity_embedder(frames), "(b g) d -> b g d", g=num_samples)
        per_seed.setdefault("diversity", []).append(pairwise_cosine_diversity(embeddings).mean().item())
    return CandidateResult(
        name=name,
        metrics={key: _mean_se(values) for key, values in per_seed.items()},
        forward_passes_per_token=config.forward_passes_per_step,
        tokens_per_s=tokens / seconds,
        per_seed=per_seed,
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


__all__ = ["CandidateResult", "evaluate_candidate", "format_table"]
