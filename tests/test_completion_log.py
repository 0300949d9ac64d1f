"""CompletionLogCallback: the per-sample table (CSV, TensorBoard text and audio, WAV files) with the values
the objectives publish, and the share of groups with zero reward spread."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_cfgrl import CFGDistillCallback, CFGRLModule
from lightning_cfgrl.audio.synth import SyntheticSynth
from lightning_cfgrl.callbacks.completion_log import CompletionLogCallback
from lightning_cfgrl.embedders import TokenHistogramEmbedder
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.reward import RewardCallback
from tests.helpers.models import BASE_ARGS, quiet_trainer


class Capture(pl.Callback):
    """Keeps the records of every step (read before CompletionLogCallback drops its reference)."""

    def __init__(self, log: CompletionLogCallback) -> None:
        self.completions, self.records = log, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.records.append({k: v.clone() for k, v in self.completions._batch.records.items()})


def constant(inputs) -> torch.Tensor:
    return torch.ones(inputs.tokens.shape[0], dtype=torch.float64)


def fit(tmp_path, callbacks, logger, steps: int = 4) -> tuple[CFGRLModule, pl.Trainer]:
    pl.seed_everything(0)
    module = CFGRLModule(
        AudioTokenTransformer(**BASE_ARGS), rollout={"num_frames": 8, "num_samples_per_prompt": 3}
    )
    trainer = quiet_trainer(
        max_steps=steps, limit_val_batches=0, callbacks=callbacks, logger=logger, log_every_n_steps=1
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=2))
    return module, trainer


def test_table_csv_audio_and_tensorboard_hold_the_objectives_values(tmp_path) -> None:
    log = CompletionLogCallback(every_n_steps=2, max_rows=4, decoder=SyntheticSynth(vocab_size=32))
    capture = Capture(log)  # before the log in the list: it reads the step before the log drops it
    callbacks = [
        CFGDistillCallback(),
        DiversityRewardCallback(TokenHistogramEmbedder(32), beta=1.0),
        capture,
        log,
    ]
    logger = TensorBoardLogger(tmp_path, name="run")
    _, trainer = fit(tmp_path, callbacks, logger)
    path = tmp_path / "run" / "version_0" / "completions.csv"
    assert log.path == str(path)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["step"]) for r in rows] == [0] * 4 + [2] * 4  # steps 0 and 2, 4 samples each
    assert [int(r["sample"]) for r in rows[:4]] == [0, 1, 2, 0] and rows[3]["prompt_group"] == "1"
    assert rows[0]["prompt"] and not rows[0]["prompt"].startswith("[")  # the datamodule's description
    for step, first in ((0, 0), (2, 4)):
        records = capture.records[step]
        for name in ("diversity/reward", "diversity/advantage", "distill/divergence_per_token"):
            logged = [float(r[name]) for r in rows[first : first + 4]]
            assert logged == pytest.approx(records[name][:4].tolist(), rel=1e-12), name
    assert all(float(r["distill/divergence_per_token"]) >= 0 for r in rows)
    for row in rows:
        wav = tmp_path / "run" / "version_0" / row["audio"]
        assert wav.is_file() and wav.stat().st_size > 44
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"tensors": 0, "audio": 0})
    events.Reload()
    assert "completions/table/text_summary" in events.Tags()["tensors"]
    table = events.Tensors("completions/table/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "diversity/advantage" in table and rows[0]["prompt"] in table
    assert {f"completions/sample{i}" for i in range(4)} <= set(events.Tags()["audio"])
    # bigram histograms of 8 frames saturate: some groups' three rewards are all 1 (no signal)
    last = capture.records[-1]["diversity/reward"].reshape(-1, 3)
    flat = [float(g.max() - g.min()) == 0.0 for g in last]
    assert float(trainer.callback_metrics["train/diversity_zero_spread_groups"]) == sum(flat) / len(flat)
    assert float(trainer.callback_metrics["train/distill"]) > 0


def test_a_dead_reward_reads_all_groups_without_spread_and_other_loggers_get_the_csv(tmp_path) -> None:
    log = CompletionLogCallback(every_n_steps=1, max_rows=2)
    callbacks = [CFGDistillCallback(), RewardCallback([constant]), log]
    _, trainer = fit(tmp_path, callbacks, CSVLogger(tmp_path, name="csv"), steps=2)
    assert float(trainer.callback_metrics["train/reward_zero_spread_groups"]) == 1.0
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "completions.csv").open()))
    assert len(rows) == 4 and {r["reward/reward"] for r in rows} == {"1.0"}
    assert {r["reward/advantage"] for r in rows} == {"0.0"} and "audio" not in rows[0]  # no decoder


def test_needs_an_objective_and_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 1"):
        CompletionLogCallback(every_n_steps=0)
    with pytest.raises(TypeError, match="decoder must have .decode"):
        CompletionLogCallback(decoder=object())
    with pytest.raises(ValueError, match="adds no loss term; add CFGDistillCallback"):
        fit(None, [CompletionLogCallback()], False, steps=1)
