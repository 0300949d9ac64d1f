"""The test suite's small reference model configuration and a quiet CPU Trainer."""

from __future__ import annotations

import lightning.pytorch as pl

BASE_ARGS = dict(
    num_codebooks=2,
    vocab_size=32,
    condition_sizes=(4, 4, 3),
    dim=64,
    num_layers=2,
    num_heads=4,
    max_frames=32,
)


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or summary (tests)."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})
