"""Interleaved timing: every runner once per round, odd rounds in reverse order (ABBA), so a load that
drifts during the run favours neither side of a pair; round 0 is a warm-up and is not recorded.
Ratios are medians of per-round ratios (both sides of a pair saw the same machine load), and beside them
best-over-best ratios (:func:`best_ratio`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(
    runners: dict[str, Callable[[], None]], rounds: int, label: str = "", warmup: bool = True
) -> dict[str, list[float]]:
    """``{name: [seconds per timed round]}`` over ``rounds`` timed rounds (after one warm-up round)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for rnd in range(0 if warmup else 1, rounds + 1):
        for name in order if rnd % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            runners[name]()
            seconds = time.perf_counter() - start
            if rnd > 0:
                times[name].append(seconds)
            warm = " (warm-up)" if rnd == 0 else ""
            print(f"{label}round {rnd}{warm} {name}: {seconds:.3f} s", flush=True)
    return times


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``time(numerator) / time(denominator)``."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))


def best_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """``min time(numerator) / min time(denominator)``: the least disturbed run of each, steadier than
    the paired median when other processes load the machine unevenly."""
    return min(times[numerator]) / min(times[denominator])


def summary_rows(times: dict[str, list[float]], tokens: int) -> list[dict]:
    """One record per runner: median / min / max seconds, tokens/s at the median, all times."""
    return [
        {
            "name": name,
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "tokens_per_s": tokens / statistics.median(ts),
            "times_s": ts,
        }
        for name, ts in times.items()
    ]
