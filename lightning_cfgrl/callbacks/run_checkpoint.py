"""``RunCheckpoint``: a ``ModelCheckpoint`` whose folder is named after the run, so the next stage can
name the file it reads.

Lightning's defaults bite a multi-stage recipe from both sides. With a fixed ``dirpath`` (what the
configs used to do) a second run writes ``last-v1.ckpt`` beside the first run's ``last.ckpt``, which the
next stage keeps reading, and renaming the run (``--trainer.logger.init_args.name=...``) still writes
into the old run's folder. Without ``dirpath``, checkpoints go to ``<save_dir>/<name>/version_<n>/``,
a new folder per run that no config can name in advance. ``RunCheckpoint`` keeps the logger's
versioned folders for logs but puts checkpoints in ``<save_dir>/<name>/checkpoints/`` and replaces its
files on a rerun (``enable_version_counter=False``): ``runs/<name>/checkpoints/last.ckpt`` is always
the latest run of that name. Its state records which log folder wrote it (``log_dir``).
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` in ``<logger save_dir>/<logger name>/checkpoints`` (no version counter).

    Args:
        dirpath: an explicit folder overrides the run-named one (as in ``ModelCheckpoint``).
        enable_version_counter: default False: a rerun replaces ``last.ckpt`` (atomically, with
            ``AtomicCheckpointIO``) instead of writing ``last-v1.ckpt`` beside it.
        **kwargs: every other ``ModelCheckpoint`` argument (``save_last``, ``save_top_k``,
            ``every_n_train_steps``, ``monitor``, ...).
    """

    def __init__(
        self, dirpath: str | None = None, enable_version_counter: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(dirpath=dirpath, enable_version_counter=enable_version_counter, **kwargs)
        self._run_named = dirpath is None
        self.log_dir: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._run_named:
            self.dirpath = run_checkpoint_dir(trainer)
        self.log_dir = trainer.log_dir
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        # ``ckpt_path="last"`` is resolved before ``setup``: point Lightning's search at the run-named
        # folder, or a fresh process resuming a killed run would find nothing and silently restart.
        if self._run_named and self.dirpath is None:
            self.dirpath = run_checkpoint_dir(trainer)
        return super()._find_last_checkpoints(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_dir": self.log_dir}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run stopped by a callback (PlateauStopping, after its decision at this step's validation) or
        # ending off the save grid must leave its final state as last.ckpt; Lightning's own hook saves
        # only when no last.ckpt was written yet, and skips a step it already saved before the decision
        stopped = trainer.should_stop or self._last_global_step_saved != trainer.global_step
        if self.save_last and self._last_checkpoint_saved and stopped:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def run_checkpoint_dir(trainer: pl.Trainer) -> str:
    """``<save_dir>/<name>/checkpoints`` of the Trainer's first logger (no version), or
    ``<default_root_dir>/checkpoints`` without a logger (Lightning's own fallback)."""
    if not trainer.loggers:
        return os.path.join(trainer.default_root_dir, "checkpoints")
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    return os.path.join(save_dir, str(logger.name), "checkpoints")


__all__ = ["RunCheckpoint", "run_checkpoint_dir"]
