"""Datamodules of the folk-tune domain: tunes for pretraining (the generator's share only) and prompts
for distillation (the train prompts; the held-out prompts for validation)."""

from __future__ import annotations

from typing import ClassVar

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_cfgrl.experiments.folk.domain import FolkCorpus
from lightning_cfgrl.training.prompts import PromptDataModule, PromptSplit, TensorDictDataset


class FolkTuneDataModule(pl.LightningDataModule):
    """``{"frames": [2, T], "condition": [3]}`` of the corpus's "generator" share for training, its "test"
    share for validation (the "judge" share is never seen: the judge is trained on it).

    Args:
        corpus: the tunes (default: the whole Essen collection of the installed music21).
        batch_size: tunes per step.
    """

    def __init__(self, corpus: FolkCorpus | None = None, batch_size: int = 64) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.corpus = corpus or FolkCorpus()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            frames, condition = self.corpus.data("generator")
            self.train_set = TensorDictDataset(frames=frames, condition=condition)
            frames, condition = self.corpus.data("test")
            self.val_set = TensorDictDataset(frames=frames, condition=condition)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def describe_prompt(self, condition: torch.Tensor) -> str:
        """A prompt's text, e.g. "han, 2/4, minor" (``AudioSampleLogger`` puts it in its tags)."""
        return self.corpus.describe(condition)


class FolkPromptDataModule(PromptDataModule):
    """The corpus's prompts ``{"condition": [3]}`` for distillation: its train split for training and its
    held-out split for validation (the split is the corpus's, so scorers and evaluations agree on it)."""

    moved_settings: ClassVar[dict[str, str]] = {}  # its split is the corpus's: none moved to split.*

    def __init__(
        self,
        corpus: FolkCorpus | None = None,
        batch_size: int = 4,
        repeats: int = 100,
        shuffle_seed: int | None = None,
    ) -> None:
        self.corpus = corpus or FolkCorpus()
        # the split below is the corpus's; the base class's default split is replaced
        super().__init__(
            self.corpus.prompts, batch_size, PromptSplit(repeats=repeats, shuffle_seed=shuffle_seed)
        )
        self.train_prompts, self.heldout_prompts = self.corpus.train_prompts, self.corpus.heldout_prompts

    def describe_prompt(self, condition: torch.Tensor) -> str:
        return self.corpus.describe(condition)


__all__ = ["FolkPromptDataModule", "FolkTuneDataModule"]
