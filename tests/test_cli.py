"""The cfgrl console script: YAML configs resolve, print, and run end to end."""

import subprocess
import sys
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def cfgrl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lightning_cfgrl.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_print_config_resolves_class_paths(tmp_path):
    result = cfgrl("fit", "--config", str(CONFIGS / "distill.yaml"), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for expected in (
        "class_path: lightning_cfgrl.CFGRLModule",
        "class_path: lightning_cfgrl.CFGDistillCallback",
        "guidance_scale: 3.0",
        "class_path: lightning_cfgrl.models.AudioTokenTransformer",
    ):
        assert expected in out


def test_pretrain_then_distill_from_yaml(tmp_path):
    short = [
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
    ]
    result = cfgrl(
        "fit",
        "--config",
        str(CONFIGS / "pretrain.yaml"),
        *short,
        "--data.init_args.num_train=256",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = tmp_path / "runs/base/checkpoints/last.ckpt"
    assert base.exists()
    result = cfgrl("fit", "--config", str(CONFIGS / "distill.yaml"), *short, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    student = torch.load(tmp_path / "runs/distill/checkpoints/last.ckpt", weights_only=True)
    assert student["global_step"] == 4
    assert "CFGDistillCallback" in "".join(student["callbacks"])
    events = list((tmp_path / "runs/distill/version_0").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard log written"


def test_bad_config_value_is_reported(tmp_path):
    result = cfgrl(
        "fit",
        "--config",
        str(CONFIGS / "distill.yaml"),
        "--model.init_args.num_frames=0",
        "--trainer.max_steps=1",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "num_frames must be >= 1, got 0" in result.stderr
