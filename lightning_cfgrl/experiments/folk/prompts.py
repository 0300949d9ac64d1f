"""Prompts from real metadata: every (collection, meter, mode) combination with enough tunes, as 1-based
attribute ids ``[P, 3]`` (0 is the null prompt), and a fixed split of the tunes into the generator's,
the judge's and a test share (by a hash of each tune's source, so adding files moves no tune)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_cfgrl.experiments.folk.corpus import Tune

ATTRIBUTES = ("collection", "meter", "mode")
SHARES = ("generator", "judge", "test")


@dataclass(frozen=True)
class TuneSplit:
    """Fractions of the tunes that train the generator, train the judge and test the judge (the
    generator never sees the judge's tunes; the judge is tested on tunes neither was trained on)."""

    generator: float = 0.6
    judge: float = 0.3
    test: float = 0.1

    def __post_init__(self) -> None:
        values = (self.generator, self.judge, self.test)
        if any(v <= 0 for v in values) or abs(sum(values) - 1.0) > 1e-9:
            raise ValueError(f"TuneSplit fractions must be > 0 and sum to 1, got {values}")

    def share_of(self, tune: Tune, seed: int = 0) -> str:
        """``"generator"``, ``"judge"`` or ``"test"``: a stable function of the tune's source and ``seed``."""
        digest = hashlib.sha256(f"{seed}|{tune.source}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        return "generator" if u < self.generator else "judge" if u < self.generator + self.judge else "test"


class FolkPrompts:
    """The prompt table built from ``tunes``: a combination is kept when it has ``min_tunes`` tunes or more.

    ``names[a]`` lists attribute ``a``'s values (id ``i`` is ``names[a][i - 1]``); ``prompts`` is
    ``[P, 3]`` int64; ``counts[p]`` the tunes of prompt ``p``.
    """

    def __init__(self, tunes: Sequence[Tune], min_tunes: int = 40) -> None:
        if min_tunes < 1:
            raise ValueError(f"min_tunes must be >= 1, got {min_tunes}")
        counts = Counter(self.key(t) for t in tunes if t.meter != "none")
        kept = sorted(k for k, n in counts.items() if n >= min_tunes)
        if not kept:
            raise ValueError(
                f"no (collection, meter, mode) combination has >= {min_tunes} tunes among {len(tunes)} tunes; "
                "lower min_tunes or add files"
            )
        self.names = tuple(tuple(sorted({k[a] for k in kept})) for a in range(len(ATTRIBUTES)))
        self.combos = kept
        self.counts = [counts[k] for k in kept]
        self._index = {k: i for i, k in enumerate(kept)}
        self.prompts = torch.tensor(
            [[self.names[a].index(k[a]) + 1 for a in range(len(ATTRIBUTES))] for k in kept], dtype=torch.long
        )

    @staticmethod
    def key(tune: Tune) -> tuple[str, str, str]:
        return (tune.collection, tune.meter, tune.mode)

    @property
    def num_prompts(self) -> int:
        return len(self.combos)

    @property
    def attribute_sizes(self) -> tuple[int, ...]:
        return tuple(len(n) for n in self.names)

    def index_of(self, tune: Tune) -> int | None:
        """The prompt row of a tune, or None when its combination was not kept."""
        return self._index.get(self.key(tune))

    def prompt_index(self, condition: Tensor) -> Tensor:
        """``[B, 3]`` attribute ids -> ``[B]`` prompt rows; a combination that is not a prompt raises."""
        if condition.dim() != 2 or condition.shape[1] != len(ATTRIBUTES):
            raise ValueError(f"condition must be attribute ids [B, 3], got shape {tuple(condition.shape)}")
        rows = []
        for ids in condition.cpu().tolist():
            key = tuple(
                self.names[a][i - 1] if 0 < i <= len(self.names[a]) else None for a, i in enumerate(ids)
            )
            if key not in self._index:
                raise ValueError(f"condition {ids} ({key}) is not one of the {self.num_prompts} folk prompts")
            rows.append(self._index[key])
        return torch.tensor(rows, dtype=torch.long)

    def describe(self, condition: Tensor) -> str:
        """``[3]`` ids -> e.g. "han, 2/4, minor" (0 reads as "any")."""
        return ", ".join(
            self.names[a][i - 1] if 0 < i <= len(self.names[a]) else "any"
            for a, i in enumerate(condition.tolist())
        )

    def meter_of(self, condition: Tensor) -> list[str]:
        """``[B, 3]`` -> the meter string of each row."""
        return [self.names[1][i - 1] for i in condition[:, 1].tolist()]

    def mode_of(self, condition: Tensor) -> list[str]:
        return [self.names[2][i - 1] for i in condition[:, 2].tolist()]


__all__ = ["ATTRIBUTES", "SHARES", "FolkPrompts", "TuneSplit"]
