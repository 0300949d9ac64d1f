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
from typing import Any

from lightning_cfgrl.io.specs import (
    MODULE_CLASS_KEY,
    check_checkpoint_file,
    check_module_class,
    class_path_of,
    recorded_module_class,
)
from lightning_cfgrl.training.finite_guard import check_finite_weights


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
        if isinstance(checkpoint_path, (str, os.PathLike)) and os.path.isfile(checkpoint_path):
            check_checkpoint_file(checkpoint_path, cls, f"checkpoint {os.fspath(checkpoint_path)}")
        return super().load_from_checkpoint(  # type: ignore[misc]
            checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # recorded by every run, not only LightningCLI ones (which also write hyper_parameters._class_path)
        checkpoint[MODULE_CLASS_KEY] = class_path_of(type(self))
        # a checkpoint is good only if it is: never write non-finite weights (one fused norm per save)
        check_finite_weights(self, "while saving a checkpoint")  # type: ignore[arg-type]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # runs before Lightning restores any weights or optimizer state
        check_module_class(recorded_module_class(checkpoint), type(self), "the checkpoint being restored")
