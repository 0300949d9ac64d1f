"""The evaluation protocol, fixed in code before any result was seen.

* **Evaluation seeds** (every candidate is sampled with the same ones, so comparisons are paired per
  seed) and **selection seeds** (used only to *choose* the best temperature / top-p point, which is then
  tested on the evaluation seeds) are disjoint by construction, and disjoint from seeds 0-999 that
  training configs and examples use.
* At least :data:`DEFAULT_NUM_SEEDS` evaluation seeds; the 2-SE rule and a one-sided paired t-test over
  them (:mod:`lightning_cfgrl.eval.stats`).
* The CFG reference is guidance :data:`DEFAULT_CFG_REFERENCE` (the paper's), and "reaches the quality"
  means :data:`DEFAULT_FRACTION` of the reference's quality gain over the scorer's chance level.

:class:`EvaluationProtocol` holds the settings of one evaluation (``protocol:`` in a ``cfgrl evaluate``
YAML), with these defaults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_NUM_SEEDS = 5
DEFAULT_NUM_SELECTION_SEEDS = 3
DEFAULT_CFG_REFERENCE = 3.0
DEFAULT_FRACTION = 0.95
MAX_SEEDS = 1000

_EVALUATION_BASE = 1_000_000
_SELECTION_BASE = 2_000_000


@dataclass(frozen=True)
class EvaluationProtocol:
    """How :class:`~lightning_cfgrl.eval.Evaluation` samples and compares the candidates.

    Args:
        num_frames: frames T sampled per sequence.
        num_samples: samples per prompt (diversity is measured among them; >= 2).
        num_seeds: evaluation seeds (the first ``num_seeds`` of the fixed list, >= 2; 5 by default).
        num_selection_seeds: seeds that choose the best temperature / top-p point (disjoint from the
            evaluation seeds).
        quality: the scorer name on the plane's quality axis and in the claims (default: the first).
        reference: hypervolume reference ``(quality, diversity)``; its quality is also the chance level
            of claim (a). Default: ``(chance level of the quality scorer, 0)``.
        fraction: claim (a)'s share of the reference's quality gain.
    """

    num_frames: int
    num_samples: int = 16
    num_seeds: int = DEFAULT_NUM_SEEDS
    num_selection_seeds: int = DEFAULT_NUM_SELECTION_SEEDS
    quality: str | None = None
    reference: tuple[float, float] | None = None
    fraction: float = DEFAULT_FRACTION

    def __post_init__(self) -> None:
        for name, minimum in (("num_frames", 1), ("num_samples", 2)):  # diversity is measured among samples
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"protocol.{name} must be an integer >= {minimum}, got {value!r}")
        try:
            evaluation_seeds(self.num_seeds)
        except ValueError as err:
            raise ValueError(f"protocol.{err}") from None
        if self.quality is not None and not isinstance(self.quality, str):
            raise TypeError(f"protocol.quality must be a scorer name or None, got {self.quality!r}")
        if self.reference is not None:
            values = list(self.reference) if isinstance(self.reference, Sequence) else [self.reference]
            if len(values) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise ValueError(
                    f"protocol.reference must be two finite numbers [quality, diversity], got {self.reference!r}"
                )
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ValueError(f"protocol.fraction must be in (0, 1], got {self.fraction!r}")

    def evaluation_seeds(self) -> list[int]:
        """The evaluation seeds (:func:`evaluation_seeds`)."""
        return evaluation_seeds(self.num_seeds)

    def selection_seeds(self) -> list[int]:
        """The selection seeds (:func:`selection_seeds`), checked only when an evaluation has a point to
        select."""
        try:
            return selection_seeds(self.num_selection_seeds)
        except ValueError as err:
            raise ValueError(f"protocol.{err}") from None


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
    "EvaluationProtocol",
    "evaluation_seeds",
    "selection_seeds",
]
