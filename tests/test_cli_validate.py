"""``cfgrl validate --config <yaml> --ckpt_path <that run's last.ckpt>`` for every run kind, through the CLI,
and ``cfgrl generate`` of a steerable student (controls required unless switched off on purpose)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from lightning_cfgrl.cli.main import main
from lightning_cfgrl.io.checkpoints import file_sha256
from tests.helpers.configs import allow_weak_embedder

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
SHORT = [
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
# config -> (its run folder, extra arguments); in the order the stages depend on each other
RUNS = {
    "pretrain.yaml": ("base", ["--data.init_args.num_train=256"]),
    # not the YAML's default size: the runs that load it must state the size it has
    "embedder.yaml": (
        "embedder",
        [
            "--data.init_args.num_train=256",
            "--data.init_args.num_val=64",
            "--model.init_args.embedder.init_args.dim=48",
        ],
    ),
    "distill.yaml": ("distill", []),
    # the diversity stage starts from the quality (beta = 0) model; the base stands in for it here
    "distill_beta15.yaml": (
        "distill_beta15",
        ["--model.init_args.init_checkpoint=runs/base/checkpoints/last.ckpt"],
    ),
    "steerable.yaml": ("steerable", []),
}


def _config(workdir: Path, config: str) -> Path:
    return allow_weak_embedder(CONFIGS / config, workdir / "configs")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every synthetic-domain run kind trained 2 steps through ``cfgrl fit`` in one folder."""
    workdir = tmp_path_factory.mktemp("validate")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for config, (_, extra) in RUNS.items():
            assert main(["fit", "--config", str(_config(workdir, config)), *SHORT, *extra]) == 0, config
    finally:
        os.chdir(cwd)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("config", list(RUNS))
def test_validate_runs_on_each_kinds_checkpoint(runs, config, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    ckpt = runs / "runs" / RUNS[config][0] / "checkpoints" / "last.ckpt"
    before = file_sha256(ckpt)
    capsys.readouterr()
    args = ["validate", "--config", str(runs / "configs" / config), "--ckpt_path", str(ckpt)]
    assert main([*args, "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]) == 0
    out = capsys.readouterr().out
    assert "Validate metric" in out and "val/" in out, out[-2000:]
    assert file_sha256(ckpt) == before  # validation reads the checkpoint, never rewrites it


@pytest.mark.slow
def test_generate_refuses_a_steerable_student_without_controls(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    ckpt = str(runs / "runs" / "steerable" / "checkpoints" / "last.ckpt")
    base = ["generate", "--checkpoint", ckpt, "--prompts", "[[1, 1, 1], [4, 3, 2]]", "--progress", "false"]
    assert main([*base, "--out", "none"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "steerable student" in last and "--controls" in last and "--controls off" in last
    assert not (runs / "none").exists()
    assert main([*base, "--out", "partial", "--controls", "{guidance_scale: 3.0}"]) == 2
    assert "without ['diversity_weight']" in capsys.readouterr().err
    assert main([*base, "--out", "bad", "--controls", "{guidance_scale: 3.0, temperature: 1.0}"]) == 2
    assert "temperature" in capsys.readouterr().err.strip().splitlines()[-1]
    steered = ["--controls", "{guidance_scale: 3.0, diversity_weight: 0.0}", "--num_samples", "2"]
    assert main([*base, "--out", "steered", *steered]) == 0
    assert main([*base, "--out", "off", "--controls", "off", "--num_samples", "2"]) == 0
    on, off = (load_file(runs / d / "tokens.safetensors")["frames"] for d in ("steered", "off"))
    assert on.shape == off.shape == (4, 2, 32)
    import json

    assert json.loads((runs / "steered" / "generation.json").read_text())["controls"] == {
        "guidance_scale": 3.0,
        "diversity_weight": 0.0,
    }


@pytest.mark.slow
def test_saved_config_states_the_embedder_architecture_loaded_from_its_checkpoint(runs):

    config = yaml.safe_load(
        next((runs / "runs" / "distill_beta15").glob("version_*/config.yaml")).read_text()
    )
    reward = next(
        c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("DiversityRewardCallback")
    )
    embedder = reward["init_args"]["embedder"]["init_args"]
    assert embedder["dim"] == 48  # the checkpoint's, not the default 96 the parsed config held
    assert embedder["checkpoint"] == "runs/embedder/checkpoints/last.ckpt"


def _hparams_metrics(run: Path) -> tuple[set[str], set[str]]:
    """(metric tags of the HParams record, scalar tags) of a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(next(run.glob("version_*"))))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    data = HParamsPluginData.FromString(content)
    return {m.name.tag for m in data.experiment.metric_infos}, set(events.Tags()["scalars"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("base", {"val/nll"}),
        ("embedder", {"val/info_nce", "val/triplet_accuracy"}),
        (
            "distill_beta15",
            {"val/token_entropy", "val/histogram_diversity", "val/adherence", "val/log_likelihood"},
        ),
    ],
)
def test_hparams_view_registers_the_validation_metrics(runs, run, expected):
    metrics, scalars = _hparams_metrics(runs / "runs" / run)
    assert expected <= metrics and "hp_metric" not in metrics
    assert "hp_metric" not in scalars and expected <= scalars  # the metrics themselves were logged
