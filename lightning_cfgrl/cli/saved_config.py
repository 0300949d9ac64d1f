"""The ``config.yaml`` a ``cfgrl fit`` run saves beside its logs states the architecture actually loaded.

A model given as ``{class_path, init_args: {checkpoint: ...}}`` (``ContrastiveTokenEmbedder``) takes its
sizes from the checkpoint, not from the (default) sizes the parsed config holds. Before the config is
saved, every ``class_path`` entry of the model's and the callbacks' ``init_args`` whose built object can
say how to rebuild itself (``spec()``) gets that object's own ``init_args`` merged in, so the saved
config describes what ran. (``--print_config`` runs before anything is built, so it shows what was given.)
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback

from lightning_cfgrl.io.specs import imported_class


class LoadedConfigSaver(SaveConfigCallback):
    """LightningCLI's ``SaveConfigCallback``, saving the built objects' own ``init_args`` (see the module)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        model = self.config.get("model")
        if model is not None:
            _update(model, pl_module)
        configured = self.config.get("trainer", {}).get("callbacks") or []
        built = list(trainer.callbacks)
        for entry in configured:
            cls = imported_class(_get(entry, "class_path"))
            match = next((cb for cb in built if type(cb) is cls), None)
            if match is not None:
                built.remove(match)
                _update(entry, match)
        super().setup(trainer, pl_module, stage)


def _update(entry: Any, obj: Any) -> None:
    """For each ``class_path`` value among ``entry``'s ``init_args``: merge in ``obj.<name>.spec()``'s."""
    init_args = _get(entry, "init_args")
    if init_args is None:
        return
    for name in list(_keys(init_args)):
        value = _get(init_args, name)
        if _get(value, "class_path") is None:
            continue
        built = getattr(obj, name, None)
        spec_of = getattr(built, "spec", None)
        # the same class (the config may name it by a shorter re-export); never imports anything
        if not callable(spec_of) or imported_class(_get(value, "class_path")) is not type(built):
            continue
        try:
            spec = spec_of()
        except ValueError:
            continue
        if not isinstance(spec, dict):
            continue
        given = _get(value, "init_args")
        for key, loaded in (spec.get("init_args") or {}).items():
            if given is not None and not isinstance(loaded, dict):
                _set(given, key, loaded)


def _get(container: Any, key: str) -> Any:
    if container is None:
        return None
    try:
        return container.get(key) if hasattr(container, "get") else getattr(container, key, None)
    except (KeyError, AttributeError):
        return None


def _keys(container: Any) -> list[str]:
    # a dict, or a jsonargparse Namespace (whose keys() are flattened "a.b" paths: its own fields instead)
    return list(container) if isinstance(container, dict) else list(vars(container))


def _set(container: Any, key: str, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
    else:
        setattr(container, key, value)


__all__ = ["LoadedConfigSaver"]
