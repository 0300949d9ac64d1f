"""Type checks where a value enters the Python API, so a wrong type fails there, naming the argument,
the value and its type, instead of as a raw ``TypeError`` (or a silently truncated float) later on."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def check_int(name: str, value: Any, allow_none: bool = False) -> Any:
    """``value`` if it is an integer (``numbers.Integral``, not bool) or, with ``allow_none``, None."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer{' or None' if allow_none else ''}, got {value!r} "
            f"({type(value).__name__})"
        )
    return int(value)


def check_real(name: str, value: Any, allow_none: bool = False) -> Any:
    """``value`` if it is a real number (not bool, not a string such as ``"1e-3"``) or allowed None."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = f"; pass the number {value}, not a string" if isinstance(value, str) else ""
        raise TypeError(
            f"{name} must be a real number{' or None' if allow_none else ''}, got {value!r} "
            f"({type(value).__name__}){hint}"
        )
    return value


def check_seed(value: Any, name: str = "seed") -> int:
    """An integer seed within what ``torch.Generator.manual_seed`` accepts."""
    seed = check_int(name, value)
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise ValueError(f"{name} must be an integer in [-2**63, 2**64 - 1] (a torch seed), got {seed}")
    return seed


def check_settings(name: str, value: Any, cls: type) -> Any:
    """``value`` as the settings dataclass ``cls`` of argument ``name``: the object itself, or a dict of
    its fields (a Python caller's shorthand), checked by ``cls``; anything else fails naming ``name``."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{name} has no setting(s) {unknown}; its settings are {sorted(known)}")
        return cls(**value)
    raise TypeError(f"{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")
