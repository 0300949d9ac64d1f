"""The evaluation protocol, fixed in code before any result was seen.

* **Evaluation seeds** (every candidate is sampled with the same ones, so comparisons are paired per
  seed) and **selection seeds** (used only to *choose* the best temperature / top-p point, which is then
  tested on the evaluation seeds) are disjoint by construction, and disjoint from seeds 0-999 that
  training configs and examples use.
* At least :data:`DEFAULT_NUM_SEEDS` evaluation seeds; the 2-SE rule and a one-sided paired t-test over
  them (:mod:`lightning_cfgrl.eval.stats`).
* The CFG reference is guidance :data:`DEFAULT_CFG_REFERENCE` (the paper's), and "reaches the quality"
  means :data:`DEFAULT_FRACTION` of the reference's quality gain over the scorer's chance level.
"""

from __future__ import annotations

DEFAULT_NUM_SEEDS = 5
DEFAULT_NUM_SELECTION_SEEDS = 3
DEFAULT_CFG_REFERENCE = 3.0
DEFAULT_FRACTION = 0.95
MAX_SEEDS = 1000

_EVALUATION_BASE = 1_000_000
_SELECTION_BASE = 2_000_000


def evaluation_seeds(n: int) -> list[int]:
    """The first ``n`` evaluation seeds (the same list on every machine and run)."""
    _check_count(n, "num_seeds", minimum=2)
    return [_EVALUATION_BASE + i for i in range(n)]


def selection_seeds(n: int) -> list[int]:
    """The first ``n`` selection seeds, disjoint from every evaluation seed."""
    _check_count(n, "num_selection_seeds", minimum=2)  # evaluate_candidate needs 2 for a standard error
    return [_SELECTION_BASE + i for i in range(n)]


def _check_count(n: int, name: str, minimum: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not minimum <= n <= MAX_SEEDS:
        why = " to report standard errors" if minimum == 2 else ""
        raise ValueError(f"{name} must be an integer in [{minimum}, {MAX_SEEDS}]{why}, got {n!r}")


__all__ = [
    "DEFAULT_CFG_REFERENCE",
    "DEFAULT_FRACTION",
    "DEFAULT_NUM_SEEDS",
    "DEFAULT_NUM_SELECTION_SEEDS",
    "evaluation_seeds",
    "selection_seeds",
]
