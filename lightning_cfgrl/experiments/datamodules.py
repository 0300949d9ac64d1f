"""Datamodules of the synthetic domain: full sequences for pretraining, prompts for RL."""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_cfgrl.experiments.synthetic_music import SyntheticMusic


class _DictDataset(Dataset):
    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def split_prompts(
    domain: SyntheticMusic, heldout_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed split of the domain's prompts into (train ``[P_train, A]``, held-out ``[P_heldout, A]``)."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    order = torch.randperm(domain.num_prompts, generator=torch.Generator().manual_seed(seed))
    num_heldout = round(heldout_fraction * domain.num_prompts)
    return domain.prompts[order[num_heldout:]], domain.prompts[order[:num_heldout]]


class SyntheticMusicDataModule(pl.LightningDataModule):
    """Sequences ``{"frames": [2, T], "condition": [A]}`` drawn from the true process (all prompts),
    generated once at setup from ``seed`` (no downloads, a few seconds)."""

    def __init__(
        self,
        domain: SyntheticMusic | None = None,
        num_train: int = 20_000,
        num_val: int = 1_000,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("num_train", num_train), ("num_val", num_val), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.domain = domain or SyntheticMusic()
        self.num_train, self.num_val, self.batch_size, self.seed = num_train, num_val, batch_size, seed

    def _make(self, n: int, seed: int) -> _DictDataset:
        rng = torch.Generator().manual_seed(seed)
        prompts = self.domain.prompts[torch.randint(self.domain.num_prompts, (n,), generator=rng)]
        return _DictDataset(frames=self.domain.sample(prompts, rng), condition=prompts)

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self.train_set = self._make(self.num_train, self.seed)
            self.val_set = self._make(self.num_val, self.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


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


class SyntheticPromptDataModule(pl.LightningDataModule):
    """Prompts ``{"condition": [A]}`` for RL: a fixed train split (shuffled, ``repeats`` passes per
    epoch) and the held-out split for validation.

    The train order is resumable: epoch e is a permutation seeded by ``shuffle_seed + e`` (split across
    processes under DDP), the seed is saved in the checkpoint, and a run resumed mid-epoch skips the
    batches its checkpoint had already trained on. Lightning 2.6 would otherwise restart a plain
    ``DataLoader`` at the epoch's first batch with a fresh shuffle.

    Args:
        shuffle_seed: seeds the train order; ``None`` draws it from torch's global RNG when the train
            loader is built (as ``shuffle=True`` does, so ``seed_everything`` fixes it).
    """

    def __init__(
        self,
        domain: SyntheticMusic | None = None,
        batch_size: int = 8,
        heldout_fraction: float = 0.25,
        repeats: int = 100,
        split_seed: int = 0,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.domain = domain or SyntheticMusic()
        self.train_prompts, self.heldout_prompts = split_prompts(self.domain, heldout_fraction, split_seed)
        self.batch_size, self.repeats = batch_size, repeats
        self.shuffle_seed = shuffle_seed
        self._sampler: ResumableShuffle | None = None
        self._restored_seed: int | None = None

    def train_dataloader(self) -> DataLoader:
        dataset = _DictDataset(condition=self.train_prompts.repeat(self.repeats, 1))
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
        if self.shuffle_seed is not None or num_replicas == 1 or trainer is None:
            return self.shuffle_seed  # None: drawn lazily, like RandomSampler
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
        return DataLoader(_DictDataset(condition=prompts), batch_size=self.batch_size)


__all__ = ["ResumableShuffle", "SyntheticMusicDataModule", "SyntheticPromptDataModule", "split_prompts"]
