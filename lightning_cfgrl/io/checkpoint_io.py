"""``AtomicCheckpointIO``: Lightning checkpoints written with temp file + fsync + ``os.replace``.

Why not Lightning's ``TorchCheckpointIO`` (2.6.6)? It serialises into memory, then writes through an
fsspec transaction whose temporary file lives in ``tempfile.gettempdir()``, not beside the target, and
commits it with ``shutil.move`` without an fsync. When the temp dir is another filesystem (a tmpfs
``/tmp``, a ``TMPDIR`` elsewhere, which is common on clusters) ``shutil.move`` copies into the target
path itself, so a crash or a full disk during the copy leaves a truncated ``last.ckpt`` where a good one
was; on the same filesystem the rename is atomic but nothing is fsynced, so a power loss can still lose
the file's data. This plugin writes a temporary sibling of the target, fsyncs it, renames it over the
target and fsyncs the directory (:func:`lightning_cfgrl.io.checkpoints.atomic_write`), streaming from
``torch.save`` with no in-memory copy of the whole checkpoint.

Use it with ``Trainer(plugins=[AtomicCheckpointIO()])`` or, in YAML, ``trainer.plugins``. Remote
(fsspec URL) paths fall back to Lightning's writer, since object stores have their own atomic puts.

Loading is weights-only unless the caller asks otherwise: Lightning's loader defaults to
``weights_only=False`` for ``http(s)://`` paths, which would run a pickle's code.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from lightning_cfgrl.io.checkpoints import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and durable: after a crash at any moment the
    target holds either its previous complete contents or the new complete checkpoint, never a mix."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO.save_checkpoint got storage_options={storage_options!r}; expected None "
                "(like TorchCheckpointIO, it takes no storage options)"
            )
        fs, local_path = fsspec.core.url_to_fs(os.fspath(path))
        if not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path)
            return
        atomic_save(checkpoint, local_path)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # None means "Lightning decides", and Lightning decides False for URLs
        return super().load_checkpoint(
            path, map_location, weights_only=True if weights_only is None else weights_only
        )


__all__ = ["AtomicCheckpointIO"]
