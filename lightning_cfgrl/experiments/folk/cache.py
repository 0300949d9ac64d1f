"""Parsed tunes cached in the user's cache folder, one entry per source file: the notes in a safetensors
file and the metadata in JSON beside it (never pickle: reading a cache runs no code).

The folder is ``$LIGHTNING_CFGRL_CACHE/folk`` when that variable is set, else
``$XDG_CACHE_HOME/lightning_cfgrl/folk`` (``~/.cache/lightning_cfgrl/folk``). An entry's name hashes the
file's absolute path, size, modification time and the parser's version, so an edited file is re-parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lightning_cfgrl.experiments.folk.corpus import Tune, parse_files

PARSER_VERSION = 1  # bump when corpus.py's output changes: old entries are then ignored
CACHE_ENV = "LIGHTNING_CFGRL_CACHE"


def cache_dir() -> Path:
    """Where parsed tunes are kept (see the module docs)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "folk"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lightning_cfgrl" / "folk"


def entry_name(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{PARSER_VERSION}"
    return f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def save_tunes(tunes: Sequence[Tune], stem: Path) -> None:
    """``stem.safetensors`` (notes ``[N, 3]`` int32 and per-tune offsets ``[n + 1]``) + ``stem.json``."""
    notes = [n for t in tunes for n in t.notes]
    offsets = torch.tensor([0, *torch.tensor([len(t.notes) for t in tunes]).cumsum(0).tolist()])
    stem.parent.mkdir(parents=True, exist_ok=True)
    tmp = stem.with_name(stem.name + ".tmp")
    save_file(
        {
            "notes": torch.tensor(notes, dtype=torch.int32).reshape(-1, 3),
            "offsets": offsets.to(torch.int64),
        },
        str(tmp.with_suffix(".safetensors")),
    )
    meta = [
        {k: getattr(t, k) for k in ("collection", "meter", "mode", "tonic", "title", "source")} for t in tunes
    ]
    tmp.with_suffix(".json").write_text(json.dumps({"parser_version": PARSER_VERSION, "tunes": meta}))
    tmp.with_suffix(".safetensors").replace(stem.with_suffix(".safetensors"))
    tmp.with_suffix(".json").replace(stem.with_suffix(".json"))


def load_tunes(stem: Path) -> list[Tune]:
    meta = json.loads(stem.with_suffix(".json").read_text())
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    notes, offsets = tensors["notes"].tolist(), tensors["offsets"].tolist()
    return [
        Tune(**m, notes=[tuple(n) for n in notes[offsets[i] : offsets[i + 1]]])
        for i, m in enumerate(meta["tunes"])
    ]


def cached_tunes(paths: Sequence[str | Path], verbose: bool = False) -> list[Tune]:
    """The tunes of ``paths``, parsed once per file (music21 is slow: about 0.1 s per tune) and then read
    from the cache."""
    tunes: list[Tune] = []
    folder = cache_dir()
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(
                f"corpus file {path} does not exist; pass existing ABC/MusicXML/MIDI files"
            )
        stem = folder / entry_name(path)
        if not stem.with_suffix(".json").exists() or not stem.with_suffix(".safetensors").exists():
            if verbose:
                print(f"parsing {path.name} (cached in {folder})", flush=True)
            save_tunes(parse_files([path]), stem)
        tunes.extend(load_tunes(stem))
    return tunes


__all__ = ["CACHE_ENV", "PARSER_VERSION", "cache_dir", "cached_tunes", "load_tunes", "save_tunes"]
