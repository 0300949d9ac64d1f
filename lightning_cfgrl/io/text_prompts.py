"""Text prompts as data: read a CSV/JSON list of prompts and tokenise them with a model's own text
tokenizer (see :mod:`lightning_cfgrl.audio.text_prompts` for the file formats and the null prompt).
Files here are read as data only; a tokenizer folder is loaded with ``local_files_only``."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PROMPT_COLUMN = "prompt"


def read_text_prompts(source: str | Sequence[str], column: str = PROMPT_COLUMN) -> list[str]:
    """Prompts from a CSV/JSON file (see the module docstring) or a list of strings, stripped, in order."""
    if not isinstance(source, str):
        texts = list(source)
        origin = "prompts"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"prompt file {source!r} does not exist; expected a CSV or JSON list of text prompts"
            )
        texts = _read_json(path, column) if path.suffix.lower() == ".json" else _read_csv(path, column)
        origin = f"prompt file {source!r}"
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{origin}: entry {bad[0]} is a {type(texts[bad[0]]).__name__}, expected a string")
    texts = [t.strip() for t in texts]
    if not any(texts):
        raise ValueError(f"{origin} holds no non-empty prompt: nothing to train on")
    return list(dict.fromkeys(texts))


def _read_csv(path: Path, column: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheet exports add a BOM
        reader = csv.DictReader(f)
        header = {c.strip(): c for c in (reader.fieldnames or [])}
        if column not in header:
            raise ValueError(
                f"prompt file {str(path)!r} has columns {list(header)}; expected a {column!r} column"
            )
        return [row.get(header[column]) or "" for row in reader]


def _read_json(path: Path, column: str) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompt file {str(path)!r} is not valid JSON: {err}") from err
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list):
        raise ValueError(
            f"prompt file {str(path)!r} must hold a JSON list of prompts, got {type(data).__name__}"
        )
    out = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            if column not in item:
                raise ValueError(
                    f"prompt file {str(path)!r}: entry {i} has keys {sorted(item)}, expected {column!r}"
                )
            item = item[column]
        out.append(item)
    return out


def load_text_tokenizer(tokenizer: Any, local_files_only: bool = True) -> Any:
    """A tokenizer object as is, or ``AutoTokenizer.from_pretrained(tokenizer)`` for a folder / hub id."""
    if not isinstance(tokenizer, (str, Path)):
        if not callable(tokenizer):
            raise TypeError(
                f"tokenizer must be a folder, a hub id or a callable tokenizer, got {type(tokenizer).__name__}"
            )
        return tokenizer
    from lightning_cfgrl.adapters.musicgen import import_musicgen

    try:
        return import_musicgen().AutoTokenizer.from_pretrained(
            str(tokenizer), local_files_only=local_files_only
        )
    except (OSError, ValueError) as err:  # no tokenizer files there (transformers raises either)
        raise ValueError(
            f"could not load a text tokenizer from {str(tokenizer)!r} ({str(err).splitlines()[0]}); expected a "
            "local model folder with tokenizer files (e.g. a copy of facebook/musicgen-small)"
        ) from err


def tokenize_prompts(
    texts: Sequence[str], tokenizer: Any, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """``(input_ids [P, L], attention_mask [P, L])`` int64; empty prompts get an all-zero mask (null)."""
    batch = tokenizer(
        list(texts),
        padding=True,
        truncation=max_length is not None,
        max_length=max_length,
        return_tensors="pt",
    )
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    null = torch.tensor([not t for t in texts], dtype=torch.bool)
    return ids, mask.masked_fill(null[:, None], 0)


__all__ = ["PROMPT_COLUMN", "load_text_tokenizer", "read_text_prompts", "tokenize_prompts"]
