"""A resumed run records what it did: settings that differ from the checkpoint's are refused by name.

Resuming restores the optimizer (its learning rate included), the schedule, the objectives' state and
the data order, so a changed setting would be silently mixed: a new ``learning_rate`` recorded in the
checkpoint's hyperparameters while AdamW goes on with the old one. Every setting that shapes training
(the module's and each objective callback's) is compared before anything is restored, and any
difference is an error naming each setting with both values. To change them, start a new run from the
checkpoint's weights (``init_checkpoint=<ckpt>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# hyperparameters of CFGRLModule / PretrainModule that shape the training a checkpoint continues
# (CFGRLModule's grouped "rollout" and "optimization"; PretrainModule's flat ones)
TRAINING_SETTINGS = (
    "generator",
    "rollout",
    "optimization",
    "optimizer",
    "scheduler",
    "learning_rate",
    "weight_decay",
    "lr_warmup_steps",
    "lr_decay",
    "seed",
    "peft_config",
    "disable_dropout",
    "condition_dropout",
)
OBJECTIVES_KEY = "cfgrl_objectives"  # where a checkpoint records its objective callbacks' settings
OPTIMIZERS_KEY = "cfgrl_optimizers"  # ... and its optimizers' and schedulers' classes and defaults


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


def _flatten(name: str, value: Any) -> dict[str, Any]:
    """``generator.init_args.dim``-style leaves, so a difference is named exactly."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(f"{name}.{key}", item))
        return out or {name: {}}
    return {name: value}


def _same_class(a: Any, b: Any) -> bool:
    """Two class paths naming one class ("pkg.Class" re-exported from "pkg.mod.Class"); never imports."""
    from lightning_cfgrl.io.specs import imported_class

    cls = imported_class(a)
    return cls is not None and cls is imported_class(b)


def setting_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str]
) -> list[str]:
    """``["learning_rate: 0.001 (checkpoint) vs 0.01 (now)", ...]`` over ``keys`` present in either."""
    out = []
    for key in keys:
        if key not in saved and key not in current:
            continue
        a = _flatten(key, _plain(saved[key])) if key in saved else {key: "<unset>"}
        b = _flatten(key, _plain(current[key])) if key in current else {key: "<unset>"}
        for leaf in sorted(set(a) | set(b)):
            old, new = a.get(leaf, "<unset>"), b.get(leaf, "<unset>")
            if leaf != key and "<unset>" in (old, new):  # a nested default one side leaves implicit
                continue
            if old != new and not (leaf.endswith("class_path") and _same_class(old, new)):
                out.append(f"{leaf}: {old!r} (checkpoint) vs {new!r} (now)")
    return out


def check_resume_settings(
    checkpoint: Mapping[str, Any], hparams: Mapping[str, Any], objectives: Mapping[str, Any] | None
) -> None:
    """Raise ``ValueError`` naming every training setting of ``hparams`` (the module now) and
    ``objectives`` (the objective callbacks' ``hyperparameters()`` now; None: not known) that differs from
    what ``checkpoint`` records. A checkpoint from before objectives were recorded skips those."""
    saved = checkpoint.get("hyper_parameters")
    if isinstance(saved, Mapping):  # a checkpoint of the flat layout compares as the grouped one
        from lightning_cfgrl.training.configs import upgrade_hparams

        saved = upgrade_hparams(saved)
    diff = setting_differences(saved, hparams, TRAINING_SETTINGS) if isinstance(saved, Mapping) else []
    recorded = checkpoint.get(OBJECTIVES_KEY)
    if objectives is not None and isinstance(recorded, Mapping):
        diff += setting_differences(recorded, objectives, sorted(set(recorded) | set(objectives)))
    if diff:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise ValueError(
            f"resume refused: {len(diff)} training setting(s) differ from the checkpoint's: {shown}. Resuming "
            "restores the optimizer, schedule and objective state of the old settings, so the run would mix "
            "both. Resume with the checkpoint's settings, or start a new run from its weights with "
            "init_checkpoint=<the checkpoint>"
        )


def optimizer_settings(trainer: Any) -> dict[str, Any]:
    """``{"optimizer0": {"class": ..., "defaults": {...}}, "scheduler0": "class"}`` of a Trainer's
    optimizers and LR schedulers: the settings a user's optimizer callable fixes (its class, lr, betas)."""
    out: dict[str, Any] = {}
    for i, opt in enumerate(getattr(trainer, "optimizers", None) or []):
        defaults = {
            k: v for k, v in opt.defaults.items() if isinstance(v, (int, float, str, bool, tuple, type(None)))
        }
        out[f"optimizer{i}"] = {
            "class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "defaults": defaults,
        }
    for i, config in enumerate(getattr(trainer, "lr_scheduler_configs", None) or []):
        out[f"scheduler{i}"] = f"{type(config.scheduler).__module__}.{type(config.scheduler).__qualname__}"
    return _plain(out)


def check_resume_optimizers(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming every optimizer/scheduler class or default that differs from the
    checkpoint's (checked at train start, after the optimizers are built and before the first step)."""
    diff = setting_differences(recorded, current, sorted(set(recorded) | set(current)))
    if diff:
        raise ValueError(
            f"resume refused: the optimizer differs from the checkpoint's: {'; '.join(diff[:8])}. Its restored "
            "state belongs to the old optimizer, so the run would mix both. Resume with the checkpoint's "
            "optimizer, or start a new run from its weights with init_checkpoint=<the checkpoint>"
        )
