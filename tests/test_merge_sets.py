"""A merge's files per lambda (``.ckpt``, ``.safetensors``, JSON sidecar) appear together or not at all,
a merge never overwrites its own input, and a killed merge leaves nothing that a reader would trust
wrongly.

``test_every_interruption_point_leaves_consistent_sets`` snapshots the output directory before every
rename and unlink a merge makes, which is exactly what a SIGKILL at that instant would leave (the data
files are complete and fsynced before the first rename); ``test_sigkill_during_merge`` (slow) kills a real
``tests/merge_kill.py`` process at one of those points.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lightning_cfgrl.callbacks.merge import ModelMergeCallback
from lightning_cfgrl.cli.merge import merge_checkpoints, merge_main
from lightning_cfgrl.io.checkpoints import CheckpointError, file_sha256
from lightning_cfgrl.io.file_sets import verify_manifest
from lightning_cfgrl.merging.merged_sets import MergeError, complete_merged_sets

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (0.25, 0.5, 0.75)


def _checkpoint(path: Path, seed: int, width: int = 6) -> Path:
    g = torch.Generator().manual_seed(seed)
    state = {
        "generator.w": torch.randn(width, 5, generator=g),
        "generator.b": torch.randn(5, generator=g),
        "generator.steps": torch.tensor(seed),
    }
    torch.save({"state_dict": state, "hyper_parameters": {}, "global_step": seed}, path)
    return path


def _sources(tmp: Path) -> dict[str, Path]:
    return {
        "q_old": _checkpoint(tmp / "q_old.ckpt", 1),
        "d_old": _checkpoint(tmp / "d_old.ckpt", 2),
        "q": _checkpoint(tmp / "q.ckpt", 3),
        "d": _checkpoint(tmp / "d.ckpt", 4),
    }


def _method_of_files(sidecar: Path) -> set[str]:
    """The merge method recorded in each of a set's three files (one value if they are one write)."""
    info = json.loads(sidecar.read_text())
    ckpt = torch.load(sidecar.with_suffix(".ckpt"), weights_only=True)
    with safe_open(sidecar.with_suffix(".safetensors"), framework="pt") as f:
        tensors_method = f.metadata()["cfgrl_method"]
    return {info["method"], ckpt["cfgrl_merge"]["method"], tensors_method}


def assert_consistent(out: Path) -> int:
    """Every set a reader trusts is one write's files; returns how many there are."""
    sets = complete_merged_sets(out)  # raises if a sidecar's hashes do not describe its files
    for _, files in sets:
        assert len(_method_of_files(files.sidecar)) == 1, files.sidecar
    return len(sets)


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------- output is not input


def test_an_output_that_would_overwrite_an_input_is_refused(tmp_path: Path, capsys) -> None:
    src = _sources(tmp_path)
    out = tmp_path / "out"
    merge_checkpoints(str(src["q"]), str(src["d"]), [0.5], str(out))
    quality = out / "merged_lambda=0.50.ckpt"  # a merged model used as the next merge's quality input
    before = quality.read_bytes()
    argv = [
        "--quality",
        str(quality),
        "--diversity",
        str(src["d"]),
        "--lambdas",
        "0.5,0.75",
        "--out",
        str(out),
    ]
    assert merge_main(argv) == 1
    err = capsys.readouterr().err
    assert f"the --quality input {quality} is the output for lambda=0.5" in err and "overwrite" in err
    assert quality.read_bytes() == before and not (out / "merged_lambda=0.75.ckpt").exists()

    link = tmp_path / "link.ckpt"  # the same file under another name
    link.symlink_to(quality)
    with pytest.raises(MergeError, match="is the output for lambda=0.5"):
        merge_checkpoints(str(src["q"]), str(link), [0.5], str(out))
    assert quality.read_bytes() == before


def test_callback_refuses_an_anchor_inside_its_output(tmp_path: Path) -> None:
    src = _sources(tmp_path)
    out = tmp_path / "merged"
    merge_checkpoints(str(src["q"]), str(src["d"]), [0.5], str(out))
    anchor = out / "merged_lambda=0.50.ckpt"
    callback = ModelMergeCallback(str(anchor), lambdas=(0.5,), dirpath=str(out))
    checkpoint = torch.load(src["d"], weights_only=True)
    with pytest.raises(MergeError, match="the anchor_checkpoint input .* is the output for lambda=0.5"):
        callback._write_all(_FakeTrainer(), checkpoint, out)  # type: ignore[arg-type]


class _FakeTrainer:
    global_step = 4
    lightning_module = None


# ------------------------------------------------------------------------------------- the sidecar


