"""Slow tier of the reliability rules: a SIGKILLed run resumed with a changed configuration (refused by
name, then resumed with its own), and a full disk during a merge, a checkpoint save and generate (a
small tmpfs where this machine lets us mount one; skipped with the reason otherwise)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lightning_cfgrl import CFGRLModule
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import atomic_save, load_checkpoint
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import objective_callbacks, tiny_embedder, tiny_generator

pytestmark = pytest.mark.slow


def _launch(*args: str) -> subprocess.CompletedProcess:
    import os
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=env["PYTHONPATH"],
    )


def _resumed(lr: float, beta: float) -> tuple[CFGRLModule, list]:
    """What tests.helpers.resume_fit builds, with a learning rate and beta of choice."""
    module = CFGRLModule(
        tiny_generator(123, options={"dropout": 0.1}),
        rollout={"num_frames": 8, "num_samples_per_prompt": 2},
        optimization={"learning_rate": lr},
    )
    return module, objective_callbacks(tiny_embedder(124), beta=beta)


def test_a_killed_run_resumed_with_a_changed_config_is_refused_then_resumes(tmp_path: Path) -> None:
    killed = _launch("tests.helpers.resume_fit", "--out", str(tmp_path), "--steps", "6", "--kill-at", "3")
    assert killed.returncode == -9, killed.stderr[-3000:]  # died by SIGKILL after step 3's checkpoint
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 3
    data = SyntheticPromptDataModule(batch_size=8, split=PromptSplit(repeats=1))
    for lr, beta, named in [
        (5e-2, 1.0, "learning_rate: 0.01 (checkpoint) vs 0.05 (now)"),
        (1e-2, 2.0, "diversity/beta: 1.0 (checkpoint) vs 2.0 (now)"),
    ]:
        module, callbacks = _resumed(lr, beta)
        trainer = quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=callbacks)
        with pytest.raises(ValueError, match="resume refused") as err:
            trainer.fit(module, data, ckpt_path=str(last))
        assert named in str(err.value), str(err.value)
        assert trainer.global_step == 0  # refused before anything was restored or trained
    module, callbacks = _resumed(1e-2, 1.0)  # the checkpoint's own settings: it continues
    trainer = quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=callbacks)
    trainer.fit(module, data, ckpt_path=str(last))
    assert trainer.global_step == 6
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == 1e-2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root and a kernel that allows it), else skip saying why."""
    folder = tmp_path / f"tmpfs_{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _ckpt(path: Path, seed: int) -> Path:
    generator = tiny_generator(seed, dim=128)  # ~1 MB of weights: more than the disk holds
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    torch.save(
        {"state_dict": state, "hyper_parameters": {"generator": generator.spec(), "num_frames": 8}}, path
    )
    return path


def test_a_full_disk_is_one_error_naming_the_path_and_leaves_old_files(
    small_disk: Path, tmp_path: Path
) -> None:
    from lightning_cfgrl.cli.main import main

    q, d = _ckpt(tmp_path / "q.ckpt", 0), _ckpt(tmp_path / "d.ckpt", 1)
    # a checkpoint save (what AtomicCheckpointIO does): the old last.ckpt stays, no temp file is left
    (small_disk / "last.ckpt").write_bytes(b"old")
    with pytest.raises(
        OSError, match=f"cannot write {small_disk / 'last.ckpt'}: .*(No space left|disk full)"
    ):
        atomic_save(torch.load(q), small_disk / "last.ckpt")
    assert (small_disk / "last.ckpt").read_bytes() == b"old"
    assert [p.name for p in small_disk.iterdir()] == ["last.ckpt"]
    # cfgrl merge: exit 1, the last line names the folder and the cause
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            [
                "merge",
                "--quality",
                str(q),
                "--diversity",
                str(d),
                "--lambdas",
                "0.5",
                "--out",
                str(small_disk),
            ]
        )
    last = err.getvalue().strip().splitlines()[-1]
    assert code == 1 and f"cannot write {small_disk}" in last and "No space left on device" in last, last
    assert sorted(p.name for p in small_disk.iterdir()) == ["last.ckpt"]  # no partial set, no temp files
