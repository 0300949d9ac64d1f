"""The paper's three claims, checked on evaluation results with a two-standard-error rule.

Quality is a log-probability (adherence, <= 0); "x % of the quality" is taken on the gain over a
chance level, ``(q - chance) / (q_ref - chance)``, since ratios of negative log-probabilities mean
nothing. Standard errors come from the evaluation seeds; hypervolumes are compared seed by seed
(paired), since every candidate is sampled with the same seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front


@dataclass
class Claim:
    name: str
    holds: bool
    margin: float  # the tested difference; > 2 * standard_error means the claim holds
    standard_error: float
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def _claim(name: str, differences: Sequence[float], detail: str) -> Claim:
    mean, se = _mean_se(differences)
    return Claim(name, mean > 2 * se, mean, se, detail)


def _front_hv_per_seed(
    members: Sequence[CandidateResult], quality: str, reference: tuple[float, float]
) -> list[float]:
    seeds = len(members[0].per_seed[quality])
    out = []
    for s in range(seeds):
        points = [(m.per_seed[quality][s], m.per_seed["diversity"][s]) for m in members]
        out.append(hypervolume_2d([points[i] for i in pareto_front(points)], reference))
    return out


def check_claims(
    results: Sequence[CandidateResult],
    families: dict[str, str],
    quality: str,
    chance: float,
    reference: tuple[float, float],
    quality_model: str,
    diversity_model: str,
    cfg_name: str = "CFG g=3",
    fraction: float = 0.95,
) -> list[Claim]:
    """(a) the quality model without CFG reaches ``fraction`` of CFG's quality gain over chance;
    (b) the diversity model is more diverse than the base with CFG; (c) the merged front's hypervolume
    exceeds the CFG front's; each also against the temperature / top-p front."""
    by_name = {r.name: r for r in results}
    cfg, qm, dm = by_name[cfg_name], by_name[quality_model], by_name[diversity_model]
    sweep = [r for r in results if families[r.name] in ("temperature", "top_p")]
    best_temperature = max(sweep, key=lambda r: r.metrics[quality][0])

    def gain_gap(model: CandidateResult, ref: CandidateResult) -> list[float]:
        return [
            (m - chance) - fraction * (r - chance)
            for m, r in zip(model.per_seed[quality], ref.per_seed[quality], strict=True)
        ]

    def diff(a: CandidateResult, b: CandidateResult, key: str) -> list[float]:
        return [x - y for x, y in zip(a.per_seed[key], b.per_seed[key], strict=True)]

    claims = [
        _claim(
            "a: quality model >= 95% of CFG g=3 quality (half the passes)",
            gain_gap(qm, cfg),
            f"{qm.name}: {qm.metrics[quality][0]:.3f} vs {cfg.name}: {cfg.metrics[quality][0]:.3f} (chance {chance:.3f})",
        ),
        _claim(
            "a vs temperature: quality model >= 95% of the best temperature/top-p quality",
            gain_gap(qm, best_temperature),
            f"best of the sweep: {best_temperature.name} at {best_temperature.metrics[quality][0]:.3f}",
        ),
        _claim(
            "b: diversity model more diverse than CFG g=3",
            diff(dm, cfg, "diversity"),
            f"{dm.metrics['diversity'][0]:.3f} vs {cfg.metrics['diversity'][0]:.3f}",
        ),
    ]
    # against temperature: more diverse than every sweep point at least as good in quality
    rivals = [r for r in sweep if r.metrics[quality][0] >= dm.metrics[quality][0]]
    if rivals:
        rival = max(rivals, key=lambda r: r.metrics["diversity"][0])
        claims.append(
            _claim(
                "b vs temperature: more diverse than any temperature/top-p point of equal or better quality",
                diff(dm, rival, "diversity"),
                f"strongest rival: {rival.name} at {rival.metrics['diversity'][0]:.3f}",
            )
        )
    else:
        claims.append(
            Claim(
                "b vs temperature: more diverse than any temperature/top-p point of equal or better quality",
                True,
                float("inf"),
                0.0,
                "no temperature/top-p point reaches its quality",
            )
        )
    merged = [r for r in results if families[r.name] == "merged"]
    if merged:
        hv_merged = _front_hv_per_seed(merged, quality, reference)
        for label, family in (
            ("c: merged front hypervolume > CFG front", ("cfg",)),
            (
                "c vs temperature: merged front hypervolume > temperature/top-p front",
                ("temperature", "top_p"),
            ),
        ):
            others = [r for r in results if families[r.name] in family]
            hv_other = _front_hv_per_seed(others, quality, reference)
            claims.append(
                _claim(
                    label,
                    [m - o for m, o in zip(hv_merged, hv_other, strict=True)],
                    f"{_mean_se(hv_merged)[0]:.3f} vs {_mean_se(hv_other)[0]:.3f}",
                )
            )
    return claims


def format_claims(claims: Sequence[Claim]) -> str:
    lines = ["| claim | holds (> 2 SE) | margin ± SE | numbers |", "|---|---|---|---|"]
    for c in claims:
        lines.append(
            f"| {c.name} | {'yes' if c.holds else 'no'} | {c.margin:+.3f} ± {c.standard_error:.3f} | {c.detail} |"
        )
    return "\n".join(lines)
