"""The paper's three claims, tested over evaluation seeds with the 2-SE rule and a paired t-test.

Every candidate is sampled with the same evaluation seeds, so every claim is a mean of per-seed paired
differences ``d_s``; it holds when ``mean(d) > 2 * SE(d)``, and the one-sided p-value of
``H1: mean(d) > 0`` is reported beside it (:func:`~lightning_cfgrl.eval.stats.paired_t_test`).

* (a) the quality model (no CFG) reaches ``fraction`` of the CFG reference's quality gain over chance:
  ``d_s = gain(model) - fraction * gain(reference)`` with ``gain(x) = sign * (q_x - chance)`` (sign
  -1 when lower is better), since ratios of log-probabilities mean nothing; and the same against the
  best temperature / top-p point, chosen on separate *selection* seeds, never on the seeds it is
  tested on.
* (b) the diversity model is more diverse than the CFG reference, and than the shuffled-reward placebo.
* (c) the merged front's hypervolume exceeds the CFG front's, and the temperature / top-p front's;
  hypervolumes are computed seed by seed (paired), **cross-fitted** by default (:func:`front_hypervolumes`):
  at seed s the front's members are chosen on the other seeds' means and scored with seed s's values.
  Choosing them on seed s itself lets a member reach the front by that seed's luck, a bias that grows with
  the number of points a family has (a 24-point family gained +0.05 from it where a 5-point one gained
  +0.01); cross-fitting removes that selection bias, leaving the smaller one of a union over the few chosen
  points (in ``tests/test_claims.py``, 12 noisy copies of one point against one: +0.082 per seed, +0.031
  cross-fitted). ``hypervolume="per_seed"`` keeps the old estimator.

* (s) a steerable student (one run, g and beta as inputs, see :mod:`lightning_cfgrl.core.controls`): at
  each control g that is also in the CFG sweep (g != 1; lowest diversity weight), it reaches ``fraction``
  of CFG-at-g's quality gain over chance; and its front (all its control settings) has a larger
  hypervolume than the CFG, merged and temperature / top-p fronts.

(b), (c) and the fronts of (s) are reported once per diversity metric: the independent evaluation embedder
(``diversity``) and, when given, the reward's own embedder; a gap between the two is reward hacking.

Multiplicity: one evaluation tests many claims, so each claim also carries ``p_holm``, its p-value
adjusted by Holm's step-down method over every claim of the same call (family-wise error); "holds" stays
the per-claim 2-SE rule, which at 5 seeds is a one-sided p of about 0.058 (t = 2 with 4 degrees of
freedom) before any adjustment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.eval.stats import holm_adjust, mean_se, paired_t_test


@dataclass
class Claim:
    """One tested claim. ``margin`` is the mean paired difference; it holds when > 2 standard errors."""

    claim: str  # "a", "a_vs_sampling", "b", "b_vs_placebo", "c", "c_vs_sampling", "s_g=<g>", "s_front*"
    statement: str
    holds: bool
    margin: float
    standard_error: float
    t: float
    p_value: float  # one-sided, H1: margin > 0
    num_seeds: int
    metric: str  # the quality metric for (a), the diversity metric for (b) and (c)
    detail: str
    p_holm: float | None = None  # p_value adjusted over every claim of one check_claims call (Holm)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClaimInputs:
    """The candidates each claim compares, by role (``None`` / empty: that claim is not tested).

    ``quality`` is the quality metric, ``sign`` +1 when higher is better (else -1), ``chance`` its chance
    level and ``reference`` the hypervolume reference ``(quality, diversity)``, all in the metric's units.
    """

    quality: str
    sign: float
    chance: float
    reference: tuple[float, float]
    diversity_metrics: Sequence[str]
    cfg_reference: CandidateResult | None = None
    quality_model: CandidateResult | None = None
    diversity_model: CandidateResult | None = None
    placebo: CandidateResult | None = None
    best_sampling: CandidateResult | None = None  # chosen on the selection seeds
    cfg: Sequence[CandidateResult] = ()
    sampling: Sequence[CandidateResult] = ()
    merged: Sequence[CandidateResult] = ()
    steerable: Sequence[CandidateResult] = ()  # every control setting of every steerable student
    fraction: float = 0.95
    hypervolume: Literal["cross_fit", "per_seed"] = "cross_fit"  # see front_hypervolumes


def check_claims(inputs: ClaimInputs) -> list[Claim]:
    """Every claim whose candidates are present (see the module docs), in the order a, b, c."""
    claims = _quality_claims(inputs) + _steering_quality_claims(inputs)
    for metric in inputs.diversity_metrics:
        claims += _diversity_claims(inputs, metric) + _front_claims(inputs, metric)
        claims += _steering_front_claims(inputs, metric)
    adjusted = holm_adjust([c.p_value for c in claims])
    return [replace(c, p_holm=p) for c, p in zip(claims, adjusted, strict=True)]


def _quality_claims(x: ClaimInputs) -> list[Claim]:
    """(a): the quality model against the CFG reference and the selected temperature/top-p point."""
    if x.quality_model is None:
        return []
    versus = (
        (x.cfg_reference, "a", "the CFG reference"),
        (x.best_sampling, "a_vs_sampling", "the best temperature/top-p point"),
    )
    return [
        _quality_claim(x, x.quality_model, ref, key, label) for ref, key, label in versus if ref is not None
    ]


def _diversity_claims(x: ClaimInputs, metric: str) -> list[Claim]:
    """(b): the diversity model against the CFG reference and the placebo, on one diversity metric."""
    if x.diversity_model is None:
        return []
    claims = []
    for ref, key in ((x.cfg_reference, "b"), (x.placebo, "b_vs_placebo")):
        if ref is not None:
            detail = f"{x.diversity_model.mean(metric):.4g} vs {ref.mean(metric):.4g}"
            statement = f"{x.diversity_model.name} is more diverse than {ref.name}"
            claims.append(
                paired_claim(key, statement, _paired(x.diversity_model, ref, metric), metric, detail)
            )
    return claims


def _front_claims(x: ClaimInputs, metric: str) -> list[Claim]:
    """(c): the merged front's per-seed hypervolume against the CFG and temperature/top-p fronts'."""
    if not x.merged:
        return []
    claims = []
    merged = front_hypervolumes(x.merged, x.quality, metric, x.sign, x.reference, x.hypervolume)
    for others, key, label in (
        (x.cfg, "c", "the CFG front"),
        (x.sampling, "c_vs_sampling", "the temperature/top-p front"),
    ):
        if others:
            _same_seeds(x.merged[0], others[0])
            other = front_hypervolumes(others, x.quality, metric, x.sign, x.reference, x.hypervolume)
            differences = [m - o for m, o in zip(merged, other, strict=True)]
            detail = f"hypervolume {mean_se(merged)[0]:.4g} vs {mean_se(other)[0]:.4g} ({x.hypervolume})"
            statement = f"the merged front's hypervolume exceeds {label}'s"
            claims.append(paired_claim(key, statement, differences, metric, detail))
    return claims


def _steering_quality_claims(x: ClaimInputs) -> list[Claim]:
    """(s): each steerable student at control g (its quality setting) against CFG at the same g."""
    cfg = {r.setting.get("guidance_scale"): r for r in x.cfg}
    claims = []
    for row in x.steerable:
        g = row.setting.get("guidance_scale")
        if row.setting.get("quality_setting") and g != 1.0 and g in cfg:
            claims.append(_quality_claim(x, row, cfg[g], f"s_g={g:g}", f"CFG at g={g:g}"))
    return claims


def _steering_front_claims(x: ClaimInputs, metric: str) -> list[Claim]:
    """(s): each steerable student's front (all its control settings) against the other fronts."""
    claims = []
    for model in dict.fromkeys(r.setting.get("model") for r in x.steerable):
        members = [r for r in x.steerable if r.setting.get("model") == model]
        own = front_hypervolumes(members, x.quality, metric, x.sign, x.reference, x.hypervolume)
        for others, key, label in (
            (x.cfg, "s_front", "the CFG front"),
            (x.merged, "s_front_vs_merged", "the merged front"),
            (x.sampling, "s_front_vs_sampling", "the temperature/top-p front"),
        ):
            if others:
                _same_seeds(members[0], others[0])
                other = front_hypervolumes(others, x.quality, metric, x.sign, x.reference, x.hypervolume)
                differences = [m - o for m, o in zip(own, other, strict=True)]
                detail = f"hypervolume {mean_se(own)[0]:.4g} vs {mean_se(other)[0]:.4g} ({x.hypervolume})"
                statement = f"the steerable {model} front's hypervolume exceeds {label}'s"
                claims.append(paired_claim(key, statement, differences, metric, detail))
    return claims


