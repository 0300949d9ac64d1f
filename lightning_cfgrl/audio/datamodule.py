"""Audio datamodules: a folder of audio files plus a prompt table -> EnCodec token crops (pretraining)
and prompts (RL).

The prompt table maps each file to its prompt, as CSV or JSON:

* CSV with a ``file`` column (paths relative to the audio folder) and one or more prompt columns::

      file,genre,mood
      a.wav,jazz,calm
      b.flac,techno,

* JSON: ``{"a.wav": "calm solo piano", ...}`` (one column named ``prompt``), or
  ``{"a.wav": {"genre": "jazz", "mood": "calm"}, ...}``, or a list of ``{"file": ..., <column>: ...}``.

Each prompt column becomes one attribute slot of the condition: its distinct non-empty values, sorted,
get ids 1..n and an empty value gets 0, the null id. So a free-text ``prompt`` column is a vocabulary of
whole prompts, and the condition ``[A]`` int64 fits ``AudioTokenTransformer(condition_sizes=
table.condition_sizes)`` directly, null prompt for CFG included.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_cfgrl.audio.tokenizer import EncodecTokenizer
from lightning_cfgrl.core.checks import check_int, check_real, check_seed, check_settings
from lightning_cfgrl.io.audio import AudioFileError
from lightning_cfgrl.training.prompts import PromptDataModule, PromptSplit

FILE_COLUMN = "file"


class PromptTable:
    """Files and their prompts, with one vocabulary per prompt column.

    Args:
        files: file names, relative to the audio folder.
        rows: per file, ``{column: value}`` (missing or empty = null).
        columns: the prompt columns, in slot order.
        vocabularies: fixed ``{column: [values...]}`` (id = position + 1); default: the sorted distinct
            values of the table. Pass the pretraining table's to keep ids identical for other tables.
    """

    def __init__(
        self,
        files: Sequence[str],
        rows: Sequence[Mapping[str, str]],
        columns: Sequence[str],
        vocabularies: Mapping[str, Sequence[str]] | None = None,
        source: str = "prompt table",
    ) -> None:
        if not columns:
            raise ValueError(
                f"{source} has no prompt columns; expected a {FILE_COLUMN!r} column plus at least one more"
            )
        seen: set[str] = set()
        for name in files:
            if name in seen:
                raise ValueError(f"{source} lists file {name!r} twice")
            seen.add(name)
        self.files, self.columns, self.source = list(files), list(columns), source
        self.rows = [{c: str(row.get(c) or "").strip() for c in self.columns} for row in rows]
        if vocabularies is None:
            vocabularies = {c: sorted({row[c] for row in self.rows if row[c]}) for c in self.columns}
        missing = [c for c in self.columns if c not in vocabularies]
        if missing:
            raise ValueError(f"vocabularies lack the prompt columns {missing} (have {sorted(vocabularies)})")
        self.vocabularies = {c: list(vocabularies[c]) for c in self.columns}
        self._ids = {c: {v: i + 1 for i, v in enumerate(vocab)} for c, vocab in self.vocabularies.items()}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        columns: Sequence[str] | None = None,
        vocabularies: Mapping[str, Sequence[str]] | None = None,
    ) -> PromptTable:
        """Read a ``.csv`` or ``.json`` table; ``columns`` picks prompt columns (default: all but ``file``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prompt table {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            records, available = _read_csv(path)
        elif suffix == ".json":
            records, available = _read_json(path)
        else:
            raise ValueError(
                f"prompt table {str(path)!r} must be a .csv or .json file, got {suffix or 'no suffix'!r}"
            )
        if columns is None:
            columns = [c for c in available if c != FILE_COLUMN]
        unknown = [c for c in columns if c not in available or c == FILE_COLUMN]
        if unknown:
            raise ValueError(
                f"prompt columns {unknown} are not prompt columns of {str(path)!r}; it has "
                f"{[c for c in available if c != FILE_COLUMN]}"
            )
        files = [r[FILE_COLUMN] for r in records]
        return cls(files, records, columns, vocabularies, source=f"prompt table {str(path)!r}")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def condition_sizes(self) -> tuple[int, ...]:
        """Values per slot (``AudioTokenTransformer(condition_sizes=...)``)."""
        return tuple(len(self.vocabularies[c]) for c in self.columns)

    def encode(self, prompt: Mapping[str, str] | str) -> Tensor:
        """One prompt -> ``[A]`` int64 ids: ``{column: value}`` (missing = null), or a string for a
        single-column table."""
        if isinstance(prompt, str):
            if len(self.columns) != 1:
                raise ValueError(
                    f"a string prompt needs a one-column table; this one has columns {self.columns}"
                )
            prompt = {self.columns[0]: prompt}
        ids = []
        for c in self.columns:
            value = str(prompt.get(c) or "").strip()
            if value and value not in self._ids[c]:
                raise ValueError(
                    f"{c}={value!r} is not in the vocabulary of column {c!r} "
                    f"({len(self._ids[c])} values, e.g. {self.vocabularies[c][:5]})"
                )
            ids.append(self._ids[c].get(value, 0))
        return torch.tensor(ids, dtype=torch.long)

    def describe(self, condition: Tensor) -> str:
        """``[A]`` ids -> ``"column=value, ..."`` (null slots left out): the inverse of :meth:`encode`."""
        parts = [
            f"{c}={self.vocabularies[c][i - 1]}" if len(self.columns) > 1 else self.vocabularies[c][i - 1]
            for c, i in zip(self.columns, condition.tolist(), strict=False)
            if 0 < i <= len(self.vocabularies[c])
        ]
        return ", ".join(parts) or "(no prompt)"

    def conditions(self) -> Tensor:
        """``[N, A]`` int64, one row per file."""
        if not self.rows:
            return torch.zeros(0, len(self.columns), dtype=torch.long)
        return torch.stack([self.encode(row) for row in self.rows])


class TokenCrops(Dataset):
    """``{"frames": [K, num_frames], "condition": [A]}`` crops of token sequences ``[K, T_i]``.

    ``crops_per_file`` items per file; offsets are random per access (``random=True``, training) or
    evenly spread over the file (validation, deterministic).
    """

    def __init__(
        self,
        tokens: Sequence[Tensor],
        conditions: Tensor,
        num_frames: int,
        crops_per_file: int = 1,
        random: bool = True,
    ) -> None:
        self.tokens, self.conditions = list(tokens), conditions
        self.num_frames, self.crops_per_file, self.random = num_frames, crops_per_file, random

    def __len__(self) -> int:
        return len(self.tokens) * self.crops_per_file

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        file, crop = divmod(index, self.crops_per_file)
        codes = self.tokens[file]
        room = codes.shape[-1] - self.num_frames
        if self.random:
            start = int(torch.randint(room + 1, ()))
        else:
            start = round(room * crop / max(self.crops_per_file - 1, 1))
        return {"frames": codes[:, start : start + self.num_frames], "condition": self.conditions[file]}


@dataclass(frozen=True)
class AudioCrops:
    """How :class:`AudioTokenDataModule` cuts each encoded file into training items.

    Args:
        num_frames: crop length T in token frames (``tokenizer.frame_rate`` frames per second); files
            shorter than this are skipped.
        per_file: crops per file per epoch (random offsets for training, evenly spaced for validation).
    """

    num_frames: int = 250
    per_file: int = 1

    def __post_init__(self) -> None:
        for name in ("num_frames", "per_file"):
            value = check_int(f"crops.{name}", getattr(self, name))
            if value < 1:
                raise ValueError(f"crops.{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class FileSplit:
    """How :class:`AudioTokenDataModule` holds files out for validation (whole files, so no crop of a
    validation file is trained on).

    Args:
        val_fraction: fraction of files held out for validation, at least one file when > 0
            (0: no validation).
        seed: seeds the train/val split.
    """

    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_real("split.val_fraction", self.val_fraction)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"split.val_fraction must be in [0, 1), got {self.val_fraction}")
        check_seed(self.seed, "split.seed")


class AudioTokenDataModule(pl.LightningDataModule):
    """Pretraining data from real audio: ``{"frames": [K, num_frames], "condition": [A]}``.

    Files are encoded once by ``tokenizer`` (in ``prepare_data`` when it has a cache, so only one process
    encodes), split by file into train/val, and cropped to ``crops.num_frames`` (random crops for
    training, fixed evenly spaced crops for validation). Files shorter than that are skipped with a
    warning.

    Args:
        audio_dir: folder of audio files (wav; flac etc. with soundfile).
        tokenizer: an :class:`EncodecTokenizer` (its bandwidth sets K, its codebook size V).
        prompts: the prompt table (CSV or JSON, see the module docs); default ``<audio_dir>/prompts.csv``.
        prompt_columns: prompt columns to use (default: all but ``file``).
        crops: crop length and crops per file (:class:`AudioCrops`).
        split: the validation files (:class:`FileSplit`).
        batch_size, num_workers: DataLoader settings.
    """

    # the flat arguments of earlier versions -> their place now (named when an old config gives them)
    moved_settings: ClassVar[dict[str, str]] = {
        "num_frames": "crops.num_frames",
        "crops_per_file": "crops.per_file",
        "val_fraction": "split.val_fraction",
        "seed": "split.seed",
    }

    def __init__(
        self,
        audio_dir: str,
        tokenizer: EncodecTokenizer,
        prompts: str | None = None,
        prompt_columns: list[str] | None = None,
        crops: AudioCrops = AudioCrops(),
        split: FileSplit = FileSplit(),
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        crops = check_settings("crops", crops, AudioCrops)
        split = check_settings("split", split, FileSplit)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.audio_dir = Path(audio_dir)
        if not self.audio_dir.is_dir():
            raise FileNotFoundError(f"audio_dir {str(self.audio_dir)!r} does not exist or is not a folder")
        self.table = PromptTable.load(
            prompts if prompts is not None else self.audio_dir / "prompts.csv", prompt_columns
        )
        if len(self.table) == 0:
            raise ValueError(f"{self.table.source} lists no files: the dataset would be empty")
        self.tokenizer, self.crops, self.split = tokenizer, crops, split
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def condition_sizes(self) -> tuple[int, ...]:
        return self.table.condition_sizes

    def describe_prompt(self, condition: Tensor) -> str:
        """A prompt's text (``AudioSampleLogger`` puts it in its tags)."""
        return self.table.describe(condition)

    def paths(self) -> list[Path]:
        """Audio paths of the table, checked to exist."""
        paths = [self.audio_dir / name for name in self.table.files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise FileNotFoundError(
                f"{len(missing)} file(s) listed in {self.table.source} are missing from "
                f"{str(self.audio_dir)!r}: {shown}"
            )
        return paths

    def _encode(self) -> list[Tensor]:
        try:
            return self.tokenizer.encode_files(self.paths())
        except AudioFileError as err:
            raise AudioFileError(f"{err} (listed in {self.table.source})") from err

    def prepare_data(self) -> None:
        if self.tokenizer.cache_dir is not None:
            self._encode()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        tokens, conditions = self._encode(), self.table.conditions()
        num_frames, per_file = self.crops.num_frames, self.crops.per_file
        keep = [i for i, codes in enumerate(tokens) if codes.shape[-1] >= num_frames]
        if not keep:
            longest = max(codes.shape[-1] for codes in tokens)
            raise ValueError(
                f"no file in {self.table.source} has crops.num_frames={num_frames} token frames "
                f"({num_frames / self.tokenizer.frame_rate:.2f} s); the longest has {longest}: lower crops.num_frames"
            )
        if len(keep) < len(tokens):
            kept = set(keep)
            short = [self.table.files[i] for i in range(len(tokens)) if i not in kept]
            warnings.warn(
                f"skipping {len(short)} file(s) shorter than crops.num_frames={num_frames} frames: "
                f"{short[:5]}",
                stacklevel=2,
            )
        val_fraction = self.split.val_fraction
        order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(self.split.seed)).tolist()
        num_val = max(1, round(val_fraction * len(keep))) if val_fraction > 0 else 0
        if num_val >= len(keep):
            raise ValueError(
                f"split.val_fraction={val_fraction} leaves no training file out of {len(keep)}; "
                "lower it or add files"
            )
        val, train = [keep[i] for i in order[:num_val]], [keep[i] for i in order[num_val:]]
        self.train_set = TokenCrops([tokens[i] for i in train], conditions[train], num_frames, per_file)
        self.val_set = TokenCrops(
            [tokens[i] for i in val], conditions[val], num_frames, per_file, random=False
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=len(self.train_set) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_set) == 0:
            return []  # Lightning skips validation
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)


class AudioPromptDataModule(PromptDataModule):
    """RL prompts from a prompt table: ``{"condition": [A]}``, each distinct prompt once per pass.

    The distinct prompts are split into train (shuffled, ``split.repeats`` passes per epoch, resumable) and
    held-out (validation); see :class:`~lightning_cfgrl.training.prompts.PromptDataModule`. No audio is
    read. Pass ``vocabularies`` (e.g. ``AudioTokenDataModule(...).table.vocabularies``) when the table
    differs from the pretraining one, so the ids match the model's.
    """

    def __init__(
        self,
        prompts: str,
        prompt_columns: list[str] | None = None,
        vocabularies: dict[str, list[str]] | None = None,
        batch_size: int = 8,
        split: PromptSplit = PromptSplit(),
    ) -> None:
        self.table = PromptTable.load(prompts, prompt_columns, vocabularies)
        distinct = torch.unique(self.table.conditions(), dim=0)
        distinct = distinct[(distinct != 0).any(-1)]  # an all-null row is not a prompt
        if len(distinct) == 0:
            raise ValueError(f"{self.table.source} has no non-empty prompt: nothing to train on")
        super().__init__(distinct, batch_size, split)

    @property
    def condition_sizes(self) -> tuple[int, ...]:
        return self.table.condition_sizes

    def describe_prompt(self, condition: Tensor) -> str:
        """A prompt's text (``AudioSampleLogger`` puts it in its tags)."""
        return self.table.describe(condition)


def _read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheet exports add a BOM
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if FILE_COLUMN not in columns:
            raise ValueError(
                f"prompt table {str(path)!r} has columns {columns}; expected a {FILE_COLUMN!r} column "
                "(audio paths relative to the audio folder) plus prompt columns"
            )
        records = []
        for line, raw in enumerate(reader, start=2):
            if None in raw:  # DictReader files surplus fields under the key None
                raise ValueError(
                    f"prompt table {str(path)!r} line {line} has more fields than the header {columns}"
                )
            row = {k.strip(): (v or "").strip() for k, v in raw.items()}
            if not row.get(FILE_COLUMN):
                raise ValueError(f"prompt table {str(path)!r} line {line} has an empty {FILE_COLUMN!r} field")
            records.append(row)
    return records, columns


def _read_json(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompt table {str(path)!r} is not valid JSON: {err}") from err
    if isinstance(data, dict):
        records = []
        for name, prompt in data.items():
            if isinstance(prompt, str):
                records.append({FILE_COLUMN: name, "prompt": prompt})
            elif isinstance(prompt, dict):
                records.append({FILE_COLUMN: name, **{str(k): str(v) for k, v in prompt.items()}})
            else:
                raise ValueError(
                    f"prompt table {str(path)!r}: the prompt of {name!r} must be a string or an object of "
                    f"column values, got {type(prompt).__name__}"
                )
    elif isinstance(data, list) and all(isinstance(r, dict) and FILE_COLUMN in r for r in data):
        records = [{str(k): str(v) for k, v in r.items()} for r in data]
    else:
        raise ValueError(
            f"prompt table {str(path)!r} must be a JSON object {{file: prompt}} or a list of objects "
            f"with a {FILE_COLUMN!r} key, got {type(data).__name__}"
        )
    columns = list(dict.fromkeys(c for r in records for c in r))
    return records, columns or [FILE_COLUMN]


__all__ = [
    "AudioCrops",
    "AudioPromptDataModule",
    "AudioTokenDataModule",
    "FileSplit",
    "PromptTable",
    "TokenCrops",
]
