"""The ``config.yaml`` a ``cfgrl fit`` run saves beside its logs states the architecture actually loaded.

A model given as ``{class_path, init_args: {checkpoint: ...}}`` (``ContrastiveTokenEmbedder``) takes its
sizes from the checkpoint, not from the (default) sizes the parsed config holds. Before the config is
saved, every ``class_path`` entry of the model's and the callbacks' ``init_args`` whose built object can
say how to rebuild itself (``spec()``) gets that object's own ``init_args`` merged in, so the saved
config describes what ran. ``--print_config`` runs before anything is built: :func:`resolve_printed_config`
replaces such an entry's sizes by those recorded in its checkpoint (read weights-only, nothing is built),
and says so in a comment above the YAML; a checkpoint that does not exist yet is named as the source the
run will read instead of the values shown.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import yaml
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


def _checkpoint_entries(node: Any, path: str = "") -> list[tuple[str, dict]]:
    """``[(dotted path, entry)]`` of every ``{class_path, init_args: {checkpoint: str, ...}}`` in ``node``."""
    found: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        init_args = node.get("init_args")
        if isinstance(node.get("class_path"), str) and isinstance(init_args, dict):
            if isinstance(init_args.get("checkpoint"), str):
                found.append((path or "<root>", node))
        for key, value in node.items():
            found += _checkpoint_entries(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _checkpoint_entries(value, f"{path}[{i}]")
    return found


def resolve_printed_config(text: str) -> str:
    """``--print_config``'s YAML with every checkpoint-sized entry (a class with ``recorded_architecture``,
    e.g. ``ContrastiveTokenEmbedder(checkpoint=...)``) showing the sizes its checkpoint gives, and a comment
    above it naming each resolved (or not yet existing) checkpoint. Other text is returned unchanged."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    notes, changed = [], False
    for path, entry in _checkpoint_entries(config):
        cls = imported_class(entry["class_path"])
        resolve = getattr(cls, "recorded_architecture", None)
        if not callable(resolve):
            continue
        init_args, ckpt = entry["init_args"], entry["init_args"]["checkpoint"]
        if not os.path.isfile(ckpt):
            notes.append(
                f"#   {path}: {ckpt} does not exist yet; the run takes {cls.__name__}'s sizes from it, "
                "not the values shown"
            )
            continue
        try:
            recorded = resolve(ckpt)
        except (OSError, ValueError) as err:
            notes.append(f"#   {path}: {ckpt} could not be read ({err}); the values shown are the given ones")
            continue
        if recorded is None:
            continue
        differs = {k: (init_args.get(k), v) for k, v in recorded.items() if init_args.get(k) != v}
        init_args.update(recorded)
        changed = True
        shown = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in differs.items()) or "as given"
        notes.append(f"#   {path}: {cls.__name__} sizes from {ckpt} ({shown})")
    if not notes:
        return text
    header = [
        "# cfgrl --print_config: the architecture below is what the run builds; these entries take their",
        "# sizes from a checkpoint (the run's config.yaml records the same):",
        *notes,
    ]
    body = text
    if changed:  # re-dumped with the resolved sizes, keeping the leading comment lines (versions)
        lead = (
            [line for line in text.splitlines() if line.startswith("#")][:1] if text.startswith("#") else []
        )
        body = "\n".join([*lead, yaml.safe_dump(config, sort_keys=False, default_flow_style=False)])
    return "\n".join(header) + "\n" + body


__all__ = ["LoadedConfigSaver", "resolve_printed_config"]
