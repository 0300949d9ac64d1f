"""``ModelMergeCallback``: at the end of fit, write models merged between an anchor and the trained one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_cfgrl.adapters.peft import is_peft_model
from lightning_cfgrl.io.checkpoints import GENERATOR_PREFIX, file_sha256, load_generator_state, strip_prefix
from lightning_cfgrl.io.generators import load_generator_spec
from lightning_cfgrl.merging.consistency import check_specs_agree
from lightning_cfgrl.merging.lora import DenseWeights, dense_template, is_peft_checkpoint, open_dense_sources
from lightning_cfgrl.merging.merged_sets import check_outputs_are_not_inputs, lambda_tag, merge_output_dir
from lightning_cfgrl.merging.streaming import (
    MergeError,
    MergeOutput,
    check_lambdas,
    check_mergeable,
    check_method,
    validate_merge,
    write_merged,
)


class ModelMergeCallback(Callback):
    """Write theta(lam) = (1 - lam) * theta_anchor + lam * theta_trained for each lam, at fit end.

    The anchor is typically the quality model (trained with beta = 0) and the module being trained the
    diversity model; lam then steers quality vs diversity at no inference cost. Only the generator's
    weights (``pl_module.generator``, keys ``generator.*``) are merged; integer buffers come from the
    trained model. Per lam, in ``dirpath`` (default ``<trainer.log_dir>/merged``):

    - ``merged_lambda=0.50.ckpt``: a Lightning checkpoint, ``Module.load_from_checkpoint`` works as
      usual; it has no optimizer or callback state (those belong to the run, not to the merged model);
    - ``merged_lambda=0.50.safetensors``: the generator's weights, keys without prefix;
    - ``merged_lambda=0.50.json``: lam, method, sources with sha256, package version, key count.

    The anchor is checked against the module at fit start, so a mismatch fails before training, not
    after it; it must be readable from every rank (only global rank 0 writes). A LoRA/PEFT student (or
    anchor) is merged as its dense weights, base + delta (:mod:`lightning_cfgrl.merging.lora`): the
    outputs are dense generators.

    Args:
        anchor_checkpoint: a Lightning ``.ckpt`` (its ``generator.*`` weights) or a ``.safetensors``
            file of generator weights (keys without prefix).
        lambdas: values of lam to write; 0 reproduces the anchor and 1 the trained model exactly.
        method: ``"lerp"`` or ``"slerp"`` (per tensor, see :func:`lightning_cfgrl.merging.streaming.slerp`).
        dirpath: output directory.
        allow_extrapolation: allow lam outside [0, 1].
    """

    def __init__(
        self,
        anchor_checkpoint: str,
        lambdas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
        method: str = "lerp",
        dirpath: str | None = None,
        allow_extrapolation: bool = False,
    ) -> None:
        self.lambdas = check_lambdas(lambdas, allow_extrapolation)
        self.method = check_method(method)
        self.anchor_checkpoint = str(anchor_checkpoint)
        self.dirpath = dirpath
        self.allow_extrapolation = allow_extrapolation
        # Saved for resume: the anchor's hash when the run started (to warn if the file is swapped
        # mid-run) and the files written by the last completed fit.
        self.anchor_sha256: str | None = None
        self.written: dict[str, str] = {}
        self._dense_anchor: Mapping[str, Tensor] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(anchor_checkpoint=self.anchor_checkpoint, method=self.method)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank checks, so a bad anchor fails everywhere at once instead of hanging the others.
        anchor = self._open_anchor()
        try:
            check_mergeable(anchor, _current_weights(pl_module, pl_module.state_dict()))
        except MergeError as err:
            raise MergeError(
                f"ModelMergeCallback: anchor {self.anchor_checkpoint} does not fit the module: {err}"
            ) from err
        del anchor
        if trainer.is_global_zero:
            self._check_anchor_unchanged(file_sha256(self.anchor_checkpoint))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Both calls may be collective (log_dir broadcasts; sharded strategies gather the state dict),
        # so every rank makes them; only global rank 0 writes.
        dirpath = Path(self.dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "merged"))
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=True)
        error: BaseException | None = None
        written: dict[str, str] = {}
        if trainer.is_global_zero:
            try:
                written = self._write_all(trainer, checkpoint, dirpath)
            except Exception as err:
                error = err
        # One broadcast doubles as the barrier and tells the other ranks whether rank 0 failed.
        outcome = trainer.strategy.broadcast(
            (written, None if error is None else f"{type(error).__name__}: {error}")
        )
        if error is not None:
            raise error
        if outcome[1] is not None:
            raise RuntimeError(f"ModelMergeCallback failed on global rank 0: {outcome[1]}")
        self.written = outcome[0]

    def _write_all(self, trainer: pl.Trainer, checkpoint: dict[str, Any], dirpath: Path) -> dict[str, str]:
        sha = file_sha256(self.anchor_checkpoint)
        self._check_anchor_unchanged(sha)
        module = trainer.lightning_module
        current = _current_weights(module, checkpoint["state_dict"])
        if is_peft_model(getattr(module, "generator", None)):
            checkpoint = dense_template(checkpoint, current)
        check_specs_agree(
            {
                f"anchor_checkpoint {self.anchor_checkpoint}": load_generator_spec(self.anchor_checkpoint),
                f"the trained {type(module).__name__}": (getattr(module, "hparams", None) or {}).get(
                    "generator"
                ),
            }
        )
        anchor = self._open_anchor()
        validate_merge(anchor, current, self.lambdas, self.allow_extrapolation)
        del anchor  # reopened lazily per lambda, so at most one anchor copy is ever paged in
        check_outputs_are_not_inputs(
            dirpath, self.lambdas, True, {"anchor_checkpoint": self.anchor_checkpoint}
        )
        sources = {
            "anchor": {"path": os.path.abspath(self.anchor_checkpoint), "sha256": sha},
            "current": {
                "path": None,
                "trained_module": type(trainer.lightning_module).__qualname__,
                "global_step": trainer.global_step,
            },
        }
        written: dict[str, str] = {}
        output = MergeOutput(
            dirpath,
            checkpoint_template=lambda: checkpoint,
            prefix=GENERATOR_PREFIX,
            sidecar={"sources": sources, "created_by": "ModelMergeCallback"},
        )
        with merge_output_dir(dirpath):
            for lam in self.lambdas:
                files = write_merged(
                    anchor=self._open_anchor,
                    current=lambda: current,
                    lam=lam,
                    output=output,
                    method=self.method,
                    allow_extrapolation=self.allow_extrapolation,
                    validate=False,
                )
                written[lambda_tag(lam)] = str(files.checkpoint)
                rank_zero_info(
                    f"ModelMergeCallback: wrote lambda={lam} ({self.method}) to {files.checkpoint}"
                )
        return written

    def _open_anchor(self) -> Mapping[str, Tensor]:
        if is_peft_checkpoint(self.anchor_checkpoint):  # rebuilt once: base + adapters, seen densely
            if self._dense_anchor is None:
                self._dense_anchor = open_dense_sources({"anchor": self.anchor_checkpoint})["anchor"]
            return self._dense_anchor
        return load_generator_state(self.anchor_checkpoint, GENERATOR_PREFIX)

    def _check_anchor_unchanged(self, sha: str) -> None:
        if self.anchor_sha256 is not None and self.anchor_sha256 != sha:
            rank_zero_warn(
                f"ModelMergeCallback: anchor {self.anchor_checkpoint} changed since this run started "
                f"(sha256 {self.anchor_sha256[:12]}... then, {sha[:12]}... now); merging with the current file"
            )
        if self.anchor_sha256 is None:
            self.anchor_sha256 = sha

    def state_dict(self) -> dict[str, Any]:
        return {
            "anchor_checkpoint": self.anchor_checkpoint,
            "anchor_sha256": self.anchor_sha256,
            "lambdas": list(self.lambdas),
            "method": self.method,
            "written": dict(self.written),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Configuration comes from __init__ (the user may change lambdas on resume); only history is restored.
        self.anchor_sha256 = state_dict.get("anchor_sha256")
        self.written = dict(state_dict.get("written", {}))


def _current_weights(pl_module: pl.LightningModule, state_dict: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """The trained generator's weights: its state dict entries, or the dense weights of a PEFT student."""
    generator = getattr(pl_module, "generator", None)
    if is_peft_model(generator):
        return DenseWeights(generator)
    return {k: v.detach() for k, v in strip_prefix(state_dict, GENERATOR_PREFIX).items()}