def quality_gain(values: Sequence[float], sign: float, chance: float) -> list[float]:
    """Per-seed gain over chance, oriented so that larger is better."""
    return [sign * (v - chance) for v in values]


def front_hypervolumes(
    members: Sequence[CandidateResult],
    quality: str,
    diversity: str,
    sign: float,
    reference: tuple[float, float],
    estimator: Literal["cross_fit", "per_seed"] = "cross_fit",
) -> list[float]:
    """Per seed s: the hypervolume of the members' front (quality oriented by ``sign``).

    ``per_seed``: the front of seed s's points, chosen and scored on the same seed. ``cross_fit``: the
    members on the front of the mean points over the *other* seeds, scored with seed s's values (their
    union's hypervolume), so no member is on the front because of seed s's own noise (>= 2 seeds).
    """
    ref = (sign * reference[0], reference[1])
    num_seeds = len(members[0].seeds)
    if estimator not in ("cross_fit", "per_seed"):
        raise ValueError(f"hypervolume estimator must be 'cross_fit' or 'per_seed', got {estimator!r}")
    if estimator == "cross_fit" and num_seeds < 2:
        raise ValueError(f"a cross-fitted hypervolume needs >= 2 evaluation seeds, got {num_seeds}")

    def point(m: CandidateResult, seeds: Sequence[int]) -> tuple[float, float]:
        q = sum(m.per_seed[quality][t] for t in seeds) / len(seeds)
        d = sum(m.per_seed[diversity][t] for t in seeds) / len(seeds)
        return sign * q, d

    out = []
    for s in range(num_seeds):
        chosen = members
        if estimator == "cross_fit":
            others = [t for t in range(num_seeds) if t != s]
            selection = [point(m, others) for m in members]
            chosen = [members[i] for i in pareto_front(selection)]
        out.append(hypervolume_2d([point(m, [s]) for m in chosen], ref))
    return out


