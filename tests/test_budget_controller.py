"""The quality-budget controller (lightning_cfgrl.core.budget): its update rules in float64, the measured
reference, the over-budget count, resume, and that the closed loop holds a KL at its target."""

from __future__ import annotations

import math
import random

import pytest

from lightning_cfgrl.core.budget import ERROR_CLIP, BudgetController, QualityBudget


def _ema_sequence(values: list[float], decay: float) -> list[float]:
    """Bias-corrected EMA, written out independently of the controller."""
    out, ema = [], 0.0
    for n, v in enumerate(values, start=1):
        ema = decay * ema + (1 - decay) * v
        out.append(ema / (1 - decay**n))
    return out


@pytest.mark.parametrize("controller", ["proportional", "dual"])
def test_update_rule_matches_the_formula_in_float64(controller: str) -> None:
    budget = QualityBudget(max_increase=0.5, reference_kl=0.2, controller=controller, rate=0.1, smoothing=0.8)
    c = BudgetController(budget, initial_beta=4.0)
    kls = [0.45, 0.31, 0.29, 0.1, 0.05, 0.33]
    target = 0.2 * 1.5
    beta = 4.0
    for kl, smoothed in zip(kls, _ema_sequence(kls, 0.8), strict=True):
        error = min(max((smoothed - target) / target, -ERROR_CLIP), ERROR_CLIP)
        if controller == "proportional":
            beta = beta * (1 - 0.1 * error)
        else:
            beta = 1 / max(1 / beta + 0.1 * error, 1 / budget.beta_max)
        assert c.update(kl) == pytest.approx(beta, rel=1e-12, abs=0)
        assert c.smoothed == pytest.approx(smoothed, rel=1e-12)
    assert c.target == pytest.approx(target, rel=1e-15)


def test_kl_over_target_lowers_beta_and_under_target_raises_it() -> None:
    for controller in ("proportional", "dual"):
        up = BudgetController(QualityBudget(reference_kl=1.0, controller=controller, smoothing=0.0), 2.0)
        down = BudgetController(QualityBudget(reference_kl=1.0, controller=controller, smoothing=0.0), 2.0)
        assert up.update(0.5) > 2.0  # KL under the 1.25 target: more room for diversity
        assert down.update(2.0) < 2.0  # over it: back off


def test_absolute_budget_adds_nats_per_token() -> None:
    budget = QualityBudget(max_increase=0.05, relative=False, reference_kl=0.2)
    assert budget.target(0.2) == pytest.approx(0.25, rel=1e-15)
    assert QualityBudget(max_increase=0.25).target(0.2) == pytest.approx(0.25, rel=1e-15)


def test_reference_is_measured_with_beta_held_at_zero_then_beta_starts() -> None:
    c = BudgetController(QualityBudget(reference_steps=4, smoothing=0.5), initial_beta=3.0)
    assert c.beta == 0.0 and c.measuring
    for kl in (0.1, 0.3, 0.2):
        assert c.update(kl) == 0.0
    assert c.update(0.4) == 3.0  # the fourth step closes the reference
    assert c.reference == pytest.approx(0.25, rel=1e-15)
    assert c.target == pytest.approx(0.25 * 1.25, rel=1e-15)


def test_over_budget_steps_count_only_consecutive_steps_beyond_the_clip() -> None:
    c = BudgetController(QualityBudget(reference_kl=1.0, smoothing=0.0), initial_beta=1.0)
    for _ in range(3):
        c.update(2.0)  # 60 % over the 1.25 target
    assert c.over_budget_steps == 3
    c.update(1.3)  # 4 % over: within the clip
    assert c.over_budget_steps == 0


def test_beta_never_exceeds_beta_max_and_dual_never_reaches_zero() -> None:
    c = BudgetController(QualityBudget(reference_kl=1.0, controller="dual", beta_max=5.0, smoothing=0.0), 4.0)
    for _ in range(200):
        c.update(0.0)
    assert c.beta == pytest.approx(5.0, rel=1e-12)
    for _ in range(2000):
        c.update(100.0)
    assert c.beta == pytest.approx(1 / (1 / 5.0 + 2000 * 0.1 * ERROR_CLIP), rel=1e-9)  # lam grows linearly


