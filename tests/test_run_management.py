"""Run management of the shipped configs: checkpoints named after the run (a rerun replaces last.ckpt,
a renamed run gets its own folder), versioned TensorBoard runs, the learning rate, the objectives'
settings as hyperparameters, and audio with the prompt's text in the tag."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lightning_cfgrl.cli.main import run_cli
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
SHORT = [
    "--trainer.val_check_interval=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]


def _fit(config: str, *args: str) -> None:
    run_cli(["fit", "--config", str(CONFIGS / config), *SHORT, *args])


def _events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"audio": 0, "scalars": 0})
    events.Reload()
    return events


def _session_hparams(events: EventAccumulator) -> dict:
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    return {
        key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for key, value in hparams.items()
    }


@pytest.mark.slow  # trains a model
@pytest.mark.usefixtures("one_thread")
def test_reruns_and_renamed_runs_never_leave_a_stale_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cfgrl"])
    data = ["--data.init_args.num_train=128", "--data.init_args.num_val=8"]
    _fit("pretrain.yaml", "--trainer.max_steps=2", *data)
    _fit("pretrain.yaml", "--trainer.max_steps=4", *data)  # a rerun of the same stage
    checkpoints = tmp_path / "runs/base/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]  # no last-v1.ckpt beside it
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4, "last.ckpt is the newest run's"
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("RunCheckpoint")]
    assert state["log_dir"] == "runs/base/version_1"
    assert sorted(p.name for p in (tmp_path / "runs/base").iterdir()) == [
        "checkpoints",
        "version_0",
        "version_1",
    ]

    before = (checkpoints / "last.ckpt").read_bytes()
    _fit("pretrain.yaml", "--trainer.max_steps=2", "--trainer.logger.init_args.name=other", *data)
    assert (tmp_path / "runs/other/checkpoints/last.ckpt").exists()
    assert (checkpoints / "last.ckpt").read_bytes() == before, "a renamed run leaves the other run alone"

    events = _events(tmp_path / "runs/base/version_1")
    assert [e.step for e in events.Scalars("lr-AdamW")] == [0, 1, 2, 3]
    assert events.Scalars("lr-AdamW")[0].value == pytest.approx(0.003)
    audio = events.Tags()["audio"]
    assert len(audio) == 6 and all(t.startswith("audio/prompt") and t.count("_") >= 3 for t in audio), audio

    # the distillation stage reads the base by its run-named path; its objectives' settings are hparams
    embedder = ContrastiveTokenEmbedder(num_codebooks=2, vocab_size=32, dim=96, embed_dim=64, kernel_size=5)
    (tmp_path / "runs/embedder/checkpoints").mkdir(parents=True)
    torch.save(
        {
            "state_dict": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
            "hyper_parameters": {"embedder": embedder.spec()},
        },
        tmp_path / "runs/embedder/checkpoints/last.ckpt",
    )
    # the diversity stage starts from the quality model; here the base stands in for it
    _fit(
        "distill_beta15.yaml",
        "--trainer.max_steps=2",
        "--model.init_args.init_checkpoint=runs/base/checkpoints/last.ckpt",
    )
    log_dir = tmp_path / "runs/distill_beta15/version_0"
    hparams = _session_hparams(_events(log_dir))
    expected = {
        "distill/guidance_scale": 3.0,
        "distill/divergence": "reverse_kl",
        "diversity/beta": 1.0,
        "diversity/quality_budget": "0.25 (of_gain)",
        "diversity/baseline": "other_pairs",
        "diversity/shuffle_rewards": False,
        "diversity/embedder": "lightning_cfgrl.embedders.contrastive.ContrastiveTokenEmbedder",
        "rollout/num_samples_per_prompt": 4.0,
    }
    assert {k: hparams.get(k) for k in expected} == expected
    saved = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert saved["diversity/beta"] == 1.0 and saved["optimization"]["learning_rate"] == 0.0003
