"""Statistics over evaluation seeds: mean ± standard error and the paired t-test. The one home of both.

Strict semantics, so that no NaN ever reaches a table or a JSON file:

* :func:`mean_se` needs at least two finite values (one value has no standard error) and raises
  ``ValueError`` otherwise; the standard error is the sample standard deviation (``n - 1``) over
  ``sqrt(n)`` and may be 0.
* :func:`paired_t_test` tests ``H1: mean > 0`` on per-seed differences with ``n - 1`` degrees of
  freedom and returns a one-sided p-value. Zero spread is defined by the limit: ``t = +inf`` (p = 0) for
  a positive mean, ``-inf`` (p = 1) for a negative one, and ``t = 0`` (p = 0.5) when every difference is 0.

The Student-t tail is exact for integer degrees of freedom (the finite series of Abramowitz & Stegun
26.7.3 / 26.7.4), so no scipy is needed; its absolute error is that of float64 arithmetic (~1e-15).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, standard error of the mean)`` of >= 2 finite values."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"a standard error needs at least 2 values (one per seed), got {len(values)}")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values must be finite to average them, got {bad[:3]} among {len(values)}")
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def student_t_sf(t: float, df: int) -> float:
    """``P(T > t)`` for Student's t with integer ``df >= 1`` degrees of freedom (exact series)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    if math.isnan(t):
        raise ValueError("t must be a number, got nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    theta = math.atan2(t, math.sqrt(df))  # in (-pi/2, pi/2), odd in t
    sin, cos = math.sin(theta), math.cos(theta)
    cos2 = cos * cos
    series, term = 1.0, 1.0
    if df % 2:  # odd: A = 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2.4/(3.5) cos^4 + ... up to cos^(df-3)))
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * cos2
            series += term
        a = 2 / math.pi * (theta + (sin * cos * series if df > 1 else 0.0))
    else:  # even: A = sin (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ... up to cos^(df-2))
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * cos2
            series += term
        a = sin * series
    # a = P(|T| < |t|) signed like t, so P(T <= t) = (1 + a) / 2
    return min(1.0, max(0.0, (1.0 - a) / 2))


@dataclass(frozen=True)
class TTest:
    """A one-sided paired t-test of ``H1: mean difference > 0``."""

    mean: float
    standard_error: float
    t: float  # +-inf when the standard error is 0 and the mean is not
    df: int
    p_value: float


def paired_t_test(differences: Sequence[float]) -> TTest:
    """One-sided t-test on per-seed paired differences (``H1: mean > 0``), ``n - 1`` degrees of freedom."""
    mean, se = mean_se(differences)
    if se > 0:
        t = mean / se
    else:
        t = math.copysign(math.inf, mean) if mean != 0 else 0.0
    df = len(differences) - 1
    return TTest(mean, se, t, df, student_t_sf(t, df))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over the m tests), in the input order.

    Sorted ascending, the k-th smallest p (k = 0..m-1) becomes ``max over j <= k of min(1, (m - j) p_(j))``:
    uniformly more powerful than Bonferroni's ``m p`` and valid under any dependence between the tests.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


__all__ = ["TTest", "holm_adjust", "mean_se", "paired_t_test", "student_t_sf"]
