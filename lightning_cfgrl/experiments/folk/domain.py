"""``FolkCorpus``: a corpus of real tunes as a token domain (frames, prompts, splits), read through the
parse cache. Built the same way from the same arguments, it is the same corpus in every process."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from lightning_cfgrl.experiments.folk.cache import cached_tunes
from lightning_cfgrl.experiments.folk.corpus import Tune, essen_files
from lightning_cfgrl.experiments.folk.prompts import FolkPrompts, TuneSplit
from lightning_cfgrl.experiments.folk.tokens import FolkTokenizer
from lightning_cfgrl.training.prompts import split_rows


class FolkCorpus:
    """Tunes -> frames ``[N, 2, T]`` with their prompt rows, split three ways (see :class:`TuneSplit`),
    and the prompts split into train / held-out.

    Args:
        files: music21-readable files (ABC, MusicXML, MIDI, ...); ``None``: the Essen folksong collection
            of the installed music21 corpus (``collections`` picks some of its files, e.g. ``["han1"]``).
        collections: Essen file stems to read when ``files`` is None.
        num_frames: sixteenths per sequence.
        min_tunes: a (collection, meter, mode) combination becomes a prompt from this many tunes.
        heldout_fraction: share of the prompts held out of distillation (for evaluation).
        seed: seeds both splits.
    """

    def __init__(
        self,
        files: Sequence[str] | None = None,
        collections: Sequence[str] | None = None,
        num_frames: int = 64,
        min_tunes: int = 40,
        heldout_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        paths = (
            tuple(str(p) for p in files) if files is not None else tuple(map(str, essen_files(collections)))
        )
        self.files = paths
        self.tokenizer = FolkTokenizer(num_frames=num_frames)
        self.split = TuneSplit()
        self.tunes: list[Tune] = _load(paths)
        self.prompt_table = FolkPrompts(self.tunes, min_tunes)
        self.train_prompts, self.heldout_prompts = split_rows(
            self.prompt_table.prompts, heldout_fraction, seed
        )
        rows = [self.prompt_table.index_of(t) for t in self.tunes]
        kept = [i for i, r in enumerate(rows) if r is not None]
        self.kept_tunes = [self.tunes[i] for i in kept]
        self.frames = self.tokenizer.encode_tunes(self.kept_tunes)  # [N, 2, T]
        self.prompt_rows = torch.tensor([rows[i] for i in kept], dtype=torch.long)  # [N]
        shares = [self.split.share_of(t, seed) for t in self.kept_tunes]
        self.share = {s: torch.tensor([x == s for x in shares]) for s in ("generator", "judge", "test")}

    # the attributes a TokenDomain has, for code that reads them
    num_codebooks = 2

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def num_frames(self) -> int:
        return self.tokenizer.num_frames

    @property
    def prompts(self) -> Tensor:
        return self.prompt_table.prompts

    @property
    def num_prompts(self) -> int:
        return self.prompt_table.num_prompts

    @property
    def attribute_sizes(self) -> tuple[int, ...]:
        return self.prompt_table.attribute_sizes

    def describe(self, condition: Tensor) -> str:
        return self.prompt_table.describe(condition)

    def data(self, share: str) -> tuple[Tensor, Tensor]:
        """``(frames [n, 2, T], condition [n, 3])`` of one share: "generator", "judge" or "test"."""
        if share not in self.share:
            raise ValueError(f"share must be one of {sorted(self.share)}, got {share!r}")
        mask = self.share[share]
        return self.frames[mask], self.prompts[self.prompt_rows[mask]]

    def statistics(self) -> dict:
        """Counts for the docs: files, tunes (parsed, in prompts, per share), prompts, tokens."""
        return {
            "files": len(self.files),
            "tunes_parsed": len(self.tunes),
            "tunes_in_prompts": len(self.kept_tunes),
            "tunes_per_share": {s: int(m.sum()) for s, m in self.share.items()},
            "prompts": self.num_prompts,
            "train_prompts": len(self.train_prompts),
            "heldout_prompts": len(self.heldout_prompts),
            "attribute_values": {
                a: list(n)
                for a, n in zip(("collection", "meter", "mode"), self.prompt_table.names, strict=True)
            },
            "tokens": int(self.frames.numel()),
            "frames_per_tune": self.num_frames,
            "codebooks": 2,
            "notes_parsed": sum(len(t.notes) for t in self.tunes),
            "sixteenths_parsed": sum(max((o + d for o, d, _ in t.notes), default=0) for t in self.tunes),
        }


@functools.lru_cache(maxsize=4)
def _load(paths: tuple[str, ...]) -> list[Tune]:
    """Tunes of ``paths`` (a scorer, a datamodule and an evaluation built from one YAML share one read)."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"corpus file(s) {missing[:3]} do not exist; pass existing ABC/MusicXML/MIDI files"
        )
    return cached_tunes(paths)


__all__ = ["FolkCorpus"]
