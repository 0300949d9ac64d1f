"""Hyperparameter hygiene shared by the LightningModules: never pickle live objects into checkpoints."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def instantiate_spec(spec: Mapping[str, Any]) -> Any:
    """Build ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (how checkpoints record the generator)."""
    if "class_path" not in spec:
        raise ValueError(f"a generator spec needs a 'class_path' entry, got keys {sorted(spec)}")
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"class_path {spec['class_path']!r} cannot be imported ({err}); expected 'package.module.Class'"
        ) from err
    return cls(**dict(spec.get("init_args") or {}))


def is_config(value: Any) -> bool:
    """True for plain config values (what LightningCLI records), False for live objects."""
    if isinstance(value, (nn.Module, torch.optim.Optimizer)) or callable(value):
        return False
    if isinstance(value, (list, tuple)):
        return all(is_config(v) for v in value)
    return True


def save_safe_hyperparameters(module: Any, objects: Mapping[str, Any]) -> None:
    """``save_hyperparameters`` minus live objects; a generator with ``spec()`` is recorded as its spec,
    so ``load_from_checkpoint`` rebuilds it (and ``weights_only`` loading never meets a pickled module)."""
    live = [name for name, value in objects.items() if not is_config(value)]
    module.save_hyperparameters(ignore=live, frame=_caller_frame())
    generator = objects.get("generator")
    if "generator" in live and hasattr(generator, "spec"):
        module.hparams["generator"] = generator.spec()


def _caller_frame() -> Any:
    import inspect

    return inspect.currentframe().f_back.f_back
