"""The ``Scorer`` protocol: per-sample quality, ``scorer(frames [N, K, T], condition) -> [N]``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from lightning_cfgrl.condition import Condition


@runtime_checkable
class Scorer(Protocol):
    """Higher is better. ``name`` labels the logged metric (``val/<name>``)."""

    name: str

    def __call__(self, frames: Tensor, condition: Condition) -> Tensor: ...
