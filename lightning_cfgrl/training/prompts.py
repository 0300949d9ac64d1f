"""Prompt data for RL: a fixed train/held-out split of prompt rows, a resumable shuffled train order.

``CFGRLModule`` batches are dicts with a ``"condition"`` entry (the prompts); the tokens come from the
model itself. Any table of prompt rows ``[P, A]`` (attribute ids, 1-based; 0 = null) becomes a
datamodule with :class:`PromptDataModule`; the built-in domains and the audio prompt tables subclass it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_cfgrl.core.checks import check_int, check_real, check_seed, check_settings


class TensorDictDataset(Dataset):
    """Rows of equally long tensors as dicts: ``TensorDictDataset(condition=c)[i] == {"condition": c[i]}``."""

    def __init__(self, **tensors: Tensor) -> None:
        lengths = {name: len(value) for name, value in tensors.items()}
        if not tensors or len(set(lengths.values())) != 1:
            raise ValueError(f"TensorDictDataset needs tensors of one length, got lengths {lengths}")
        self.tensors = tensors
        self.length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def split_rows(rows: Tensor, heldout_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed random split of ``rows [P, ...]`` into (train, held-out), ``round(fraction * P)`` held out."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    num_heldout = round(heldout_fraction * len(rows))
    return rows[order[num_heldout:]], rows[order[:num_heldout]]


class ResumableShuffle(DistributedSampler):
    """A ``DistributedSampler`` (permutation of epoch e seeded by ``seed + e``, this rank's share) whose
    first pass may start ``skip`` samples into the epoch: a run resumed mid-epoch then sees exactly the
    prompts the uninterrupted run would have seen. Later passes are whole epochs.

    ``seed=None`` draws the seed from torch's global RNG at the first pass, exactly when and as
    ``RandomSampler`` draws it, so a single-process loader orders its first epoch like ``shuffle=True``.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, seed: int | None, epoch: int = 0, skip: int = 0
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed or 0, drop_last=True
        )
        self.seed_pending = seed is None
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        if self.seed_pending:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
            self.seed_pending = False
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


@dataclass(frozen=True)
class PromptSplit:
    """How a prompt datamodule splits its prompts into train and held-out, and serves the train ones.
    The same settings for every prompt datamodule (``PromptDataModule`` and its subclasses).

    Args:
        heldout_fraction: share of the prompts held out of training (``round(fraction * P)`` of them).
        split_seed: seeds the split.
        repeats: passes over the train prompts per epoch (so short prompt lists make long epochs).
        shuffle_seed: seeds the train order; ``None`` draws it from torch's global RNG when the train
            loader is built (as ``shuffle=True`` does, so ``seed_everything`` fixes it).
    """

    heldout_fraction: float = 0.25
    split_seed: int = 0
    repeats: int = 100
    shuffle_seed: int | None = None

    def __post_init__(self) -> None:
        check_real("split.heldout_fraction", self.heldout_fraction)
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"split.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        check_seed(self.split_seed, "split.split_seed")
        if check_int("split.repeats", self.repeats) < 1:
            raise ValueError(f"split.repeats must be >= 1, got {self.repeats}")
        if self.shuffle_seed is not None:
            check_seed(self.shuffle_seed, "split.shuffle_seed")


