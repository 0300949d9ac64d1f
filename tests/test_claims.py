"""The claims' math against hand computations: paired differences, 2-SE rule, t-test, hypervolumes."""

import json
import math
import statistics

import pytest

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.claims import ClaimInputs, check_claims, front_hypervolumes
from lightning_cfgrl.eval.report import strict_json
from lightning_cfgrl.eval.stats import holm_adjust
from lightning_cfgrl.eval.training_runs import pool_training_runs

SEEDS = [11, 12, 13]


def result(name, family, quality, diversity, metric="adherence", seeds=SEEDS):
    per_seed = {metric: list(quality), "diversity": list(diversity)}
    metrics = {k: (statistics.fmean(v), statistics.stdev(v) / math.sqrt(len(v))) for k, v in per_seed.items()}
    return CandidateResult(name, metrics, 1, 1.0, per_seed, list(seeds), family)


def by_hand(differences):
    """mean, SE, one-sided p of a 3-seed paired t-test (df = 2: p = 1/2 - t / (2 sqrt(2 + t^2)))."""
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(len(differences))
    t = mean / se
    return mean, se, 0.5 - t / (2 * math.sqrt(2 + t * t))


def two_point_hv(points, reference):
    """Staircase area of two mutually non-dominated points (x1 < x2, y1 > y2) above ``reference``."""
    (x1, y1), (x2, y2) = sorted(points)
    rx, ry = reference
    return (x1 - rx) * (y1 - ry) + (x2 - x1) * (y2 - ry)


@pytest.fixture
def inputs():
    cfg1 = result("CFG g=1", "cfg", [-3.0, -3.2, -2.8], [0.90, 0.88, 0.92])
    cfg3 = result("CFG g=3", "cfg", [-1.0, -1.2, -0.9], [0.70, 0.72, 0.69])
    temp = result("temperature 0.5", "temperature", [-2.5, -2.4, -2.6], [0.80, 0.81, 0.79])
    top_p = result("top-p 0.8", "top_p", [-2.2, -2.5, -2.3], [0.85, 0.84, 0.86])
    quality_model = result("distilled q", "distilled", [-1.1, -1.3, -1.0], [0.73, 0.74, 0.72])
    diversity_model = result("distilled d", "distilled", [-2.0, -2.1, -1.9], [0.80, 0.79, 0.82])
    placebo = result("placebo", "placebo", [-2.1, -2.0, -2.2], [0.78, 0.80, 0.79])
    merged = [
        result("merged lambda=0", "merged", [-1.1, -1.3, -1.0], [0.73, 0.74, 0.72]),
        result("merged lambda=1", "merged", [-2.0, -2.1, -1.9], [0.80, 0.79, 0.82]),
    ]
    return ClaimInputs(
        quality="adherence",
        sign=1.0,
        chance=-4.0,
        reference=(-4.0, 0.0),
        diversity_metrics=["diversity"],
        cfg_reference=cfg3,
        quality_model=quality_model,
        diversity_model=diversity_model,
        placebo=placebo,
        best_sampling=top_p,
        cfg=[cfg1, cfg3],
        sampling=[temp, top_p],
        merged=merged,
        fraction=0.95,
    )


def test_claims_match_hand_computations(inputs):
    inputs.hypervolume = "per_seed"  # (c) by hand below: each seed's own front
    claims = {c.claim: c for c in check_claims(inputs)}
    assert list(claims) == ["a", "a_vs_sampling", "b", "b_vs_placebo", "c", "c_vs_sampling"]

    # (a): gain over chance -4 of the quality model minus 0.95 x the reference's gain, per seed
    a = [(-1.1 + 4) - 0.95 * (-1.0 + 4), (-1.3 + 4) - 0.95 * (-1.2 + 4), (-1.0 + 4) - 0.95 * (-0.9 + 4)]
    a_vs = [(-1.1 + 4) - 0.95 * (-2.2 + 4), (-1.3 + 4) - 0.95 * (-2.5 + 4), (-1.0 + 4) - 0.95 * (-2.3 + 4)]
    b = [0.80 - 0.70, 0.79 - 0.72, 0.82 - 0.69]
    b_placebo = [0.80 - 0.78, 0.79 - 0.80, 0.82 - 0.79]
    # (c): per seed, both fronts are two non-dominated points; the hypervolume is a two-step staircase
    ref = (-4.0, 0.0)
    merged_hv = [
        two_point_hv([(-1.1, 0.73), (-2.0, 0.80)], ref),
        two_point_hv([(-1.3, 0.74), (-2.1, 0.79)], ref),
    ]
    merged_hv.append(two_point_hv([(-1.0, 0.72), (-1.9, 0.82)], ref))
    cfg_hv = [
        two_point_hv([(-3.0, 0.90), (-1.0, 0.70)], ref),
        two_point_hv([(-3.2, 0.88), (-1.2, 0.72)], ref),
    ]
    cfg_hv.append(two_point_hv([(-2.8, 0.92), (-0.9, 0.69)], ref))
    # temperature / top-p front: top-p dominates at seeds 0 and 2 (one point), not at seed 1
    sampling_hv = [(-2.2 + 4) * 0.85, two_point_hv([(-2.4, 0.81), (-2.5, 0.84)], ref), (-2.3 + 4) * 0.86]
    expected = {
        "a": a,
        "a_vs_sampling": a_vs,
        "b": b,
        "b_vs_placebo": b_placebo,
        "c": [m - c for m, c in zip(merged_hv, cfg_hv, strict=True)],
        "c_vs_sampling": [m - s for m, s in zip(merged_hv, sampling_hv, strict=True)],
    }
    for key, differences in expected.items():
        mean, se, p = by_hand(differences)
        claim = claims[key]
        assert claim.margin == pytest.approx(mean, abs=1e-12), key
        assert claim.standard_error == pytest.approx(se, abs=1e-12), key
        assert claim.p_value == pytest.approx(p, abs=1e-12), key
        assert claim.holds == (mean > 2 * se), key
        assert claim.num_seeds == 3
    assert claims["b"].holds and not claims["b_vs_placebo"].holds and not claims["c"].holds
    assert claims["a"].metric == "adherence" and claims["b"].metric == "diversity"


