"""Hyperparameter hygiene shared by the LightningModules: never pickle live objects into checkpoints,
and record how to rebuild the generator (its *spec*) so that checkpoints are self-contained.

A spec is ``{"class_path": "pkg.mod.Class", "init_args": {...}}``. Where a module's spec comes from, in
order: its own ``spec()`` method (:func:`lightning_cfgrl.core.generator.class_spec` formats one); the
dict it was built from by :func:`instantiate_spec`; the ``class_path``/``init_args`` LightningCLI built it
from (YAML). Without any of these a checkpoint holds the weights only, and the module warns at
construction.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn

# objects built by instantiate_spec -> the spec they were built from (weak: never keeps a model alive)
_BUILT_FROM: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def instantiate_spec(spec: Mapping[str, Any]) -> Any:
    """Build ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (how checkpoints record the generator).

    Init args that are specs themselves (a dict with a ``class_path``, e.g. the module a
    ``ModuleAdapter`` wraps) are built first, as LightningCLI does.
    """
    if "class_path" not in spec:
        raise ValueError(f"a generator spec needs a 'class_path' entry, got keys {sorted(spec)}")
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"class_path {spec['class_path']!r} cannot be imported ({err}); expected 'package.module.Class'"
        ) from err
    init_args = {
        name: instantiate_spec(value) if isinstance(value, Mapping) and "class_path" in value else value
        for name, value in dict(spec.get("init_args") or {}).items()
    }
    obj = cls(**init_args)
    try:
        _BUILT_FROM[obj] = {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}
    except TypeError:  # not weak-referenceable (a plain value): nothing to remember
        pass
    return obj


def spec_of(obj: Any, given: Any = None) -> tuple[dict[str, Any] | None, str]:
    """``(spec, "")`` for the spec that rebuilds ``obj``, or ``(None, why not)``.

    ``given``: the config LightningCLI built ``obj`` from, if any (used when ``obj`` has no ``spec()``).
    """
    name = type(obj).__name__
    reason = (
        f"{name} has no spec() method; give it one returning "
        "lightning_cfgrl.core.generator.class_spec(self, {its constructor arguments})"
    )
    method = getattr(obj, "spec", None)
    if callable(method):
        try:
            spec = method()
        except ValueError as err:
            spec, reason = None, f"{name}.spec() cannot record it: {err}"
        if isinstance(spec, Mapping) and "class_path" in spec:
            return dict(spec), ""
        if spec is not None:
            reason = f"{name}.spec() returned {spec!r:.80}, not a {{'class_path', 'init_args'}} dict"
    if obj in _BUILT_FROM:
        return dict(_BUILT_FROM[obj]), ""
    if isinstance(given, Mapping) and "class_path" in given:
        return {"class_path": given["class_path"], "init_args": dict(given.get("init_args") or {})}, ""
    return None, reason


def is_config(value: Any) -> bool:
    """True for plain config values (what LightningCLI records), False for live objects."""
    if isinstance(value, (nn.Module, torch.optim.Optimizer)) or callable(value):
        return False
    if isinstance(value, (list, tuple)):
        return all(is_config(v) for v in value)
    return True


def save_safe_hyperparameters(module: Any, objects: Mapping[str, Any]) -> None:
    """``save_hyperparameters`` minus live objects; a live ``nn.Module`` is recorded as its spec (see
    :func:`spec_of`), so ``load_from_checkpoint`` rebuilds it and ``weights_only`` loading never meets a
    pickled module. A ``"generator"`` without a spec gets a warning now, not a failure at reload."""
    given = _cli_given_hyperparameters()
    live = [name for name, value in objects.items() if not is_config(value)]
    module.save_hyperparameters(ignore=live, frame=_caller_frame())
    for name in live:
        if not isinstance(objects[name], nn.Module):
            continue
        spec, reason = spec_of(objects[name], given.get(name))
        if spec is not None:
            module.hparams[name] = spec
        elif name == "generator":
            rank_zero_warn(
                f"{type(module).__name__}: checkpoints will hold the generator's weights but not how to build "
                f"it, so load_generator, load_from_checkpoint, merged checkpoints and evaluation cannot rebuild "
                f"it: {reason}. (Or build the generator from a {{'class_path', 'init_args'}} dict, as YAML "
                "configs do.)",
                category=UserWarning,
            )


def _cli_given_hyperparameters() -> dict[str, Any]:
    """The config LightningCLI is instantiating the module from (``{}`` outside LightningCLI)."""
    try:  # a private Lightning hook, so only an optional source of specs
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:
        return {}
    given = _given_hyperparameters.get()
    return dict(given) if isinstance(given, Mapping) else {}


def _caller_frame() -> Any:
    import inspect

    return inspect.currentframe().f_back.f_back
