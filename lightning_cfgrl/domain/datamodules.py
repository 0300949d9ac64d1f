"""Datamodules of the synthetic domain: full sequences for pretraining, prompts for RL."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_cfgrl.domain.synthetic_music import SyntheticMusic


class _DictDataset(Dataset):
    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def split_prompts(domain: SyntheticMusic, heldout_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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


class SyntheticPromptDataModule(pl.LightningDataModule):
    """Prompts ``{"condition": [A]}`` for RL: a fixed train split (shuffled, ``repeats`` passes per
    epoch) and the held-out split for validation."""

    def __init__(
        self,
        domain: SyntheticMusic | None = None,
        batch_size: int = 8,
        heldout_fraction: float = 0.25,
        repeats: int = 100,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.domain = domain or SyntheticMusic()
        self.train_prompts, self.heldout_prompts = split_prompts(self.domain, heldout_fraction, split_seed)
        self.batch_size, self.repeats = batch_size, repeats

    def train_dataloader(self) -> DataLoader:
        prompts = self.train_prompts.repeat(self.repeats, 1)
        return DataLoader(_DictDataset(condition=prompts), batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        prompts = self.heldout_prompts if len(self.heldout_prompts) else self.train_prompts
        return DataLoader(_DictDataset(condition=prompts), batch_size=self.batch_size)


__all__ = ["SyntheticMusicDataModule", "SyntheticPromptDataModule", "split_prompts"]
