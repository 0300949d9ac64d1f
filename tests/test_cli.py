"""The cfgrl console script: YAML configs resolve, print, and run end to end."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


def test_print_config_shows_the_embedder_sizes_its_checkpoint_gives(tmp_path, monkeypatch, capsys):
    """An embedder given only its checkpoint is built with the checkpoint's sizes: --print_config shows
    those (and says where they came from), not the parsed defaults; a checkpoint not written yet is named."""
    import yaml

    from lightning_cfgrl.cli.main import main
    from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
    from lightning_cfgrl.io.checkpoint_io import atomic_save

    monkeypatch.chdir(tmp_path)

    def printed(config: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:  # jsonargparse prints, then exits 0
            main(["fit", "--config", config, "--print_config"])
        assert done.value.code == 0
        return capsys.readouterr().out

    shipped = str(CONFIGS / "distill_beta15.yaml")
    out = printed(shipped)
    assert (
        "runs/embedder/checkpoints/last.ckpt does not exist yet; the run takes ContrastiveTokenEmbedder's "
        "sizes from it, not the values shown"
    ) in out

    embedder = ContrastiveTokenEmbedder(dim=48, embed_dim=16, num_layers=1)
    state = {f"embedder.{k}": v for k, v in embedder.state_dict().items()}
    (tmp_path / "runs/embedder/checkpoints").mkdir(parents=True)
    atomic_save(
        {"state_dict": state, "hyper_parameters": {"embedder": embedder.spec()}},
        tmp_path / "runs/embedder/checkpoints/last.ckpt",
    )
    out = printed(shipped)
    assert (
        "ContrastiveTokenEmbedder sizes from runs/embedder/checkpoints/last.ckpt (dim 96 -> 48, embed_dim "
        "64 -> 16, num_layers 2 -> 1)"
    ) in out
    callbacks = yaml.safe_load(out)["trainer"]["callbacks"]
    reward = next(c for c in callbacks if c["class_path"].endswith("DiversityRewardCallback"))
    sizes = reward["init_args"]["embedder"]["init_args"]
    assert (sizes["dim"], sizes["embed_dim"], sizes["num_layers"]) == (48, 16, 1)
    # the printed config is a config: fed back, it parses to the same sizes
    (tmp_path / "printed.yaml").write_text(out)
    again = printed("printed.yaml")
    assert "dim 96 -> 48" not in again and "(as given)" in again


@pytest.mark.slow  # trains a model
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
        "--model.init_args.rollout.num_frames=0",
        "--trainer.max_steps=1",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "num_frames must be >= 1, got 0" in result.stderr


def test_every_shipped_config_checkpoints_periodically():
    # save_top_k: 0 with save_last alone writes last.ckpt only when fit ends: a killed run has nothing
    import yaml

    checked = 0
    for path in sorted(CONFIGS.glob("*.yaml")):
        callbacks = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("callbacks") or []
        for cb in callbacks:
            if cb["class_path"].endswith(("ModelCheckpoint", "RunCheckpoint")):
                args = cb["init_args"]
                assert args.get("save_last") is True and args.get("every_n_train_steps", 0) >= 1, path.name
                checked += 1
    assert checked >= 8


@pytest.mark.slow
def test_killed_cli_fit_resumes_from_last(tmp_path):
    """SIGKILL a `cfgrl fit` of the shipped distill config once its periodic last.ckpt exists, then
    `--ckpt_path last` continues from that step (AdamW's step count proves it did not restart)."""
    from lightning_cfgrl.models import AudioTokenTransformer

    torch.manual_seed(0)
    base = AudioTokenTransformer(
        num_codebooks=2,
        vocab_size=32,
        condition_sizes=[4, 4, 3],
        dim=64,
        num_layers=2,
        num_heads=4,
        max_frames=32,
    )
    init = tmp_path / "runs/base/checkpoints/last.ckpt"
    init.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"generator.{k}": v for k, v in base.state_dict().items()}}, init)
    common = ["--config", str(CONFIGS / "distill.yaml"), "--trainer.limit_val_batches=1"]
    # smaller steps, same checkpointing
    common += ["--trainer.enable_progress_bar=false"]
    common += ["--data.init_args.batch_size=4", "--model.init_args.validation.samples_per_prompt=2"]
    cmd = [sys.executable, "-m", "lightning_cfgrl.cli.main", "fit", *common, "--trainer.max_steps=100000"]
    last = tmp_path / "runs/distill/checkpoints/last.ckpt"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):  # until the first periodic checkpoint appears (renamed in complete)
            if last.exists() or proc.poll() is not None:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    saved = torch.load(last, weights_only=True)["global_step"]
    assert saved >= 25 and saved % 25 == 0, saved

    result = cfgrl("fit", *common, "--ckpt_path", "last", f"--trainer.max_steps={saved + 3}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in result.stderr + result.stdout
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == saved + 3
    adam_steps = {float(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {float(saved + 3)}


def test_a_constructor_error_is_the_last_line_the_cli_prints(tmp_path, capsys, monkeypatch):
    from lightning_cfgrl.cli.main import main

    monkeypatch.chdir(tmp_path)
    bad = "[{class_path: lightning_cfgrl.CFGDistillCallback, init_args: {guidance_scale: -1.0}}]"
    code = main(["fit", "--config", str(CONFIGS / "distill.yaml"), f"--trainer.callbacks={bad}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[-1] == "cfgrl fit: error: guidance_scale must be a finite number >= 0, got -1.0"
