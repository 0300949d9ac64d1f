"""Atomic writers, streaming safetensors, and refusing checkpoint loads."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lightning_cfgrl.io import checkpoints as checkpointing
from lightning_cfgrl.io.checkpoints import (
    CheckpointError,
    atomic_save,
    atomic_save_json,
    atomic_save_safetensors,
    atomic_write,
    file_sha256,
    load_checkpoint,
    load_generator_state,
    load_safetensors,
    safetensors_order,
    write_safetensors,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "half": torch.randn(3, generator=g).half(),
        "f64": torch.randn(2, dtype=torch.float64, generator=g),
        "count": torch.arange(5),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "bytes": torch.tensor([1, 2, 255], dtype=torch.uint8),
    }


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------- atomic


def test_atomic_save_round_trip_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.ckpt"
    atomic_save({"state_dict": {"w": torch.arange(4.0)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.arange(4.0))
    assert _leftovers(path.parent) == []


def test_atomic_save_failure_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.ckpt"
    atomic_save({"v": torch.zeros(3)}, path)
    before = path.read_bytes()

    def broken_save(obj, f) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpointing.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"v": torch.ones(3)}, path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"v": torch.ones(3)}, tmp_path / "new.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


def test_atomic_json_and_safetensors_failures_leave_nothing(tmp_path: Path) -> None:
    atomic_save_json({"a": 1}, tmp_path / "a.json")
    assert (tmp_path / "a.json").read_text().strip() == '{\n  "a": 1\n}'
    with pytest.raises(TypeError):
        atomic_save_json({"a": object()}, tmp_path / "a.json")
    assert (tmp_path / "a.json").read_text().strip() == '{\n  "a": 1\n}'

    specs = {"a": (torch.float32, (2,)), "b": (torch.float32, (2,))}

    def stream():
        yield "a", torch.zeros(2)
        raise RuntimeError("merge failed mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        with atomic_write(tmp_path / "m.safetensors") as f:
            write_safetensors(f, specs, stream())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_keeps_umask_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_save_json({}, tmp_path / "p.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o644


# -------------------------------------------------------------------------------------- safetensors


def test_streamed_safetensors_read_by_the_library_and_by_mmap(tmp_path: Path) -> None:
    tensors = _tensors()
    path = tmp_path / "t.safetensors"
    atomic_save_safetensors(tensors, path, {"note": "x"})
    by_library = load_file(path)
    mapped = load_safetensors(path, mmap=True)
    for name, t in tensors.items():
        for got in (by_library[name], mapped[name]):
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), name
    mapped["w"].add_(1.0)  # a private mapping: the file must not change
    assert torch.equal(load_file(path)["w"], tensors["w"])


def test_load_safetensors_equals_the_library_on_odd_files_and_never_writes_them(tmp_path: Path) -> None:
    # a foreign writer's misaligned data (odd header length) and zero-size tensors, both load modes
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    header = json.dumps({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode() + b" "
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", len(header)) + header + t.numpy().tobytes())
    empty = tmp_path / "empty.safetensors"
    save_file({"e": torch.empty(0), "z": torch.zeros(0, 3, dtype=torch.int64)}, empty)
    for path in (odd, empty):
        before = path.read_bytes()
        expected = load_file(path)
        for mmap in (True, False):
            got = load_safetensors(path, mmap=mmap)
            assert set(got) == set(expected)
            for name, value in expected.items():
                assert got[name].dtype == value.dtype and torch.equal(got[name], value), (path, name)
                got[name].add_(1)
        assert path.read_bytes() == before


def test_streamed_tensor_must_match_the_header(tmp_path: Path) -> None:
    specs = {"a": (torch.float32, (2,))}
    with pytest.raises(ValueError, match=r"expected 'a' torch.float32 \(2,\)"):
        with atomic_write(tmp_path / "m.safetensors") as f:
            write_safetensors(f, specs, iter([("a", torch.zeros(3))]))
    with pytest.raises(ValueError, match="announced 1"):
        with atomic_write(tmp_path / "m.safetensors") as f:
            write_safetensors(f, specs, iter([]))


def test_safetensors_order_widest_dtype_first() -> None:
    specs = {"b": (torch.uint8, (3,)), "a": (torch.float32, (1,)), "c": (torch.float64, (1,))}
    assert safetensors_order(specs) == ["c", "a", "b"]


def test_load_safetensors_of_a_foreign_writer_and_errors(tmp_path: Path) -> None:
    tensors = _tensors()
    save_file(tensors, tmp_path / "lib.safetensors")
    loaded = load_generator_state(tmp_path / "lib.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_safetensors(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------ loading


def test_load_checkpoint_round_trip_with_and_without_mmap(tmp_path: Path) -> None:
    ckpt = {"state_dict": {"generator.w": torch.randn(4, 4), "other.x": torch.ones(1)}, "epoch": 3}
    torch.save(ckpt, tmp_path / "a.ckpt")
    for mmap in (False, True):
        loaded = load_checkpoint(tmp_path / "a.ckpt", mmap=mmap)
        assert loaded["epoch"] == 3 and torch.equal(
            loaded["state_dict"]["generator.w"], ckpt["state_dict"]["generator.w"]
        )
    generator = load_generator_state(tmp_path / "a.ckpt")
    assert list(generator) == ["w"]


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.ckpt does not exist; expected a Lightning \.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_corrupt_files_are_named(tmp_path: Path, kind: str) -> None:
    torch.save({"state_dict": {"w": torch.randn(256)}}, tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    content = {"truncated": data[: len(data) // 2], "garbage": b"hello, not a checkpoint", "empty": b""}[kind]
    path = tmp_path / f"{kind}.ckpt"
    path.write_bytes(content)
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match=rf"{kind}\.ckpt is corrupt or truncated"):
            load_checkpoint(path, mmap=mmap)


class _RunsCode:
    """Unpickling this object calls os.mkdir(marker): code execution with a visible side effect."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {}, "x": _RunsCode(str(marker))}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match="refused for safety") as info:
            load_checkpoint(path, mmap=mmap)
        assert "evil.ckpt" in str(info.value)
        assert not marker.exists()
    # The side-effect detector works: an unsafe load does run the payload.
    if writer == "torch":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_foreign_files_are_not_lightning_checkpoints(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint.*got a list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"'state_dict' mapping, found keys \['model'\]"):
        load_checkpoint(tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt", require_state_dict=False)["model"]["w"].item() == 1.0
    torch.save({"state_dict": {"head.w": torch.ones(1)}}, tmp_path / "nogen.ckpt")
    with pytest.raises(CheckpointError, match=r"no 'generator\.\*' entries.*head\.w"):
        load_generator_state(tmp_path / "nogen.ckpt")


def test_file_sha256(tmp_path: Path) -> None:
    (tmp_path / "abc").write_bytes(b"abc")
    assert file_sha256(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    blob = os.urandom(3 << 20)
    (tmp_path / "big").write_bytes(blob)
    assert file_sha256(tmp_path / "big", chunk_bytes=1000) == hashlib.sha256(blob).hexdigest()
