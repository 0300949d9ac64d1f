"""Files that belong together (a merged model's ``.ckpt``, ``.safetensors`` and JSON sidecar) appear
together or not at all.

A directory cannot replace several files in one atomic step, so the set has a *manifest* (the sidecar)
that is written last and lists the sha256 of every other file; readers trust a set only through a
manifest whose hashes match the files beside it (:func:`verify_manifest`). :class:`StagedFileSet`
writes every file to a temporary sibling first, and only when all are complete and fsynced:

1. deletes the old manifest (the old set is no longer trusted),
2. renames the data files into place,
3. writes the new manifest (temp file, fsync, rename).

A crash before 1 leaves the old set; between 1 and 3 a set without manifest, which readers ignore and
the next run replaces; after 3 the new set. Temporary files of a killed writer are removed by
:func:`remove_stale_temps` on the next run (under :func:`exclusive_dir_lock`, so never a live writer's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from lightning_cfgrl.io.checkpoints import (
    CheckpointError,
    atomic_save_json,
    file_sha256,
    fsync_dir,
    temp_sibling,
)

log = logging.getLogger(__name__)


class StagedFileSet:
    """Write ``files`` and then ``manifest`` so that readers see the old set or the new one, never a mix.

    Use as a context manager: :meth:`open` gives the temporary file behind each target, :meth:`staged`
    its path (to hash it), :meth:`commit` makes the set visible. Leaving the block without a commit (an
    exception) deletes every temporary file and changes nothing.
    """

    def __init__(self, manifest: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]]) -> None:
        self.manifest = Path(manifest)
        self.files = [Path(f) for f in files]
        if len({f.parent for f in [*self.files, self.manifest]}) != 1:
            raise ValueError(f"a file set must live in one directory, got {[*self.files, self.manifest]}")
        self._temps = {f: temp_sibling(f) for f in self.files}
        self._handles: dict[Path, IO[bytes]] = {}
        self._committed = False

    def __enter__(self) -> StagedFileSet:
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles.values():
            handle.close()
        if not self._committed:
            for tmp in self._temps.values():
                tmp.unlink(missing_ok=True)

    def open(self, target: str | os.PathLike[str]) -> IO[bytes]:
        """The temporary file that becomes ``target`` at commit (opened once, exclusively)."""
        path = Path(target)
        if path not in self._handles:
            self._handles[path] = open(self._temps[path], "xb")  # noqa: SIM115 - closed in __exit__
        return self._handles[path]

    def staged(self, target: str | os.PathLike[str]) -> Path:
        """Where ``target``'s bytes are until commit (complete once :meth:`finish` has run)."""
        return self._temps[Path(target)]

    def finish(self) -> None:
        """Flush, fsync and close every data file (so they can be hashed or mapped back)."""
        for path in self.files:
            handle = self.open(path)  # a file never written becomes an empty file, as asked
            if not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()

    def commit(self, manifest: Mapping[str, Any]) -> None:
        """Make the set visible: old manifest out, data files in, ``manifest`` (JSON) in last."""
        self.finish()
        directory = self.manifest.parent
        self.manifest.unlink(missing_ok=True)
        fsync_dir(directory)
        for path in self.files:
            os.replace(self._temps[path], path)
        fsync_dir(directory)
        atomic_save_json(dict(manifest), self.manifest)
        self._committed = True


def file_hashes(files: Mapping[str, str | os.PathLike[str]]) -> dict[str, str]:
    """``{role: sha256}`` of files (temporary or final), for a manifest's ``sha256`` entry."""
    return {role: file_sha256(path) for role, path in files.items()}


def verify_manifest(manifest: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's content if every file it lists (``files``: role -> name beside it) exists with the
    recorded ``sha256``; else :class:`CheckpointError` naming the file that does not match."""
    path = Path(manifest)
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"manifest {path} cannot be read ({err}); expected a JSON sidecar") from err
    files, hashes = content.get("files"), content.get("sha256")
    if not isinstance(files, dict) or not isinstance(hashes, dict) or set(files) != set(hashes):
        raise CheckpointError(
            f"manifest {path} lists no sha256 for its files (written by an older version, or damaged); "
            "rewrite the set to trust it"
        )
    for role, name in files.items():
        file = _confined(path, role, name)
        if not file.is_file():
            raise CheckpointError(f"manifest {path}: its {role} file {file} is missing")
        if file_sha256(file) != hashes[role]:
            raise CheckpointError(
                f"manifest {path}: its {role} file {file} does not match the recorded sha256 (a mix of two "
                "writes, or a file changed since); rewrite the set"
            )
    return content


def _confined(manifest: Path, role: str, name: Any) -> Path:
    """The file a manifest names, which must be a plain name in the manifest's own folder: no path
    separators or ``..``, and no symlink resolving elsewhere (a sidecar could otherwise vouch for any file
    on the machine whose hash it knows, e.g. the base model as "merged")."""
    folder = manifest.parent
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise CheckpointError(
            f"manifest {manifest}: its {role} file {name!r} is not a plain file name in {folder}; a sidecar "
            "may only name files beside it"
        )
    file = folder / name
    if file.exists() and file.resolve().parent != folder.resolve():
        raise CheckpointError(
            f"manifest {manifest}: its {role} file {file} resolves to {file.resolve()}, outside {folder}; a "
            "sidecar may only name files beside it"
        )
    return file


@contextlib.contextmanager
def exclusive_dir_lock(directory: str | os.PathLike[str], what: str = "a writer") -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``directory`` itself (no lock file; released even on SIGKILL).

    Refuses at once, instead of waiting, when another process holds it. Where directories cannot be
    locked (no ``fcntl``, e.g. Windows) no lock is taken.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(
                f"another process is writing into {path} ({what} holds its lock); wait for it to finish or "
                "write elsewhere"
            ) from None
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def remove_stale_temps(directory: str | os.PathLike[str], prefix: str) -> list[Path]:
    """Delete temporary files (``.<prefix>*.tmp``) a killed writer left in ``directory``; call it while
    holding :func:`exclusive_dir_lock`, so that no live writer's files are touched."""
    removed = []
    for tmp in sorted(Path(directory).glob(f".{prefix}*.tmp")):
        size = tmp.stat().st_size
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
        log.info("removed %s (%d bytes) left by an interrupted write", tmp, size)
    return removed
