"""Merged sets are consistent: the lambda a sidecar states is the one its files record, and two models
merge only when their generator specs (architecture *and* settings, not only tensor shapes) agree.

Two generators can share every tensor shape yet compute different functions (``num_heads``, a delay
pattern, a condition vocabulary): interpolating their weights and rebuilding from one spec would
silently give a third model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_cfgrl.io.checkpoints import CheckpointError, is_safetensors_file, load_checkpoint
from lightning_cfgrl.io.specs import upgrade_spec


class MergeError(ValueError):
    """Two state dicts cannot be merged, or a merge argument is out of range."""


def _plain(value: Any) -> Any:
    """A spec as comparable JSON values (tuples -> lists)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# init_args that change training, not the function a merged (eval-mode) model computes
NEUTRAL_ARGS = {"gradient_checkpointing", "dropout", "attention_dropout", "activation_dropout", "layerdrop"}


def _same(a: Any, b: Any) -> bool:
    """Equal values, or two spellings of one existing path (a base model folder named two ways)."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return False


def _leaves(args: Mapping[str, Any], prefix: str = "init_args") -> dict[str, Any]:
    """``{"init_args.options.dropout": 0.1, ...}``: a settings group (a plain dict, not a nested spec) is
    compared field by field, so a neutral field inside it stays neutral."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, Mapping) and "class_path" not in value:
            out.update(_leaves(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def spec_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``["init_args.num_heads: 2 vs 4", ...]``: where two ``class_path``/``init_args`` specs differ (a spec
    recorded by an earlier version compared in today's layout, :func:`~lightning_cfgrl.io.specs.upgrade_spec`)."""
    a, b = _plain(upgrade_spec(a)), _plain(upgrade_spec(b))
    out = []
    if a.get("class_path") != b.get("class_path"):
        out.append(f"class_path: {a.get('class_path')} vs {b.get('class_path')}")
    args_a, args_b = _leaves(a.get("init_args") or {}), _leaves(b.get("init_args") or {})
    for key in sorted(set(args_a) | set(args_b)):
        if key.rpartition(".")[2] in NEUTRAL_ARGS:
            continue
        if not _same(args_a.get(key, "<unset>"), args_b.get(key, "<unset>")):
            out.append(f"{key}: {args_a.get(key, '<unset>')!r} vs {args_b.get(key, '<unset>')!r}")
    return out


def check_specs_agree(specs: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Raise ``ValueError`` when two recorded generator specs ({source name: spec or None}) differ; a
    source that records none (a safetensors file) is not compared."""
    known = [(name, spec) for name, spec in specs.items() if isinstance(spec, Mapping)]
    for (name_a, a), (name_b, b) in zip(known, known[1:], strict=False):
        diff = spec_differences(a, b)
        if diff:
            raise ValueError(
                f"{name_a} and {name_b} record different generators ({'; '.join(diff[:4])}); their tensors "
                "may share shapes, but a merge of two different architectures or settings is not either model. "
                "Merge checkpoints of the same generator spec"
            )


def check_sidecar_lambda(sidecar: Path, content: Mapping[str, Any], files: Mapping[str, Path]) -> float:
    """The sidecar's lambda, after checking it against the lambda each model file records itself (the
    safetensors metadata ``cfgrl_lambda``, the checkpoint's ``cfgrl_merge.lambda``) and the file name."""
    try:
        lam = float(content["lambda"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"sidecar {sidecar} records no numeric lambda") from None
    recorded: dict[str, Any] = {}
    for role, path in files.items():
        if is_safetensors_file(path):
            from safetensors import safe_open

            with safe_open(os.fspath(path), "pt") as f:
                recorded[f"{role} ({path.name}) metadata cfgrl_lambda"] = (f.metadata() or {}).get(
                    "cfgrl_lambda"
                )
        else:
            merge = load_checkpoint(path, mmap=True, require_state_dict=False).get("cfgrl_merge")
            recorded[f"{role} ({path.name}) cfgrl_merge.lambda"] = (
                merge.get("lambda") if isinstance(merge, Mapping) else None
            )
    for where, value in recorded.items():
        try:
            agrees = value is not None and float(value) == lam
        except (TypeError, ValueError):
            agrees = False
        if not agrees:
            raise CheckpointError(
                f"sidecar {sidecar} says lambda={lam}, but its {where} is {value!r}: the sidecar does not "
                "describe these files; rewrite the merged set"
            )
    return lam
