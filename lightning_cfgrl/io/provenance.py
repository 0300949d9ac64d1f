"""Where a frozen model's weights came from: a file's path and sha256, recorded in a checkpoint instead
of the weights themselves and verified when the run resumes.

A teacher or a reward embedder loaded from a file can be rebuilt from that file, so a checkpoint that
stores its weights repeats the file (a 1.25 MB student made 4.45 MB checkpoints; several GB at MusicGen
sizes). What must not happen is a resumed run silently using *another* file's weights: the hash makes
the resumed run refuse a file that changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lightning_cfgrl.io.checkpoints import file_sha256


def file_source(path: str | os.PathLike[str], expected: str = "a file to hash") -> dict[str, str]:
    """``{"path": <absolute path>, "sha256": <hex>}`` of a file (hash it *before* loading it, so that
    the record describes what was loaded or something older, never something newer); ``expected`` says
    what the file should be when it is missing."""
    return {"path": os.path.abspath(path), "sha256": file_sha256(path, expected=expected)}


def check_same_source(recorded: Mapping[str, Any], current: Mapping[str, Any] | None, what: str) -> None:
    """Raise ``ValueError`` unless this run's ``what`` was loaded from the file a checkpoint recorded.

    ``recorded`` comes from the checkpoint, ``current`` from this run (None when this run's model was not
    loaded from a file).
    """
    then = f"{recorded.get('path')} (sha256 {str(recorded.get('sha256'))[:12]}...)"
    if current is None:
        raise ValueError(
            f"the checkpoint's {what} was loaded from {then}, but this run's {what} was not loaded from a file; "
            "resume with the same configuration (or start a new run)"
        )
    if current.get("sha256") != recorded.get("sha256"):
        raise ValueError(
            f"the checkpoint's {what} was loaded from {then}, and {current.get('path')} now has sha256 "
            f"{str(current.get('sha256'))[:12]}...: the file changed since the checkpoint was written, so the "
            f"resumed run would use another {what}. Restore the file, or start a new run"
        )
