"""Outputs never delete inputs: the one check every command that writes a folder runs first.

An output folder that is, or holds, any input of the command (the checkpoint, the base model folder,
the tokenizer/processor files it copies) is refused, with or without ``--overwrite``; and an
``--overwrite`` replaces only a folder whose every file the same command wrote (its manifest lists them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path


def check_not_an_input(
    out: str | os.PathLike[str], inputs: Mapping[str, object], flag: str = "--out"
) -> None:
    """Raise ``ValueError`` when ``out`` is one of ``inputs`` ({what: path or None}) or a folder holding one."""
    target = Path(out).resolve()
    for what, path in inputs.items():
        if path is None or not isinstance(path, (str, os.PathLike)):
            continue
        source = Path(path).resolve()
        if source == target or target in source.parents:
            raise ValueError(
                f"{flag} {os.fspath(out)!r} holds an input of this command, the {what} {os.fspath(path)!r}; "
                "an output never replaces or deletes its inputs: write to another folder"
            )


def check_only_own_files(folder: str | os.PathLike[str], written: Iterable[str], command: str) -> None:
    """Before ``--overwrite`` replaces ``folder``: every file in it must be one ``command`` wrote there
    (``written``, relative paths from its manifest); anything else is refused, named."""
    root = Path(folder)
    own = {Path(p).as_posix() for p in written}
    foreign = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(root).as_posix() not in own
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"--overwrite refused: {os.fspath(folder)!r} holds file(s) that {command} did not write ({shown}); "
            "--overwrite only replaces a folder this command wrote. Move them out, or choose another folder"
        )