def format_claims(claims: Sequence[Claim]) -> str:
    lines = [
        "| claim | statement | metric | holds (> 2 SE) | margin ± SE | p (one-sided) | p (Holm) | numbers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        holm = "" if c.p_holm is None else f"{c.p_holm:.3g}"
        lines.append(
            f"| {c.claim} | {c.statement} | {c.metric} | {'yes' if c.holds else 'no'} | "
            f"{c.margin:+.4f} ± {c.standard_error:.4f} | {c.p_value:.3g} | {holm} | {c.detail} |"
        )
    return "\n".join(lines)


def _quality_claim(
    x: ClaimInputs, model: CandidateResult, ref: CandidateResult, key: str, versus: str
) -> Claim:
    _same_seeds(model, ref)
    gain_m = quality_gain(model.per_seed[x.quality], x.sign, x.chance)
    gain_r = quality_gain(ref.per_seed[x.quality], x.sign, x.chance)
    differences = [m - x.fraction * r for m, r in zip(gain_m, gain_r, strict=True)]
    ratio = mean_se(gain_m)[0] / mean_se(gain_r)[0] if mean_se(gain_r)[0] > 0 else None
    share = (
        f"{100 * ratio:.0f} % of its gain over chance"
        if ratio is not None
        else "the reference does not beat chance"
    )
    detail = (
        f"{model.mean(x.quality):.4g} vs {ref.name}: {ref.mean(x.quality):.4g} "
        f"(chance {x.chance:.4g}; {share})"
    )
    statement = f"{model.name} reaches {100 * x.fraction:g} % of {versus} ({ref.name})'s quality gain"
    return paired_claim(key, statement, differences, x.quality, detail)


def _paired(a: CandidateResult, b: CandidateResult, metric: str) -> list[float]:
    _same_seeds(a, b)
    return [u - v for u, v in zip(a.per_seed[metric], b.per_seed[metric], strict=True)]


def _same_seeds(a: CandidateResult, b: CandidateResult) -> None:
    if a.seeds != b.seeds:
        raise ValueError(
            f"a paired claim needs the same seeds: {a.name} has {a.seeds}, {b.name} has {b.seeds}"
        )


def paired_claim(key: str, statement: str, differences: Sequence[float], metric: str, detail: str) -> Claim:
    """A claim on paired differences (one per seed): holds when ``mean > 2 SE``; one-sided t-test beside."""
    test = paired_t_test(differences)
    holds = test.mean > 2 * test.standard_error
    return Claim(
        key,
        statement,
        holds,
        test.mean,
        test.standard_error,
        test.t,
        test.p_value,
        len(differences),
        metric,
        detail,
    )


__all__ = [
    "Claim",
    "ClaimInputs",
    "check_claims",
    "format_claims",
    "front_hypervolumes",
    "paired_claim",
    "quality_gain",
]
