"""A run's hyperparameters with its outcome metrics, in TensorBoard's HParams view.

Lightning logs a module's hyperparameters at fit start with a placeholder metric (``hp_metric = -1``), so
the HParams view of every run shows that one number. Instead, each of this package's modules names the
validation metrics it logs (``validation_metric_names()``) and :func:`log_hparams_with_metrics` registers
them at fit start: the HParams table then shows ``val/...`` (their latest values) beside each run's
settings, and the placeholder is switched off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger


def log_hparams_with_metrics(trainer: pl.Trainer, params: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """Log ``params`` to every logger; a TensorBoard logger also gets the HParams record naming
    ``metrics`` (written without a value: the metrics' own scalars fill the table) instead of
    ``hp_metric``. Call before Lightning logs the hyperparameters (``on_fit_start``)."""
    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger) or not metrics:
            logger.log_hyperparams(dict(params))
            continue
        logger.log_hyperparams(dict(params), metrics={})  # hparams.yaml; {}: no placeholder scalar
        _write_hparams_record(logger, params, metrics)
        # Lightning's own call after on_fit_start would add `hp_metric = -1` (a private flag, so only if
        # this Lightning version has it)
        if hasattr(logger, "_default_hp_metric"):
            logger._default_hp_metric = False


def _write_hparams_record(
    logger: TensorBoardLogger, params: Mapping[str, Any], metrics: Sequence[str]
) -> None:
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
    from torch.utils.tensorboard.summary import hparams

    if logger.experiment is None:  # not rank zero
        return
    flat = logger._sanitize_params(_flatten_dict(_convert_params(dict(params))))
    experiment, start, end = hparams(flat, dict.fromkeys(metrics, 0.0))  # values unused: names only
    writer = logger.experiment._get_file_writer()
    for summary in (experiment, start, end):
        writer.add_summary(summary)


__all__ = ["log_hparams_with_metrics"]