def test_resume_continues_the_same_trajectory() -> None:
    budget = QualityBudget(reference_steps=3, controller="dual")
    rng = random.Random(0)
    kls = [0.2 + 0.1 * rng.random() for _ in range(40)]
    whole = BudgetController(budget, 2.0)
    betas = [whole.update(kl) for kl in kls]
    first = BudgetController(budget, 2.0)
    for kl in kls[:17]:
        first.update(kl)
    resumed = BudgetController(budget, 2.0)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.update(kl) for kl in kls[17:]] == betas[17:]


def test_gain_budget_gives_back_a_fraction_of_the_kl_the_distillation_closed() -> None:
    """relative_to='gain': target = ref + f (kl_base - ref), in float64, from given or measured levels."""
    given = BudgetController(
        QualityBudget(max_increase=0.25, relative_to="gain", reference_kl=0.01, base_kl=0.41), 1.0
    )
    assert given.target == pytest.approx(0.01 + 0.25 * 0.40, rel=1e-15)
    # a base no worse than the reference: nothing to give back, the target is the reference itself
    assert QualityBudget(relative_to="gain").target(0.3, 0.2) == 0.3
    budget = QualityBudget(max_increase=0.5, relative_to="gain", reference_steps=3, smoothing=0.0)
    c = BudgetController(budget, 2.0)
    refs, bases = [0.011, 0.009, 0.013], [0.50, 0.42, 0.46]
    for kl, base in zip(refs, bases, strict=True):
        assert c.update(kl, base) == (2.0 if base == bases[-1] else 0.0)
    ref, base = sum(refs) / 3, sum(bases) / 3
    assert (c.reference, c.base) == (pytest.approx(ref, rel=1e-15), pytest.approx(base, rel=1e-15))
    assert c.target == pytest.approx(ref + 0.5 * (base - ref), rel=1e-15)
    # measured: no base KL needed any more; the dual step is the formula's on the gain target
    kl = 0.3
    error = min(max((kl - c.target) / c.target, -ERROR_CLIP), ERROR_CLIP)
    assert c.update(kl) == pytest.approx(1 / (1 / 2.0 + budget.rate * error), rel=1e-12)
    resumed = BudgetController(budget, 2.0)
    resumed.load_state_dict(c.state_dict())
    assert (resumed.reference, resumed.base, resumed.target) == (c.reference, c.base, c.target)


def test_gain_budget_refuses_a_missing_base_kl_while_measuring() -> None:
    c = BudgetController(QualityBudget(relative_to="gain"), 1.0)
    with pytest.raises(ValueError, match="base_kl"):
        c.update(0.01)
    with pytest.raises(ValueError, match="base_kl"):
        c.update(0.01, math.nan)


@pytest.mark.parametrize("controller", ["proportional", "dual"])
def test_closed_loop_holds_the_kl_at_its_target(controller: str) -> None:
    """A toy plant whose KL rises with beta (kl = 0.2 + 0.02 beta + noise): from a beta that is far
    too high (the failure seen on a held-out model), the controller brings the KL back to the target."""
    rng = random.Random(1)
    c = BudgetController(QualityBudget(max_increase=0.25, reference_kl=0.2, controller=controller), 15.0)
    smoothed = []
    for _ in range(1500):
        c.update(0.2 + 0.02 * c.beta + rng.gauss(0.0, 0.02))
        smoothed.append(c.smoothed)
    tail = smoothed[-500:]
    assert abs(sum(tail) / len(tail) - 0.25) < 0.01  # target 0.25, noise sd 0.02 per step
    assert c.beta == pytest.approx(2.5, abs=1.0)  # the beta that meets it: (0.25 - 0.2) / 0.02


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_increase": 0.0}, "max_increase"),
        ({"max_increase": math.nan}, "max_increase"),
        ({"reference_kl": -1.0}, "reference_kl"),
        ({"reference_steps": 0}, "reference_steps"),
        ({"controller": "pid"}, "controller"),
        ({"rate": 0.0}, "rate"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"beta_max": math.inf}, "beta_max"),
        ({"relative_to": "base"}, "relative_to"),
        ({"relative_to": "gain", "relative": False}, "relative=True"),
        ({"relative_to": "gain", "reference_kl": 0.1}, "base_kl"),
        ({"relative_to": "gain", "reference_kl": 0.1, "base_kl": -0.3}, "base_kl"),
    ],
)
def test_bad_budget_settings_are_refused_by_name(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        QualityBudget(**kwargs)


def test_initial_beta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="initial beta"):
        BudgetController(QualityBudget(), 0.0)
