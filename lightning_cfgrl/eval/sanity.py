"""Checks of an evaluation's numbers that no single value reveals: a saturated diversity embedder, and a
hypervolume reference point that no candidate passes. Each message names the fix."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_cfgrl.eval.candidates import CandidateResult

# an embedder whose pairwise diversity is this high for every candidate, within this range, cannot rank
# them: it maps any two samples to near-orthogonal embeddings (the diversity 1 - cos is then ~1)
SATURATED_LEVEL = 0.9
SATURATED_RANGE = 0.02


def saturated_embedder(results: Sequence[CandidateResult], metric: str, name: str) -> str | None:
    """A message when every candidate's mean ``metric`` is above :data:`SATURATED_LEVEL` and all lie
    within :data:`SATURATED_RANGE`, else None (fewer than two candidates: None)."""
    means = [r.mean(metric) for r in results if metric in r.metrics]
    if len(means) < 2 or min(means) < SATURATED_LEVEL or max(means) - min(means) > SATURATED_RANGE:
        return None
    return (
        f"the {name} is saturated: every candidate's {metric} lies in [{min(means):.3f}, {max(means):.3f}] "
        f"(near 1 = near-orthogonal embeddings for any two samples), so it cannot rank the candidates and the "
        f"fronts and hypervolumes of {metric!r} say nothing. Use an embedder whose embeddings of similar "
        "samples are similar: a trained one (ContrastiveTokenEmbedder from a longer embedder run), a token "
        "histogram (TokenHistogramEmbedder), or an audio embedder (EncodecAudioEmbedder) for audio models"
    )


def reference_above_every_point(
    results: Sequence[CandidateResult], quality: str, sign: float, reference: tuple[float, float]
) -> str | None:
    """A message when no candidate's mean quality passes the reference's (every hypervolume is then 0),
    else None."""
    if not results:
        return None
    best = max(results, key=lambda r: sign * r.mean(quality))
    if sign * best.mean(quality) > sign * reference[0]:
        return None
    word = "above" if sign > 0 else "below"
    return (
        f"every hypervolume is 0: the reference quality {reference[0]:.4g} ({quality}; by default the scorer's "
        f"chance level) is {word} every candidate's (best: {best.name} at {best.mean(quality):.4g}), so no point "
        f"dominates it. Check the scorer's chance level, or set reference: [<a {quality} below your candidates'>, "
        "0.0] in the evaluation config"
    )


__all__ = ["SATURATED_LEVEL", "SATURATED_RANGE", "reference_above_every_point", "saturated_embedder"]
