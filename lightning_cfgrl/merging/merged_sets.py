"""The files of merged models on disk: one set per lambda (``merged_lambda=<tag>.{safetensors,ckpt,json}``,
the JSON sidecar recording the others' sha256), the lock a merge holds on its folder, and which sets are
complete."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lightning_cfgrl.io.checkpoints import CheckpointError
from lightning_cfgrl.io.file_sets import exclusive_dir_lock, remove_stale_temps, verify_manifest
from lightning_cfgrl.merging.consistency import MergeError, check_sidecar_lambda


@dataclass(frozen=True)
class MergedFiles:
    """Paths written for one lambda; ``checkpoint`` is None when no Lightning template was given."""

    lam: float
    safetensors: Path
    sidecar: Path
    checkpoint: Path | None


def lambda_tag(lam: float) -> str:
    """File-name tag of a lambda: two decimals (``0.50``) when exact, else the full float (``0.125``)."""
    short = f"{lam + 0.0:.2f}"
    return short if float(short) == lam else repr(float(lam) + 0.0)


MERGED_PREFIX = "merged_lambda="


def merged_paths(out_dir: str | Path, lam: float, with_checkpoint: bool = True) -> MergedFiles:
    """Where the files for ``lam`` go: ``merged_lambda=0.50.{ckpt,safetensors,json}`` in ``out_dir``."""
    stem = Path(out_dir) / f"{MERGED_PREFIX}{lambda_tag(lam)}"
    return MergedFiles(
        lam=lam,
        safetensors=stem.with_name(stem.name + ".safetensors"),
        sidecar=stem.with_name(stem.name + ".json"),
        checkpoint=stem.with_name(stem.name + ".ckpt") if with_checkpoint else None,
    )


def check_outputs_are_not_inputs(
    out_dir: str | Path,
    lambdas: Iterable[float],
    with_checkpoint: bool,
    inputs: Mapping[str, str | os.PathLike[str]],
) -> None:
    """Raise :class:`MergeError` if a file the merge would write is one of its ``inputs`` (real paths,
    so symlinks and hard links count): a merge would then read its own output for the next lambda."""
    for lam in lambdas:
        paths = merged_paths(out_dir, lam, with_checkpoint)
        for out in (paths.safetensors, paths.checkpoint, paths.sidecar):
            for name, source in inputs.items():
                if out is not None and _same_file(out, source):
                    raise MergeError(
                        f"the {name} input {source} is the output for lambda={lam} ({out}): the merge would "
                        "overwrite a file it reads. Write to another output directory, or move the input out "
                        "of it"
                    )


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


@contextlib.contextmanager
def merge_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``out_dir`` for one merge: an exclusive lock (a second merge into it is refused), and the
    temporary files of an earlier, killed merge removed."""
    with exclusive_dir_lock(out_dir, "a merge") as directory:
        remove_stale_temps(directory, MERGED_PREFIX)
        yield directory


def complete_merged_sets(out_dir: str | Path) -> list[tuple[float, MergedFiles]]:
    """``(lambda, files)`` of every complete merged set in ``out_dir``, sorted by lambda.

    A set is complete when its JSON sidecar exists and the sha256 it records match the files beside it
    (:func:`~lightning_cfgrl.io.file_sets.verify_manifest`, which raises otherwise). Model files without
    a sidecar are what an interrupted merge leaves: they are skipped with a warning.
    """
    found = []
    for sidecar in sorted(Path(out_dir).glob(f"{MERGED_PREFIX}*.json")):
        content = verify_manifest(sidecar)
        names = content["files"]
        lam = check_sidecar_lambda(sidecar, content, {r: sidecar.parent / n for r, n in names.items()})
        if sidecar.name != f"{MERGED_PREFIX}{lambda_tag(lam)}.json":
            raise CheckpointError(f"sidecar {sidecar} records lambda={lam}, which its file name does not say")
        found.append(
            (
                lam,
                MergedFiles(
                    lam=lam,
                    safetensors=sidecar.parent / names["safetensors"],
                    sidecar=sidecar,
                    checkpoint=sidecar.parent / names["checkpoint"] if "checkpoint" in names else None,
                ),
            )
        )
    listed = {f for _, files in found for f in (files.safetensors, files.checkpoint) if f is not None}
    orphans = [
        p.name
        for p in sorted(Path(out_dir).glob(f"{MERGED_PREFIX}*"))
        if p.suffix in (".ckpt", ".safetensors") and p not in listed
    ]
    if orphans:
        warnings.warn(
            f"{out_dir}: {orphans} have no sidecar (left by an interrupted merge) and were skipped; rerun the "
            "merge to complete them",
            stacklevel=2,
        )
    return sorted(found, key=lambda item: item[0])