def test_lower_is_better_quality_is_oriented():
    # quality = a distance (lower is better), chance level 10: the gain of q is 10 - q
    ref = result("CFG g=3", "cfg", [2.0, 3.0, 2.5], [0.5, 0.5, 0.5], metric="distance")
    model = result("distilled q", "distilled", [2.2, 3.1, 2.4], [0.5, 0.5, 0.5], metric="distance")
    inputs = ClaimInputs(
        "distance", -1.0, 10.0, (10.0, 0.0), ["diversity"], cfg_reference=ref, quality_model=model
    )
    (claim,) = check_claims(inputs)
    differences = [
        (10 - 2.2) - 0.95 * (10 - 2.0),
        (10 - 3.1) - 0.95 * (10 - 3.0),
        (10 - 2.4) - 0.95 * (10 - 2.5),
    ]
    mean, se, p = by_hand(differences)
    assert claim.margin == pytest.approx(mean, abs=1e-12) and claim.p_value == pytest.approx(p, abs=1e-12)
    assert claim.holds  # 0.2, 0.25, 0.475: well above 2 SE


def test_claims_refuse_unpaired_seeds(inputs):
    inputs.placebo = result("placebo", "placebo", [-2.1, -2.0, -2.2], [0.78, 0.80, 0.79], seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="a paired claim needs the same seeds: distilled d has"):
        check_claims(inputs)


def test_claims_only_for_the_roles_present(inputs):
    inputs.placebo, inputs.merged, inputs.best_sampling = None, [], None
    assert [c.claim for c in check_claims(inputs)] == ["a", "b"]


def test_strict_json_has_no_infinity_or_nan(inputs):
    # a constant gap of exactly 0.25 (dyadic numbers): zero spread, t = +inf
    inputs.diversity_model = result("distilled d", "distilled", [-2.0, -2.1, -1.9], [0.75, 0.5, 0.625])
    inputs.placebo = result("placebo", "placebo", [-2.1, -2.0, -2.2], [0.5, 0.25, 0.375])
    claims = {c.claim: c for c in check_claims(inputs)}
    assert claims["b_vs_placebo"].t == math.inf and claims["b_vs_placebo"].p_value == 0.0
    text = json.dumps(strict_json([c.as_dict() for c in claims.values()] + [math.nan, (1.0, -math.inf)]))

    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    data = json.loads(text, parse_constant=refuse)
    assert data[3]["t"] is None and data[-2] is None and data[-1] == [1.0, None]


def test_cross_fitted_front_is_chosen_on_the_other_seeds(inputs):
    """Seed 1 alone puts temperature 0.5 on the sampling front (top-p dominates it at seeds 0 and 2); the
    mean over the other seeds never does, so the cross-fitted front at seed 1 is top-p alone."""
    claims = {c.claim: c for c in check_claims(inputs)}
    ref = (-4.0, 0.0)
    merged_hv = [
        two_point_hv([(-1.1, 0.73), (-2.0, 0.80)], ref),
        two_point_hv([(-1.3, 0.74), (-2.1, 0.79)], ref),
        two_point_hv([(-1.0, 0.72), (-1.9, 0.82)], ref),
    ]
    sampling_hv = [(-2.2 + 4) * 0.85, (-2.5 + 4) * 0.84, (-2.3 + 4) * 0.86]
    mean, se, p = by_hand([m - s for m, s in zip(merged_hv, sampling_hv, strict=True)])
    assert claims["c_vs_sampling"].margin == pytest.approx(mean, abs=1e-12)
    assert claims["c_vs_sampling"].p_value == pytest.approx(p, abs=1e-12)
    assert "cross_fit" in claims["c_vs_sampling"].detail