def test_sidecar_records_the_hashes_of_its_files_and_readers_check_them(tmp_path: Path) -> None:
    src = _sources(tmp_path)
    out = tmp_path / "out"
    written = merge_checkpoints(str(src["q"]), str(src["d"]), LAMBDAS, str(out))
    for files in written:
        info = verify_manifest(files.sidecar)
        assert info["sha256"] == {
            "safetensors": file_sha256(files.safetensors),
            "checkpoint": file_sha256(files.checkpoint),
        }
    assert [lam for lam, _ in complete_merged_sets(out)] == list(LAMBDAS)

    # a set whose sidecar was not written (an interrupted merge) is skipped, with a warning
    (out / "merged_lambda=0.75.json").unlink()
    with pytest.warns(UserWarning, match=r"merged_lambda=0.75.ckpt.*have no sidecar"):
        assert [lam for lam, _ in complete_merged_sets(out)] == [0.25, 0.5]
    # a file that does not match its sidecar is an error, not a silent mix
    shutil.copy(out / "merged_lambda=0.25.ckpt", out / "merged_lambda=0.50.ckpt")
    with pytest.raises(CheckpointError, match=r"merged_lambda=0.50.ckpt does not match the recorded sha256"):
        complete_merged_sets(out)


def test_a_second_merge_into_a_locked_directory_is_refused(tmp_path: Path) -> None:
    import fcntl

    src = _sources(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(CheckpointError, match="another process is writing into"):
            merge_checkpoints(str(src["q"]), str(src["d"]), [0.5], str(out))
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------ interruptions


@pytest.mark.filterwarnings("ignore:.*have no sidecar")
def test_every_interruption_point_leaves_consistent_sets(tmp_path: Path, monkeypatch) -> None:
    src = _sources(tmp_path)
    out = tmp_path / "out"
    merge_checkpoints(str(src["q_old"]), str(src["d_old"]), LAMBDAS, str(out), method="slerp")  # an old merge
    snapshots: list[Path] = []
    real_replace, real_unlink = os.replace, os.unlink

    def snapshot() -> None:
        shot = tmp_path / f"shot{len(snapshots):02d}"
        shutil.copytree(out, shot)
        snapshots.append(shot)

    def replace(a, b, **kwargs):  # noqa: ANN001, ANN202
        if Path(b).parent == out:
            snapshot()
        return real_replace(a, b, **kwargs)

    def unlink(path, **kwargs):  # noqa: ANN001, ANN202
        if Path(path).parent == out and not str(path).endswith(".tmp"):
            snapshot()
        return real_unlink(path, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    merge_checkpoints(str(src["q"]), str(src["d"]), LAMBDAS, str(out))  # the new merge, interrupted anywhere
    monkeypatch.undo()
    # per lambda: unlink the old sidecar, rename 2 model files, rename the new sidecar
    assert len(snapshots) == 4 * len(LAMBDAS)
    trusted = []
    for shot in snapshots:
        trusted.append(assert_consistent(shot))
        assert _temps(shot)  # what a SIGKILL at this point leaves behind
        merge_checkpoints(str(src["q"]), str(src["d"]), LAMBDAS, str(shot))  # the next run
        assert _temps(shot) == [] and assert_consistent(shot) == len(LAMBDAS)
        assert all(_method_of_files(f.sidecar) == {"lerp"} for _, f in complete_merged_sets(shot))
    # while lambda i is committed, the others stay trusted (old or new)
    assert min(trusted) == len(LAMBDAS) - 1 and max(trusted) == len(LAMBDAS)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*have no sidecar")
def test_sigkill_during_merge(tmp_path: Path) -> None:
    """A real SIGKILL (``tests/merge_kill.py``) in the middle of the second lambda's commit."""
    src = _sources(tmp_path)
    kills = 0
    # events 4k .. 4k + 3 of lambda k: old sidecar removed, 2 model files renamed, new sidecar renamed.
    # 6: the first lambda committed, the second mid-commit (sidecar gone, one file renamed), the third old
    for kill_at in (6,):
        out = tmp_path / f"out{kill_at}"
        merge_checkpoints(str(src["q_old"]), str(src["d_old"]), LAMBDAS, str(out), method="slerp")
        cmd = [sys.executable, "-m", "tests.merge_kill", str(src["q"]), str(src["d"]), str(out), str(kill_at)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        kills += 1
        assert assert_consistent(out) == len(LAMBDAS) - 1  # the set being committed is not trusted
        assert [_method_of_files(f.sidecar) for _, f in complete_merged_sets(out)] == [{"lerp"}, {"slerp"}]
        merge_checkpoints(str(src["q"]), str(src["d"]), LAMBDAS, str(out))
        assert _temps(out) == [] and assert_consistent(out) == len(LAMBDAS)
    assert kills == 1
