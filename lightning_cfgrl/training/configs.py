"""The grouped settings of :class:`~lightning_cfgrl.training.module.CFGRLModule`, and the conversion of
checkpoints that recorded them flat.

``CFGRLModule`` takes a few arguments, three of them settings objects, so YAML groups them and
``cfgrl fit --help`` lists each group's fields with their docs::

    model:
      class_path: lightning_cfgrl.CFGRLModule
      init_args:
        generator: {...}
        rollout: {num_frames: 32, num_samples_per_prompt: 4}
        optimization: {learning_rate: 0.001, lr_warmup_steps: 10, lr_decay: cosine}
        validation: {samples_per_prompt: 8, scorers: [...]}

Every field has the default of the shipped recipe; a config states only what differs. Each object checks
its fields where it is built, naming the field with its group (``rollout.num_frames must be >= 1, got 0``).

A checkpoint stores the groups as plain dicts (``hyper_parameters["rollout"]``), without the live
objects (optimizer/scheduler callables, scorers), as before. Checkpoints written before the grouping
recorded the same settings flat (``num_frames``, ``learning_rate``, ``val_scorers``, ...);
:func:`upgrade_hparams` maps them to the groups wherever a checkpoint's hyperparameters are read
(``load_from_checkpoint``, ``--ckpt_path`` resumes, ``cfgrl generate``), so those runs load and resume
unchanged. :data:`FLAT_TO_GROUPED` is the mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lightning_cfgrl.core.checks import check_int, check_real, check_settings
from lightning_cfgrl.core.sampling import SamplingConfig
from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.io.specs import is_config, upgrade_spec
from lightning_cfgrl.training.optimization import LR_DECAYS


@dataclass(frozen=True)
class RolloutConfig:
    """How the student samples its training rollouts (no CFG: the student's own policy).

    Args:
        num_frames: frames T per rollout sequence.
        num_samples_per_prompt: G samples per prompt (the diversity reward needs G >= 2).
        temperature: rollout sampling temperature; the default (1, with top_k and top_p unset) samples
            the student's own distribution, which on-policy distillation and the policy gradient assume.
        top_k: keep the k most likely tokens per step (None: all).
        top_p: nucleus sampling mass (None: all).
    """

    num_frames: int = 32
    num_samples_per_prompt: int = 4
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_frames", "num_samples_per_prompt"):
            value = check_int(f"rollout.{name}", getattr(self, name))
            if value < 1:
                raise ValueError(f"rollout.{name} must be >= 1, got {value}")
        try:
            self.sampling  # noqa: B018 -- checks temperature, top_k, top_p
        except (TypeError, ValueError) as err:
            raise type(err)(f"rollout.{err}") from None

    @property
    def sampling(self) -> SamplingConfig:
        """The rollout's :class:`SamplingConfig` (guidance scale 1: the student samples without CFG)."""
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


@dataclass(frozen=True)
class OptimizationConfig:
    """The student's optimizer and learning-rate schedule.

    Args:
        optimizer: a LightningCLI optimizer callable (default: AdamW with ``learning_rate``).
        scheduler: a LightningCLI LR-scheduler callable; replaces the warm-up/decay schedule below.
        learning_rate: used when ``optimizer`` is not given.
        lr_warmup_steps: when no ``scheduler`` is given, the learning rate warms up linearly over this
            many optimizer steps, then decays by ``lr_decay``.
        lr_decay: after the warm-up: ``"cosine"`` or ``"linear"`` to 0 at the Trainer's last step, or
            ``"constant"``.
    """

    optimizer: OptimizerCallable | None = None
    scheduler: LRSchedulerCallable | None = None
    learning_rate: float = 1e-3
    lr_warmup_steps: int = 10
    lr_decay: Literal["cosine", "linear", "constant"] = "cosine"

    def __post_init__(self) -> None:
        check_real("optimization.learning_rate", self.learning_rate)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"optimization.learning_rate must be a finite number > 0, got {self.learning_rate}"
            )
        check_int("optimization.lr_warmup_steps", self.lr_warmup_steps)
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"optimization.lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"optimization.lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")


@dataclass(frozen=True)
class ValidationConfig:
    """What validation samples and scores.

    Args:
        samples_per_prompt: samples per validation prompt (>= 2 also logs ``val/histogram_diversity``).
        scorers: per-sample quality scorers logged at validation (``val/<name>``).
    """

    samples_per_prompt: int = 4
    scorers: Sequence[Scorer] | None = None

    def __post_init__(self) -> None:
        value = check_int("validation.samples_per_prompt", self.samples_per_prompt)
        if value < 1:
            raise ValueError(f"validation.samples_per_prompt must be >= 1, got {value}")


