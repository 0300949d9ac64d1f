"""A deterministic CPU fit for the kill-and-resume test (run as a subprocess)::

    python -m tests.helpers.resume_fit --out DIR --steps 10 --kill-at 5       # dies by SIGKILL after step 5
    python -m tests.helpers.resume_fit --out DIR --steps 10 --resume --uninterrupted

``--kill-at k`` checkpoints every step (``last.ckpt``) and kills its own process with SIGKILL at the
start of step k + 1, so ``last.ckpt`` holds step k and nothing gets to clean up. Validation runs every
``VAL_EVERY`` steps, also at step k: after the checkpoint and before step k + 1, drawing from the global
RNG (dataloader iterators), which the resumed run never does at that point. ``--resume`` continues
from that ``last.ckpt`` into a module and callbacks built from *other* random weights (only the
checkpoint can bring back the student, teacher, embedder, optimizer, baseline and data order);
``--uninterrupted`` runs all steps in one go. Each writes ``DIR/<mode>.pt``.

The run is the real thing: ``CFGRLModule``'s own rollout seeding, AdamW, both objective callbacks,
dropout in the student (global RNG), validation with a sanity check, and
``SyntheticPromptDataModule``'s shuffled order with 4 batches per epoch, so the kill lands mid-epoch
and the resumed run crosses an epoch boundary. Each run appends the global step of every validation
it completes to ``DIR/validations_<mode>.txt``.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_cfgrl import CFGRLModule
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.tiny_fit import RecordPrompts, objective_callbacks, tiny_embedder, tiny_generator

VAL_EVERY = 5


class RecordValidations(Callback):
    """Appends the global step of each completed validation (sanity check excluded) to a file, at once,
    so a run that is killed later still leaves its record."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step}\n")


class KillAt(Callback):
    """SIGKILLs this process when step ``k + 1`` starts (after step k's checkpoint is on disk)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run(out: Path, steps: int, mode: str, kill_at: int | None = None) -> None:
    pl.seed_everything(0, verbose=False)
    seed = 123 if mode == "resumed" else 0  # the resumed run must get everything from the checkpoint
    module = CFGRLModule(
        tiny_generator(seed, options={"dropout": 0.1}),
        rollout={"num_frames": 8, "num_samples_per_prompt": 2},
        optimization={"learning_rate": 1e-2},
    )
    callbacks = objective_callbacks(tiny_embedder(seed + 1))
    recorder = RecordPrompts()
    extra: list[Callback] = [recorder, RecordValidations(out / f"validations_{mode}.txt")]
    if mode == "killed":
        assert kill_at is not None
        extra += [
            ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, every_n_train_steps=1),
            KillAt(kill_at),
        ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=1,
        val_check_interval=VAL_EVERY,
        check_val_every_n_epoch=None,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=mode == "killed",
        callbacks=[*callbacks, *extra],
    )
    data = SyntheticPromptDataModule(
        batch_size=8, split=PromptSplit(repeats=1)
    )  # 36 train prompts: 4 batches per epoch
    ckpt = out / "checkpoints" / "last.ckpt" if mode == "resumed" else None
    trainer.fit(module, data, ckpt_path=ckpt)
    diversity = callbacks[1]
    assert isinstance(diversity, DiversityRewardCallback)
    optimizer = trainer.optimizers[0].state_dict()["state"]
    torch.save(
        {
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "generator": module.generator.state_dict(),
            "teacher": callbacks[0].teacher.state_dict(),
            "embedder": diversity.embedder.state_dict(),
            "running": (diversity.running.ema, diversity.running.count),
            "adam_exp_avg": [state["exp_avg"] for _, state in sorted(optimizer.items())],
            "prompts": torch.stack(recorder.prompts),  # the batches this process trained on
        },
        out / f"{mode}.pt",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--uninterrupted", action="store_true")
    args = parser.parse_args()
    # bitwise-reproducible CPU math: one thread (reduction order) and deterministic kernels
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.kill_at is not None:
        run(args.out, args.steps, "killed", args.kill_at)
    if args.resume:
        run(args.out, args.steps, "resumed")
    if args.uninterrupted:
        run(args.out, args.steps, "uninterrupted")


if __name__ == "__main__":
    main()
