"""``SafeCheckpointLoading``: what a checkpoint may do to the LightningModule that loads it.

A checkpoint is data. ``weights_only`` loading keeps its pickle from running code, but Lightning then
builds the module from the checkpoint's ``hyper_parameters``, and ours rebuild their generator (or
embedder) from a ``class_path`` spec recorded there. This mixin makes every way in check that spec, and
which module class wrote the file, before anything is built:

* ``load_from_checkpoint``: the specs and the class are checked with the file named; URLs are loaded
  weights-only (Lightning's default for URLs is ``weights_only=False``);
* ``Trainer.fit(ckpt_path=...)``: ``on_load_checkpoint`` refuses a checkpoint of another module class
  (a ``PretrainModule`` checkpoint resumed into a ``CFGRLModule``) before any state is restored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from lightning_cfgrl.core.finite import check_finite_weights
from lightning_cfgrl.io.checkpoints import resolve_stored_path
from lightning_cfgrl.io.specs import (
    MODULE_CLASS_KEY,
    check_checkpoint_file,
    check_module_class,
    class_path_of,
    recorded_module_class,
)
from lightning_cfgrl.training.configs import GROUPS, is_flat_layout, upgrade_hparams
from lightning_cfgrl.training.resume_check import (
    OBJECTIVES_KEY,
    OPTIMIZERS_KEY,
    check_resume_optimizers,
    check_resume_settings,
    optimizer_settings,
)

# Set while a module is built from a checkpoint that holds every generator weight: its init_checkpoint is
# then not re-read (the file may be gone or changed, and the checkpoint's weights replace it anyway)
_FULL_WEIGHTS: ContextVar[bool] = ContextVar("cfgrl_full_weights", default=False)


@contextmanager
def weights_from_checkpoint(active: bool = True) -> Iterator[None]:
    """Within this block, module constructors skip loading ``init_checkpoint`` (see :func:`init_weights_needed`)."""
    token = _FULL_WEIGHTS.set(active)
    try:
        yield
    finally:
        _FULL_WEIGHTS.reset(token)


def init_weights_needed() -> bool:
    """False while a module is being built from a checkpoint holding all its weights."""
    return not _FULL_WEIGHTS.get()


def _objective_settings(module: Any) -> dict[str, Any] | None:
    """Every objective callback's ``hyperparameters()`` on the module's Trainer (None without one)."""
    from lightning_cfgrl.training.objective import ObjectiveCallback

    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return None
    settings: dict[str, Any] = {}
    for callback in trainer.callbacks:
        if isinstance(callback, ObjectiveCallback):
            settings.update(callback.hyperparameters())
    return settings


class SafeCheckpointLoading:
    """Mix into a ``LightningModule`` (before it in the bases) whose checkpoints record class_path specs."""

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint``, weights-only by default (URLs included), after checking
        the file's recorded module class and generator/embedder specs (naming the file on refusal)."""
        hparams = None
        if isinstance(checkpoint_path, (str, os.PathLike)) and os.path.isfile(checkpoint_path):
            hparams = check_checkpoint_file(checkpoint_path, cls, f"checkpoint {os.fspath(checkpoint_path)}")
        if hparams is not None and is_flat_layout(hparams):  # written before CFGRLModule's settings groups
            upgraded = upgrade_hparams(hparams)
            for group in GROUPS:
                kwargs.setdefault(group, upgraded.get(group))
        stored = (hparams or {}).get("init_checkpoint")
        full = hparams is not None and hparams.get("peft_config") is None
        if not full and isinstance(stored, str) and "init_checkpoint" not in kwargs:
            # a PEFT checkpoint needs its base: the stored path is data, resolved beside the checkpoint
            kwargs["init_checkpoint"] = str(resolve_stored_path(stored, checkpoint_path, "init_checkpoint"))
        with weights_from_checkpoint(full and "init_checkpoint" not in kwargs):
            return super().load_from_checkpoint(  # type: ignore[misc]
                checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # recorded by every run, not only LightningCLI ones (which also write hyper_parameters._class_path)
        checkpoint[MODULE_CLASS_KEY] = class_path_of(type(self))
        # a checkpoint is good only if it is: never write non-finite weights (one fused norm per save)
        check_finite_weights(self, "while saving a checkpoint")  # type: ignore[arg-type]
        objectives = _objective_settings(self)
        if objectives is not None:  # what a resume compares its callbacks' settings with
            checkpoint[OBJECTIVES_KEY] = objectives
            checkpoint[OPTIMIZERS_KEY] = optimizer_settings(self.trainer)  # type: ignore[attr-defined]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # runs before Lightning restores any weights or optimizer state
        check_module_class(recorded_module_class(checkpoint), type(self), "the checkpoint being restored")
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.state.fn != "fit":  # load_from_checkpoint, validate: nothing resumes
            return
        if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
            raise ValueError(
                "the checkpoint being resumed holds weights only (a merged or weights-only checkpoint has no "
                "optimizer, schedule or loop state), so it cannot resume a run; start a new run from its "
                "weights with init_checkpoint=<the checkpoint> instead of --ckpt_path / ckpt_path"
            )
        resume_hparams = getattr(self, "resume_hparams", None)  # CFGRLModule: its live settings marked
        current = resume_hparams() if callable(resume_hparams) else dict(self.hparams)  # type: ignore[attr-defined]
        check_resume_settings(checkpoint, current, _objective_settings(self))  # type: ignore[attr-defined]
        # the optimizers do not exist yet: compared once they do, before the first step
        self._resumed_optimizers = checkpoint.get(OPTIMIZERS_KEY)

    def on_train_start(self) -> None:
        recorded = getattr(self, "_resumed_optimizers", None)
        if recorded is not None:
            self._resumed_optimizers = None
            check_resume_optimizers(recorded, optimizer_settings(self.trainer))  # type: ignore[attr-defined]
        super().on_train_start()  # type: ignore[misc]
