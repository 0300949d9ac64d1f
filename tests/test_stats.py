"""Mean ± SE (strict) and the exact Student-t tail against closed forms, tables and numerical integration."""

import math

import pytest

from lightning_cfgrl.eval.stats import mean_se, paired_t_test, student_t_sf


def _sf_by_integration(t: float, df: int, n: int = 4000) -> float:
    """``1/2 - int_0^t density``, Simpson's rule in float64 (independent of the series)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def density(x: float) -> float:
        return c * (1 + x * x / df) ** (-(df + 1) / 2)

    h = t / n
    total = density(0.0) + density(t) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    return 0.5 - total * h / 3


def test_t_tail_matches_closed_forms():
    for t in (-3.0, -0.5, 0.0, 0.7, 1.0, 4.2):
        assert student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-15)  # Cauchy
        assert student_t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-15)
    assert student_t_sf(1.0, 1) == pytest.approx(0.25, abs=1e-15)
    assert student_t_sf(math.inf, 3) == 0.0 and student_t_sf(-math.inf, 3) == 1.0


@pytest.mark.parametrize("df", range(1, 13))
def test_t_tail_matches_numerical_integration(df):
    for t in (0.3, 1.0, 2.5, -1.7):
        assert student_t_sf(t, df) == pytest.approx(_sf_by_integration(t, df), abs=1e-10)


def test_t_tail_matches_table_quantiles():
    # two-sided 5 % and 1 % critical values (t tables; scipy.stats.t.ppf)
    table = {(4, 2.7764451051977987): 0.025, (10, 2.2281388519649385): 0.025, (30, 2.0422724563012373): 0.025}
    table |= {(5, 4.032142983557536): 0.005}
    for (df, t), p in table.items():
        assert student_t_sf(t, df) == pytest.approx(p, abs=1e-9)


def test_t_tail_rejects_bad_degrees_of_freedom():
    for df in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="df must be an integer >= 1"):
            student_t_sf(1.0, df)


def test_mean_se_is_strict():
    mean, se = mean_se([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3, abs=1e-15)
    sample_var = ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2
    assert se == pytest.approx(math.sqrt(sample_var / 3), abs=1e-15)
    assert mean_se([0.5, 0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_se([1.0])
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_se([])
    with pytest.raises(ValueError, match="must be finite"):
        mean_se([1.0, math.nan])
    with pytest.raises(ValueError, match="must be finite"):
        mean_se([1.0, math.inf])


def test_paired_t_test_by_hand():
    differences = [0.3, 0.1, 0.5]
    result = paired_t_test(differences)
    mean = 0.3
    se = math.sqrt(((0.0) ** 2 + 0.2**2 + 0.2**2) / 2 / 3)
    t = mean / se
    assert result.mean == pytest.approx(mean, abs=1e-15) and result.standard_error == pytest.approx(
        se, abs=1e-15
    )
    assert result.df == 2 and result.t == pytest.approx(t, rel=1e-12)
    assert result.p_value == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-14)
    # zero spread: the limits, never NaN
    assert paired_t_test([0.2, 0.2]).p_value == 0.0 and paired_t_test([0.2, 0.2]).t == math.inf
    assert paired_t_test([-0.2, -0.2]).p_value == 1.0
    assert paired_t_test([0.0, 0.0]).t == 0.0 and paired_t_test([0.0, 0.0]).p_value == 0.5