class PromptDataModule(pl.LightningDataModule):
    """Prompts ``{"condition": [A]}`` for RL: a fixed train split (shuffled, ``split.repeats`` passes per
    epoch) and the held-out split for validation (and evaluation: keep it out of training).

    The train order is resumable: epoch e is a permutation seeded by ``split.shuffle_seed + e`` (split
    across processes under DDP), the seed is saved in the checkpoint, and a run resumed mid-epoch skips
    the batches its checkpoint had already trained on. Lightning 2.6 would otherwise restart a plain
    ``DataLoader`` at the epoch's first batch with a fresh shuffle.

    Args:
        prompts: every prompt row ``[P, A]`` (int64).
        batch_size: prompts per training step.
        split: the held-out share, the seeds and the passes per epoch (:class:`PromptSplit`).
    """

    # the flat arguments of earlier versions -> their place now (named when an old config gives them)
    # (every subclass inherits it: the split settings are the same everywhere)
    moved_settings: ClassVar[dict[str, str]] = {
        key: f"split.{key}" for key in ("heldout_fraction", "split_seed", "repeats", "shuffle_seed")
    }

    def __init__(self, prompts: Tensor, batch_size: int = 8, split: PromptSplit = PromptSplit()) -> None:
        super().__init__()
        split = check_settings("split", split, PromptSplit)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(prompts, Tensor) or prompts.dim() != 2 or len(prompts) == 0:
            shape = tuple(prompts.shape) if isinstance(prompts, Tensor) else type(prompts).__name__
            raise ValueError(f"prompts must be a non-empty [P, A] tensor of attribute ids, got {shape}")
        self.train_prompts, self.heldout_prompts = split_rows(
            prompts, split.heldout_fraction, split.split_seed
        )
        self.batch_size, self.split = batch_size, split
        self._sampler: ResumableShuffle | None = None
        self._restored_seed: int | None = None

    def train_dataloader(self) -> DataLoader:
        dataset = TensorDictDataset(condition=self.train_prompts.repeat(self.split.repeats, 1))
        trainer = self.trainer
        num_replicas, rank, epoch, skip = 1, 0, 0, 0
        if trainer is not None:
            kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
            num_replicas, rank = kwargs.get("num_replicas", 1), kwargs.get("rank", 0)
            epoch = trainer.current_epoch
            epoch_loop = trainer.fit_loop.epoch_loop
            if epoch_loop.restarting:  # resumed from a checkpoint: skip the batches it had trained on
                skip = epoch_loop.batch_progress.current.processed * self.batch_size
        self._sampler = ResumableShuffle(
            dataset, num_replicas, rank, self._train_seed(num_replicas), epoch, skip
        )
        return DataLoader(dataset, batch_size=self.batch_size, sampler=self._sampler, drop_last=True)

    def _train_seed(self, num_replicas: int) -> int | None:
        trainer = self.trainer
        mid_fit = trainer is not None and (trainer.fit_loop.epoch_loop.restarting or trainer.global_step > 0)
        if mid_fit and self._seed_in_use is not None:  # resumed (the checkpoint's seed) or reloaded
            return self._seed_in_use
        if self.split.shuffle_seed is not None or num_replicas == 1 or trainer is None:
            return self.split.shuffle_seed  # None: drawn lazily, like RandomSampler
        # several processes must shuffle alike: rank 0 draws, the others take its seed
        return trainer.strategy.broadcast(int(torch.empty((), dtype=torch.int64).random_().item()))

    @property
    def _seed_in_use(self) -> int | None:
        sampler = self._sampler
        return self._restored_seed if sampler is None or sampler.seed_pending else sampler.seed

    def state_dict(self) -> dict[str, int]:
        return {} if self._seed_in_use is None else {"shuffle_seed": self._seed_in_use}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if "shuffle_seed" in state_dict:
            self._restored_seed, self._sampler = int(state_dict["shuffle_seed"]), None

    def val_dataloader(self) -> DataLoader:
        prompts = self.heldout_prompts if len(self.heldout_prompts) else self.train_prompts
        return DataLoader(TensorDictDataset(condition=prompts), batch_size=self.batch_size)

    def heldout_condition(self) -> Any:
        """The held-out prompts as the generator's condition batch (what evaluation samples on): here the
        rows themselves ``[P, A]``; a subclass whose batches are built from the rows (text prompts
        tokenised in ``collate``) returns what its batches' ``"condition"`` holds."""
        return self.heldout_prompts


__all__ = ["PromptDataModule", "PromptSplit", "ResumableShuffle", "TensorDictDataset", "split_rows"]
