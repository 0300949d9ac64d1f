"""Condition batches: a tensor ``[B, ...]`` or a dict of tensors that all lead with the batch dim.

These helpers let the sampler and the objectives treat both forms alike (repeat for G samples per
prompt, stack ``[cond; null]`` for CFG, move to a device).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Union

import torch
from einops import repeat
from torch import Tensor

Condition = Union[Tensor, dict[str, Tensor]]


def _map(condition: Condition, fn: Callable[[Tensor], Tensor]) -> Condition:
    if isinstance(condition, Tensor):
        return fn(condition)
    if isinstance(condition, Mapping):
        return {key: fn(value) for key, value in condition.items()}
    raise TypeError(f"condition must be a Tensor or a dict of Tensors, got {type(condition).__name__}")


def condition_batch_size(condition: Condition) -> int:
    """Leading dim shared by every tensor of the condition (error if they disagree)."""
    if isinstance(condition, Tensor):
        if condition.dim() == 0:
            raise ValueError("condition tensor must have a leading batch dim, got a scalar")
        return condition.shape[0]
    if not isinstance(condition, Mapping) or not condition:
        raise TypeError(f"condition must be a Tensor or a non-empty dict of Tensors, got {condition!r:.80}")
    sizes = {key: value.shape[0] for key, value in condition.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"condition tensors disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def repeat_condition(condition: Condition, num_samples: int) -> Condition:
    """``[B, ...]`` -> ``[B * num_samples, ...]``, the samples of one prompt adjacent."""
    return _map(condition, lambda x: repeat(x, "b ... -> (b g) ...", g=num_samples))


def cat_conditions(first: Condition, second: Condition) -> Condition:
    """Stack two condition batches along the batch dim (``[cond; null]`` for CFG)."""
    if isinstance(first, Tensor):
        return torch.cat([first, second], dim=0)
    return {key: torch.cat([first[key], second[key]], dim=0) for key in first}


def condition_to(condition: Condition, device: torch.device | str) -> Condition:
    return _map(condition, lambda x: x.to(device))


def select_condition(condition: Condition, index: Tensor | slice) -> Condition:
    return _map(condition, lambda x: x[index])


def where_condition(keep: Tensor, condition: Condition, other: Condition) -> Condition:
    """Per sample: ``condition[b]`` where ``keep[b]`` (``[B]`` bool), else ``other[b]`` (condition
    dropout: ``other`` is the null condition). Works for ``[B]``, ``[B, A]``, ... and dicts of them."""

    def pick(x: Tensor, y: Tensor) -> Tensor:
        return torch.where(keep.reshape(-1, *([1] * (x.dim() - 1))), x, y)

    if isinstance(condition, Tensor):
        return pick(condition, other)
    return {key: pick(value, other[key]) for key, value in condition.items()}