GROUPS: dict[str, type] = {
    "rollout": RolloutConfig,
    "optimization": OptimizationConfig,
    "validation": ValidationConfig,
}
# fields a checkpoint does not record: live objects (callables, scorers), as before the grouping
LIVE_FIELDS = {"optimization": ("optimizer", "scheduler"), "validation": ("scorers",)}

# The flat CFGRLModule arguments (before the grouping) -> their grouped place ("group.field").
FLAT_TO_GROUPED = {
    "num_frames": "rollout.num_frames",
    "num_samples_per_prompt": "rollout.num_samples_per_prompt",
    "temperature": "rollout.temperature",
    "top_k": "rollout.top_k",
    "top_p": "rollout.top_p",
    "optimizer": "optimization.optimizer",
    "scheduler": "optimization.scheduler",
    "learning_rate": "optimization.learning_rate",
    "lr_warmup_steps": "optimization.lr_warmup_steps",
    "lr_decay": "optimization.lr_decay",
    "val_samples_per_prompt": "validation.samples_per_prompt",
    "val_scorers": "validation.scorers",
}


def build_group(name: str, value: Any) -> Any:
    """``value`` as the settings object of group ``name``: the object itself, its fields as a dict (a
    checkpoint's record, Python callers), or None (the defaults)."""
    return GROUPS[name]() if value is None else check_settings(name, value, GROUPS[name])


def group_record(name: str, config: Any) -> dict[str, Any]:
    """The plain dict a checkpoint records for a settings object: a live object (an optimizer callable,
    scorers) is left out, as before the grouping (None and plain specs are recorded)."""
    record = {f.name: getattr(config, f.name) for f in fields(config)}
    for key in LIVE_FIELDS.get(name, ()):
        if not is_config(record[key]):
            record.pop(key)
    return record


def live_markers(name: str, config: Any) -> dict[str, str]:
    """``{field: "<partial set in code>"}`` for the live objects :func:`group_record` leaves out, so that a
    resume compares "set in code" with the checkpoint's recorded value (e.g. ``optimizer: None``)."""
    return {
        key: f"<{type(getattr(config, key)).__name__} set in code>"
        for key in LIVE_FIELDS.get(name, ())
        if not is_config(getattr(config, key))
    }


def is_flat_layout(hparams: Mapping[str, Any]) -> bool:
    """True for the hyperparameters of a CFGRLModule checkpoint written before the grouping."""
    return "num_samples_per_prompt" in hparams and not any(group in hparams for group in GROUPS)


def group_settings(settings: Mapping[str, Any], drop_live: bool = False) -> dict[str, Any]:
    """``settings`` with every flat CFGRLModule argument (:data:`FLAT_TO_GROUPED`) moved into its group's
    dict (merged with a group dict already there); other entries unchanged. ``drop_live`` leaves out live
    optimizer/scheduler callables and scorers, which checkpoints do not record (None is kept)."""
    out = dict(settings)
    for flat, grouped in FLAT_TO_GROUPED.items():
        if flat in out:
            group, field = grouped.split(".")
            value = out.pop(flat)
            if not (drop_live and field in LIVE_FIELDS.get(group, ()) and not is_config(value)):
                out[group] = {**dict(out.get(group) or {}), field: value}
    return out


def upgrade_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyperparameters in the grouped layout: flat ones (``num_frames``, ``learning_rate``,
    ``val_samples_per_prompt``, ...) moved to their groups (:data:`FLAT_TO_GROUPED`), and the generator
    spec in today's layout (:func:`~lightning_cfgrl.io.specs.upgrade_spec`: the transformer's
    ``options``); others unchanged."""
    out = group_settings(hparams, drop_live=True) if is_flat_layout(hparams) else dict(hparams)
    generator = out.get("generator")
    if isinstance(generator, Mapping) and "class_path" in generator:
        out["generator"] = upgrade_spec(generator)
    return out


__all__ = [
    "FLAT_TO_GROUPED",
    "OptimizationConfig",
    "RolloutConfig",
    "ValidationConfig",
    "build_group",
    "group_settings",
    "group_record",
    "upgrade_hparams",
]
