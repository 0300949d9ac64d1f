"""Safe checkpoint I/O: atomic writes, refusing loads, streaming safetensors.

Plain torch (no Lightning). Every writer goes through :func:`atomic_write`: data lands in a temporary
file beside the target and is renamed over it only once complete, so a crash or an exception never
leaves a half-written file or damages an existing one. Every ``torch.load`` here uses
``weights_only=True``: a checkpoint is data, and a file that would run code is refused, not executed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import secrets
import stat
import struct
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import torch
from torch import Tensor

_V = TypeVar("_V")

# Keys a Lightning checkpoint carries besides the weights that must never travel into a derived model.
TRAINING_STATE_KEYS = ("optimizer_states", "lr_schedulers", "callbacks")

# The safetensors dtype codes (https://github.com/huggingface/safetensors, format spec).
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "U16": torch.uint16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_DTYPE_CODES = {dtype: code for code, dtype in _SAFETENSORS_DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, unsafe, or not the kind of file that was expected."""


# --------------------------------------------------------------------------------------------- writing


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` only when the block exits without error.

    The file is a temporary sibling of ``path`` (same filesystem, so ``os.replace`` is atomic); its
    ``.name`` is that temporary path. On success it is flushed, fsynced and renamed over ``path``; on any
    exception it is deleted and ``path`` is left exactly as it was.
    """
    target = Path(path)
    tmp = temp_sibling(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # "xb" (exclusive create, mode 0o666 minus umask) rather than mkstemp, whose 0o600 would stick.
        f = open(tmp, "xb")
    except OSError as err:
        raise write_error(target, err) from None  # type: ignore[misc]
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        named = write_error(target, err)
        if named is not None:  # one error naming the file, not a chain of three tracebacks
            raise named from None
        raise
    fsync_dir(target.parent)


@contextmanager
def naming_write_errors(target: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise a failed write inside the block as one ``OSError`` naming ``target`` (:func:`write_error`)."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        named = write_error(target, err)
        if named is None:
            raise
        raise named from None


def write_error(target: str | os.PathLike[str], err: BaseException) -> OSError | None:
    """An ``OSError`` naming ``target`` for a failed write (disk full, read-only folder, permission), or
    None when ``err`` is not one (torch.save reports a full disk as a RuntimeError without the path)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OSError):  # torch.save wraps ENOSPC in RuntimeError
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno is not None:
        err = cause
    if isinstance(err, OSError):
        reason = err.strerror or _first_line(err)
        hint = {errno.ENOSPC: "; free space or write elsewhere", errno.EROFS: "; write elsewhere"}.get(
            err.errno, ""
        )
        return OSError(err.errno, f"cannot write {os.fspath(target)}: {reason}{hint}")
    if isinstance(err, RuntimeError) and re.search(
        r"file write failed|PytorchStreamWriter failed|inline_container", str(err)
    ):
        return OSError(
            errno.EIO,
            f"cannot write {os.fspath(target)}: torch.save failed ({_first_line(err)}); is the disk full?",
        )
    return None


def temp_sibling(target: Path) -> Path:
    """A fresh temporary name beside ``target``: ``.<name>.<random>.tmp`` (hidden, same filesystem)."""
    return target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable (skipped where the platform cannot)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def atomic_save_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (CPU or not, any shape) as a safetensors file, atomically."""
    specs = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    with atomic_write(path) as f:
        write_safetensors(f, specs, ((k, tensors[k]) for k in safetensors_order(specs)), metadata)


def write_safetensors(
    f: IO[bytes],
    specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
    tensors: Iterable[tuple[str, Tensor]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Stream tensors into an open file in the safetensors format, one at a time.

    The header needs every name, dtype and shape before any data, so they come in ``specs``; ``tensors``
    may then be a generator that computes each tensor just before it is written, which keeps memory at
    one tensor instead of one model. ``tensors`` must yield exactly the names of ``specs`` in
    :func:`safetensors_order` order with the announced dtype and shape.
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; this writer does not byte-swap")
    order = safetensors_order(specs)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in order:
        dtype, shape = specs[name]
        if dtype not in _DTYPE_CODES:
            raise TypeError(f"tensor {name!r} has dtype {dtype}, which safetensors cannot store")
        nbytes = _numel(shape) * _itemsize(dtype)
        header[name] = {
            "dtype": _DTYPE_CODES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)  # pad so the data section starts 8-byte aligned
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)

    count = 0
    for name, tensor in tensors:
        expected = order[count] if count < len(order) else None
        dtype, shape = specs[expected] if expected is not None else (None, None)
        if name != expected or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(
                f"streamed tensor #{count} is {name!r} {tensor.dtype} {tuple(tensor.shape)}, expected "
                f"{expected!r} {dtype} {shape} as announced in the header"
            )
        if tensor.numel():
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            f.write(memoryview(flat.view(torch.uint8).numpy()))
        count += 1
    if count != len(order):
        raise ValueError(f"streamed {count} tensors, the header announced {len(order)}")


def safetensors_order(specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]) -> list[str]:
    """The order in which :func:`write_safetensors` lays tensors out: widest dtype first, then by name.

    Widest first keeps every tensor aligned to its element size inside the file, so it can be memory
    mapped without copies (the same rule the safetensors library uses).
    """
    return sorted(specs, key=lambda name: (-_itemsize(specs[name][0]), name))


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --------------------------------------------------------------------------------------------- reading


def file_sha256(
    path: str | os.PathLike[str], chunk_bytes: int = 1 << 20, expected: str = "a file to hash"
) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory); ``expected`` says what the file should
    be when it is missing."""
    digest = hashlib.sha256()
    with open(_existing_file(path, expected), "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """Hex SHA-256 of named tensors (name, dtype, shape and bytes, in name order): a weights fingerprint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(
    path: str | os.PathLike[str], *, mmap: bool = False, require_state_dict: bool = True
) -> dict[str, Any]:
    """Load a Lightning/torch checkpoint with ``torch.load(weights_only=True, map_location="cpu")``.

    ``mmap=True`` maps tensor data lazily instead of reading it (zip-format files only; older formats
    are read normally). Raises :class:`CheckpointError` for a missing, corrupt or truncated file, for a
    file whose pickle would run code or build arbitrary objects (refused, never executed), and, with
    ``require_state_dict``, for a file that is not a dict with a ``state_dict`` mapping.
    """
    file = _existing_file(path, "a Lightning .ckpt file written by torch.save")
    use_mmap = mmap and zipfile.is_zipfile(file)  # torch refuses mmap for legacy (non-zip) files
    try:
        ckpt = torch.load(file, weights_only=True, map_location="cpu", mmap=use_mmap)
    except MemoryError:
        raise
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"checkpoint {file} is corrupt or truncated: {_first_line(err)}") from err
        raise CheckpointError(
            f"checkpoint {file} was refused for safety: its pickle holds objects or code that "
            f"torch.load(weights_only=True) does not allow ({_weights_only_reason(err)}). Nothing in it was "
            "executed. Expected plain tensors and containers; if you trust the file, re-save its tensors."
        ) from err
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {file} is corrupt or truncated ({type(err).__name__}: {_first_line(err)}); "
            "expected a complete file written by torch.save"
        ) from err
    if require_state_dict:
        if not isinstance(ckpt, dict):
            raise CheckpointError(
                f"{file} is not a Lightning checkpoint: expected a dict with a 'state_dict' key, "
                f"got a {type(ckpt).__name__}"
            )
        if not isinstance(ckpt.get("state_dict"), Mapping):
            raise CheckpointError(
                f"{file} is not a Lightning checkpoint: expected a dict with a 'state_dict' mapping, "
                f"found keys {sorted(map(str, ckpt))[:10]}"
            )
    return ckpt


def load_safetensors(path: str | os.PathLike[str], *, mmap: bool = True) -> dict[str, Tensor]:
    """Tensors of a safetensors file, CPU, read by ``safetensors.safe_open`` (which validates the header:
    offsets, sizes, dtypes). safetensors maps the file privately: a tensor's bytes are read when touched,
    and writing to a tensor never changes the file. ``mmap`` is kept for callers; both values load alike.
    """
    file = _existing_file(path, "a .safetensors file")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{file} is not a valid safetensors file ({_first_line(err)}); expected a complete file "
            "written by safetensors"
        ) from err


GENERATOR_PREFIX = "generator."  # where a CFGRLModule / PretrainModule keeps its model in state_dict


def strip_prefix(state: Mapping[str, _V], prefix: str) -> dict[str, _V]:
    """The entries of ``state`` whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_generator_state(
    path: str | os.PathLike[str], prefix: str = GENERATOR_PREFIX, *, mmap: bool = True
) -> dict[str, Tensor]:
    """The generator's weights from a Lightning checkpoint or a safetensors file, keys without prefix.

    A ``.safetensors`` file (or any file in that format) holds the generator's own keys. A Lightning
    checkpoint holds them in ``state_dict`` under ``prefix``; only those entries are returned.
    """
    file = _existing_file(path, "a Lightning .ckpt or a .safetensors file of generator weights")
    if is_safetensors_file(file):
        state = load_safetensors(file, mmap=mmap)
        if not state:
            raise CheckpointError(f"{file} holds no tensors; expected the generator's weights")
        return state
    state_dict = load_checkpoint(file, mmap=mmap)["state_dict"]
    state = strip_prefix(state_dict, prefix)
    if not state:
        raise CheckpointError(
            f"{file} has no '{prefix}*' entries in its state_dict; expected the generator's weights there "
            f"(found keys like {sorted(state_dict)[:5]})"
        )
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{file}: state_dict entries {bad[:5]} are not tensors")
    return state


def is_safetensors_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named ``*.safetensors`` or starts like one (header length, then ``{``)."""
    file = Path(path)
    if file.suffix == ".safetensors":
        return True
    with open(_existing_file(file, "a checkpoint or safetensors file"), "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(file)


def _existing_file(path: str | os.PathLike[str], expected: str) -> Path:
    """``path`` if it is a regular file (through symlinks); else :class:`CheckpointError` saying what it is:
    missing, a dangling symlink, a symlink loop, a directory, unreadable, or a FIFO/device/socket (never
    opened: reading one could block forever or read a device)."""
    file = Path(path)
    try:
        info = os.stat(file)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CheckpointError(
                f"{file} is a symlink loop (it never resolves to a file); expected {expected}"
            ) from None
        if err.errno == errno.ENOENT and os.path.lexists(file):
            raise CheckpointError(
                f"{file} is a symlink to {os.readlink(file)!r}, which does not exist; expected {expected}"
            ) from None
        if err.errno == errno.ENOENT:
            raise CheckpointError(f"{file} does not exist; expected {expected}") from None
        raise CheckpointError(f"{file} cannot be read ({err.strerror}); expected {expected}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(
            f"{file} is a directory; expected {expected} (consolidate sharded checkpoints first)"
        )
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "a device"
        )
        raise CheckpointError(f"{file} is {kind}, not a regular file; refused unopened; expected {expected}")
    return file


def resolve_stored_path(
    stored: str | os.PathLike[str], checkpoint: str | os.PathLike[str], what: str
) -> Path:
    """A path recorded inside ``checkpoint`` (e.g. its ``init_checkpoint``), as data: an absolute path as
    is; a relative one beside the checkpoint first, else relative to the working directory (where runs
    record them); it must be a regular file (:func:`_existing_file` names what else it is)."""
    path = Path(stored)
    if not path.is_absolute():
        beside = Path(checkpoint).parent / path
        path = beside if os.path.lexists(beside) else path
    return _existing_file(path, f"{what} (recorded in {checkpoint})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or repr(err)
    return text.splitlines()[0][:300]


def _weights_only_reason(err: BaseException) -> str:
    # torch's message is a page long; the line naming the refused global or opcode is what matters.
    for line in str(err).splitlines():
        if re.search(r"GLOBAL|Unsupported|not an allowed global|unsupported", line):
            return line.strip()[:300]
    return "see torch.load's weights_only documentation"
