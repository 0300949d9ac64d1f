"""Datamodules of the synthetic domain: full sequences for pretraining, prompts for RL."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_cfgrl.experiments.domain import TokenDomain
from lightning_cfgrl.experiments.synthetic_music import SyntheticMusic
from lightning_cfgrl.training.prompts import PromptDataModule, PromptSplit, TensorDictDataset, split_rows


def split_prompts(
    domain: TokenDomain, heldout_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed split of the domain's prompts into (train ``[P_train, A]``, held-out ``[P_heldout, A]``)."""
    return split_rows(domain.prompts, heldout_fraction, seed)


class SyntheticMusicDataModule(pl.LightningDataModule):
    """Sequences ``{"frames": [2, T], "condition": [A]}`` drawn from the true process (all prompts),
    generated once at setup from ``seed`` (no downloads, a few seconds)."""

    def __init__(
        self,
        domain: TokenDomain | None = None,
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

    def _make(self, n: int, seed: int) -> TensorDictDataset:
        rng = torch.Generator().manual_seed(seed)
        prompts = self.domain.prompts[torch.randint(self.domain.num_prompts, (n,), generator=rng)]
        return TensorDictDataset(frames=self.domain.sample(prompts, rng), condition=prompts)

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self.train_set = self._make(self.num_train, self.seed)
            self.val_set = self._make(self.num_val, self.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def describe_prompt(self, condition: torch.Tensor) -> str:
        """A prompt's text, e.g. "jazz, dark, fast" (``AudioSampleLogger`` puts it in its tags)."""
        return self.domain.describe(condition)


class SyntheticPromptDataModule(PromptDataModule):
    """The domain's prompts ``{"condition": [A]}`` for RL: a fixed train split and the held-out split
    (see :class:`~lightning_cfgrl.training.prompts.PromptDataModule`)."""

    def __init__(
        self,
        domain: TokenDomain | None = None,
        batch_size: int = 8,
        split: PromptSplit = PromptSplit(),
    ) -> None:
        self.domain = domain or SyntheticMusic()
        super().__init__(self.domain.prompts, batch_size, split)

    def describe_prompt(self, condition: torch.Tensor) -> str:
        """A prompt's text, e.g. "jazz, dark, fast" (``AudioSampleLogger`` puts it in its tags)."""
        return self.domain.describe(condition)


__all__ = ["SyntheticMusicDataModule", "SyntheticPromptDataModule", "split_prompts"]