def test_cross_fitting_removes_the_bias_towards_families_with_more_points():
    """Two families with the same true front, one point (0.5, 0.5): family A measures it once, family B
    twelve times with independent noise. Per-seed fronts let B's luckiest copies define its front, so B
    looks better (+0.082 here); cross-fitting removes the choice by luck (+0.031 left: the union of the ~3
    copies chosen on the other seeds, scored on one seed's noise, is still a maximum). Noise 0.05, 400
    seeds, pure-Python random numbers (the same on every CPU)."""
    import random

    rng = random.Random(0)
    seeds = list(range(400))

    def noisy(name, family):
        return result(
            name,
            family,
            [0.5 + rng.gauss(0, 0.05) for _ in seeds],
            [0.5 + rng.gauss(0, 0.05) for _ in seeds],
            seeds=seeds,
        )

    one = [noisy("a", "a")]
    many = [noisy(f"b{i}", "b") for i in range(12)]
    gaps = {}
    for estimator in ("per_seed", "cross_fit"):
        hv_one = front_hypervolumes(one, "adherence", "diversity", 1.0, (0.0, 0.0), estimator)
        hv_many = front_hypervolumes(many, "adherence", "diversity", 1.0, (0.0, 0.0), estimator)
        gaps[estimator] = statistics.fmean(hv_many) - statistics.fmean(hv_one)
    assert gaps["per_seed"] > 0.05  # the luck of the best of 12 copies, on both axes
    assert 0 <= gaps["cross_fit"] < gaps["per_seed"] / 2, gaps


def test_front_hypervolumes_refuse_a_bad_estimator(inputs):
    with pytest.raises(ValueError, match="'cross_fit' or 'per_seed', got 'best'"):
        front_hypervolumes(inputs.merged, "adherence", "diversity", 1.0, (-4.0, 0.0), "best")
    single = [CandidateResult("x", {}, 1, 1.0, {"adherence": [1.0], "diversity": [0.5]}, [1], "merged")]
    with pytest.raises(ValueError, match="needs >= 2 evaluation seeds, got 1"):
        front_hypervolumes(single, "adherence", "diversity", 1.0, (-4.0, 0.0))


def test_holm_adjustment_by_hand(inputs):
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5], abs=1e-15)
    assert holm_adjust([]) == []
    claims = check_claims(inputs)
    assert [c.p_holm for c in claims] == pytest.approx(holm_adjust([c.p_value for c in claims]))
    assert all(c.p_holm >= c.p_value for c in claims)


def test_pool_training_runs_means_per_evaluation_seed():
    runs = [
        result("run0", "distilled", [-1.0, -2.0, -3.0], [0.5, 0.6, 0.7]),
        result("run1", "distilled", [-2.0, -3.0, -4.0], [0.7, 0.8, 0.9]),
    ]
    pooled = pool_training_runs("beta=0", runs, "distilled")
    assert pooled.per_seed["adherence"] == pytest.approx([-1.5, -2.5, -3.5], abs=1e-15)
    assert pooled.metrics["diversity"][0] == pytest.approx(0.7, abs=1e-15)
    assert pooled.seeds == SEEDS and pooled.family == "distilled"
    runs[1] = result("run1", "distilled", [-2.0, -3.0, -4.0], [0.7, 0.8, 0.9], seeds=[1, 2, 3])
    with pytest.raises(ValueError, match=r"run1 has evaluation seeds \[1, 2, 3\], expected \[11, 12, 13\]"):
        pool_training_runs("beta=0", runs, "distilled")


def test_training_run_claims_test_one_difference_per_run_by_hand(inputs):
    """(a) and (b) vs the placebo with training runs as the unit: run i's mean over its evaluation seeds
    against the target (a) or run i's placebo (b), a paired t-test over the runs."""
    from lightning_cfgrl.eval.training_runs import training_run_claims

    quality = [result(f"q{i}", "distilled", [-1.0 - i / 10] * 3, [0.7] * 3) for i in range(3)]
    diverse = [result(f"d{i}", "distilled", [-2.0] * 3, [0.80 + i / 100, 0.81, 0.82]) for i in range(3)]
    placebo = [result(f"p{i}", "placebo", [-2.0] * 3, [0.79, 0.78 + i / 50, 0.80]) for i in range(3)]
    claims = training_run_claims(inputs, quality, diverse, placebo, "beta=15")
    assert [c.claim for c in claims] == ["a_train_seeds", "b_vs_placebo_train_seeds"]
    gain = statistics.fmean([-1.0, -1.2, -0.9]) + 4.0  # CFG g=3 over chance -4
    a = [statistics.fmean([-1.0 - i / 10] * 3) + 4.0 - 0.95 * gain for i in range(3)]
    b = [d.mean("diversity") - p.mean("diversity") for d, p in zip(diverse, placebo, strict=True)]
    for claim, differences in zip(claims, (a, b), strict=True):
        mean, se, p = by_hand(differences)
        assert claim.margin == pytest.approx(mean, rel=1e-12) and claim.standard_error == pytest.approx(
            se, rel=1e-12
        )
        assert claim.p_value == pytest.approx(p, rel=1e-9) and claim.num_seeds == 3
        assert claim.holds == (mean > 2 * se)
    assert claims[0].statement == "beta=0 reaches 95% of CFG g=3's gain (per training seed)"
    assert claims[1].statement == "beta=15 more diverse than its placebo (per training seed)"
