"""Per-sample quality scorers: ``scorer(frames [N, K, T], condition) -> [N]``, higher is better."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from lightning_cfgrl.core.condition import Condition


class Scorer(ABC):
    """Base class of quality scorers; ``name`` labels the logged metric (``val/<name>``).

    A base class rather than a Protocol so LightningCLI can build scorers from ``class_path`` YAML.
    """

    name: str = "score"

    @abstractmethod
    def __call__(self, frames: Tensor, condition: Condition) -> Tensor: ...
