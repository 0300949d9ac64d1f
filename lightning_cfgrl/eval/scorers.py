"""Per-sample quality scorers: ``scorer(frames [N, K, T], condition) -> [N]``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from lightning_cfgrl.core.condition import Condition


class Scorer(ABC):
    """Base class of quality scorers. A scorer carries what an evaluation needs to read its numbers:

    * ``name`` labels the metric (``val/<name>``, a column of ``cfgrl evaluate``'s table);
    * ``higher_is_better``: the direction (False for a loss, a distance, a perplexity);
    * ``chance``: the score of a sample that carries no information about what is scored (e.g.
      ``log 1/P`` for prompt adherence over P equally likely prompts), or ``None`` when unknown. It is
      the zero of "x % of the quality gain" and the quality coordinate of the hypervolume reference.

    Subclasses set these as class attributes or properties. A base class rather than a Protocol so
    LightningCLI and ``cfgrl evaluate`` can build scorers from ``class_path`` YAML.
    """

    name: str = "score"
    higher_is_better: bool = True
    chance: float | None = None

    @abstractmethod
    def __call__(self, frames: Tensor, condition: Condition) -> Tensor: ...
