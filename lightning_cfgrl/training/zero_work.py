"""Zero work is an error: a fit that would take no training step fails before it starts, naming the sizes.

Lightning ends such a fit "successfully" (``Trainer.fit`` stopped: No training batches) and exits 0,
leaving whatever ``last.ckpt`` an earlier run wrote for the next stage to read. The usual cause is a
prompt batch larger than the training split with ``drop_last=True``. A fit that resumes, or that runs
under a strategy restoring its checkpoint after setup (whose ``on_fit_start`` cannot tell whether it
resumes), is checked at fit end instead: its loaders must be built after the loops are restored.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import lightning.pytorch as pl


def _loader_sizes(trainer: pl.Trainer) -> list[str]:
    """``dataset of N, batch_size B, drop_last D`` per training dataloader (what decides the batch count)."""
    combined = getattr(trainer.fit_loop, "_combined_loader", None)
    sizes = []
    for loader in getattr(combined, "flattened", None) or []:
        dataset = getattr(loader, "dataset", None)
        sampler = getattr(loader, "sampler", None)
        n = len(dataset) if isinstance(dataset, Sized) else "unknown"
        shard = len(sampler) if isinstance(sampler, Sized) else n
        per_rank = f" ({shard} on this process)" if shard != n else ""
        sizes.append(
            f"a dataset of {n} item(s){per_rank} in batches of {getattr(loader, 'batch_size', None)} "
            f"with drop_last={getattr(loader, 'drop_last', None)}"
        )
    return sizes


def check_training_steps(trainer: pl.Trainer) -> None:
    """Raise ``ValueError`` when ``trainer``'s fit would run zero optimizer steps (call in ``on_fit_start``)."""
    limits: list[tuple[str, Any]] = [
        ("max_steps", trainer.max_steps),
        ("max_epochs", trainer.max_epochs),
        ("limit_train_batches", trainer.limit_train_batches),
    ]
    for name, value in limits:
        if value == 0:
            raise ValueError(f"Trainer({name}=0) would train zero steps; set {name} >= 1 (or leave it unset)")
    if trainer.ckpt_path is not None or trainer.strategy.restore_checkpoint_after_setup:
        # A resumed fit must build its dataloaders after the loops are restored (the data order resumes
        # mid-epoch from them), so its batch count is checked at fit end instead (check_training_batches).
        # Strategies that restore after setup (ModelParallelStrategy, FSDP, DeepSpeed) only learn the
        # checkpoint path after on_fit_start: trainer.ckpt_path is still None here even when resuming, and
        # building the loaders now would restart a resumed run's data order at the epoch's first batch
        return
    trainer.fit_loop.setup_data()  # idempotent: what Lightning does next anyway
    check_training_batches(trainer)


def check_training_batches(trainer: pl.Trainer) -> None:
    """Raise ``ValueError`` naming the sizes when the training data gave zero batches (from ``on_fit_start``,
    or ``on_fit_end`` of a resumed fit, whose loop ended without a step)."""
    if trainer.num_training_batches == 0:
        sizes = "; ".join(_loader_sizes(trainer)) or "no training dataloader"
        world = f" over {trainer.world_size} processes" if trainer.world_size > 1 else ""
        raise ValueError(
            f"the training data gives zero batches per epoch{world}: {sizes}, limit_train_batches="
            f"{trainer.limit_train_batches}; so the fit would train zero steps. Use a batch size no larger than "
            "the training split (per process), or more training prompts"
        )
