"""Text prompts for a text-conditioned generator (MusicGen): a CSV/JSON list of prompts, tokenised once
with the model's own text tokenizer, served as ``{"condition": {"input_ids", "attention_mask"}}``.

Accepted files:

* CSV with a header and a ``prompt`` column (other columns, e.g. ``file``, are ignored)::

      prompt
      lo-fi piano with vinyl crackle
      90s rock with a distorted guitar riff

* JSON: a list of strings, a list of objects with a ``prompt`` key, or an object ``{name: prompt}``
  (the prompt tables of :mod:`lightning_cfgrl.audio.datamodule` with a single ``prompt`` column).

The null prompt is MusicGen's: an empty prompt gets an all-zero attention mask (audiocraft zeroes the
mask and the T5 states of an empty description; transformers' ``generate`` zeroes both for its CFG
unconditional half), not the tokenizer's encoding of ``""``. Duplicates are dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_cfgrl.io.text_prompts import (  # noqa: F401  (re-exported: their home is io)
    PROMPT_COLUMN,
    load_text_tokenizer,
    read_text_prompts,
    tokenize_prompts,
)
from lightning_cfgrl.training.prompts import PromptDataModule, PromptSplit


class TextPromptDataModule(PromptDataModule):
    """RL prompts as text: batches ``{"condition": {"input_ids": [B, L], "attention_mask": [B, L]},
    "prompt_index": [B]}``, what :class:`~lightning_cfgrl.adapters.MusicgenGenerator` takes.

    The prompts are split into train (shuffled, ``split.repeats`` passes per epoch, resumable) and held-out
    (validation) as in :class:`~lightning_cfgrl.training.prompts.PromptDataModule`; each batch is cut to
    its longest prompt.

    Args:
        prompts: a CSV/JSON file of prompts or a list of strings.
        tokenizer: the model's text tokenizer: a local folder (a MusicGen checkpoint has one), a hub id
            with ``local_files_only=False``, or a tokenizer object.
        column: the prompt column (CSV) or key (JSON objects).
        max_length: truncate prompts to this many tokens (None: no truncation).
        batch_size: prompts per training step.
        split: the held-out share, the seeds and the passes per epoch
            (:class:`~lightning_cfgrl.training.prompts.PromptSplit`).
        local_files_only: never download the tokenizer.
    """

    def __init__(
        self,
        prompts: str | list[str],
        tokenizer: Any,
        column: str = PROMPT_COLUMN,
        max_length: int | None = None,
        batch_size: int = 8,
        split: PromptSplit = PromptSplit(),
        local_files_only: bool = True,
    ) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
        self.texts = read_text_prompts(prompts, column)
        self.input_ids, self.attention_mask = tokenize_prompts(
            self.texts, load_text_tokenizer(tokenizer, local_files_only), max_length
        )
        # the prompt text of a tokenised condition (for audio tags): its unmasked ids -> the text
        self._text_of = {
            tuple(ids[mask.bool()].tolist()): text
            for ids, mask, text in zip(self.input_ids, self.attention_mask, self.texts, strict=True)
        }
        rows = torch.arange(len(self.texts))[:, None]  # the base class splits and shuffles prompt indices
        super().__init__(rows, batch_size, split)

    def collate(self, rows: list[dict[str, Tensor]]) -> dict[str, Any]:
        """``[{"condition": [1]}]`` prompt indices -> the batch of tokenised prompts, cut to its longest."""
        index = torch.stack([row["condition"][0] for row in rows])
        ids, mask = self.input_ids[index], self.attention_mask[index]
        used = mask.any(0).nonzero()
        length = int(used.max()) + 1 if len(used) else 1  # right padding: trailing all-pad columns go
        return {
            "condition": {"input_ids": ids[:, :length], "attention_mask": mask[:, :length]},
            "prompt_index": index,
        }

    def train_dataloader(self) -> DataLoader:
        return self._with_text(super().train_dataloader())

    def val_dataloader(self) -> DataLoader:
        return self._with_text(super().val_dataloader())

    def _with_text(self, loader: DataLoader) -> DataLoader:
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=loader.sampler,
            drop_last=loader.drop_last,
            collate_fn=self.collate,
        )

    def heldout_condition(self) -> dict[str, Tensor]:
        """The held-out prompts tokenised, ``{"input_ids", "attention_mask"}`` ``[P, L]`` (not their row
        indices): what ``cfgrl evaluate`` samples on."""
        rows = self.heldout_prompts if len(self.heldout_prompts) else self.train_prompts
        return self.collate([{"condition": row} for row in rows])["condition"]

    def describe_prompt(self, condition: dict[str, Tensor]) -> str:
        """The text of one tokenised prompt (``{"input_ids", "attention_mask"}``, ``[L]`` or ``[1, L]``),
        e.g. for ``AudioSampleLogger``'s audio tags; ``""`` for the null prompt or an unknown one."""
        ids, mask = condition["input_ids"].reshape(-1), condition["attention_mask"].reshape(-1)
        return self._text_of.get(tuple(ids[mask.bool()].tolist()), "")

    def prompt_texts(self, split: str = "heldout") -> list[str]:
        """The ``"train"`` or ``"heldout"`` prompts as text."""
        rows = {"train": self.train_prompts, "heldout": self.heldout_prompts}[split]
        return [self.texts[int(i)] for i in rows[:, 0]]


__all__ = ["TextPromptDataModule", "load_text_tokenizer", "read_text_prompts", "tokenize_prompts"]
