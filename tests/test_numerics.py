"""Numerics: a non-finite logit, loss or reward stops the run naming the step and the term, with the last
good checkpoint intact; bf16 runs on CPU with divergences in float32; checkpoints are written atomically."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DiversityGradientConfig
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoint_io import AtomicCheckpointIO
from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import TINY_ARGS, tiny_embedder

RUNNING_MEAN = DiversityGradientConfig(baseline="running_mean")

POISON_STEP = 2


class PoisonableGenerator(AudioTokenTransformer):
    """The reference model, whose logits turn NaN while ``poisoned`` is set: everywhere, or with
    ``only_padding`` only at the delay pattern's padding positions (which every loss masks out)."""

    poisoned = False
    only_padding = False

    def forward(self, steps: Tensor, condition: Tensor, cache: Any = None) -> Tensor:
        logits = super().forward(steps, condition, cache)
        if not self.poisoned:
            return logits
        if not self.only_padding:
            return torch.full_like(logits, float("nan"))
        if cache is not None:  # a decoding prefix: its length is not the sequence's, nor its padding
            return logits
        valid = self.pattern.valid_mask(steps.shape[2], steps.device)  # [K, S]
        return logits.masked_fill(~valid[None, :, :, None], float("nan"))


class PoisonableEmbedder(ContrastiveTokenEmbedder):
    poisoned = False

    def forward(self, tokens: Tensor) -> Tensor:
        out = super().forward(tokens)
        return torch.full_like(out, float("nan")) if self.poisoned else out


class PoisonAt(Callback):
    """Sets ``poisoned`` on ``target(trainer, module)`` from global step ``POISON_STEP`` on."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.target(trainer, pl_module).poisoned = trainer.global_step >= POISON_STEP


PROMPTS_PER_BATCH = 4


def _fit_until_poisoned(
    tmp_path: Path,
    target: Any,
    with_diversity: bool = True,
    only_padding: bool = False,
    **trainer_kwargs: Any,
) -> tuple[CFGRLModule, list[Callback], pytest.ExceptionInfo]:
    torch.manual_seed(0)
    module = CFGRLModule(
        PoisonableGenerator(**TINY_ARGS), rollout={"num_frames": 8}, optimization={"learning_rate": 1e-3}
    )
    module.generator.only_padding = only_padding
    torch.manual_seed(1)
    embedder = PoisonableEmbedder(num_codebooks=2, vocab_size=32, dim=16, embed_dim=16, num_layers=1)
    objectives: list[Callback] = [CFGDistillCallback()]
    if with_diversity:
        # the running-mean baseline is the state a NaN reward could corrupt
        objectives.append(DiversityRewardCallback(embedder, beta=1.0, gradient=RUNNING_MEAN))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True)
    trainer = quiet_trainer(
        max_steps=5,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[*objectives, PoisonAt(target), checkpoint],
        **trainer_kwargs,
    )
    with pytest.raises(FloatingPointError) as error:
        trainer.fit(module, SyntheticPromptDataModule(batch_size=PROMPTS_PER_BATCH))
    return module, objectives, error


def _assert_last_checkpoint_is_the_last_good_step(tmp_path: Path, module: CFGRLModule) -> None:
    last = load_checkpoint(tmp_path / "last.ckpt")  # complete and weights_only-loadable
    assert last["global_step"] == POISON_STEP
    weights = {k.removeprefix("generator."): v for k, v in last["state_dict"].items()}
    # the failing step never reached the optimizer: memory and checkpoint hold the same good weights
    for name, value in module.generator.state_dict().items():
        assert torch.equal(weights[name], value), name
        assert torch.isfinite(value).all(), name


@pytest.mark.slow  # trains a model
def test_nan_student_logits_stop_the_run_naming_step_terms_and_logits(tmp_path: Path) -> None:
    module, _, error = _fit_until_poisoned(
        tmp_path, lambda trainer, m: m.generator, plugins=[AtomicCheckpointIO()]
    )
    message = str(error.value)
    # NaN logits everywhere: the rollout's sampler refuses the first decoding step, before any loss
    assert f"rollout at global step {POISON_STEP}: sampling refused: at decoding step 0" in message
    assert "the weights are finite (checked now)" in message
    module.generator.poisoned = False
    _assert_last_checkpoint_is_the_last_good_step(tmp_path, module)


@pytest.mark.slow  # trains a model
def test_nan_student_logits_behind_a_finite_distillation_loss_still_stop_the_run(tmp_path: Path) -> None:
    # NaN logits only where the delay pattern has no token: every loss masks those positions, so the
    # loss is finite, but their gradients would not be; the logits check catches it
    module, _, error = _fit_until_poisoned(
        tmp_path, lambda trainer, m: m.generator, with_diversity=False, only_padding=True
    )
    message = str(error.value)
    rows = PROMPTS_PER_BATCH * module.group_size
    padding = int((~module.generator.pattern.valid_mask(9)).sum()) * rows * 32  # per sequence x N x V
    assert re.search(
        rf"non-finite student logits at global step {POISON_STEP}: {padding} NaN and 0 \+inf of \d+, "
        r"although the loss term\(s\) distill=[0-9.e+-]+ are finite",
        message,
    ), message
    module.generator.poisoned = False
    _assert_last_checkpoint_is_the_last_good_step(tmp_path, module)


@pytest.mark.slow  # trains a model
def test_nan_teacher_makes_a_nan_loss_term_named_with_finite_student_logits(tmp_path: Path) -> None:
    def teacher(trainer: pl.Trainer, m: CFGRLModule) -> torch.nn.Module:
        return next(cb for cb in trainer.callbacks if isinstance(cb, CFGDistillCallback)).teacher

    module, _, error = _fit_until_poisoned(tmp_path, teacher)
    message = str(error.value)
    assert f"non-finite loss at global step {POISON_STEP}: term(s) distill=nan;" in message
    assert "diversity=" not in message  # the diversity term stayed finite
    assert "student logits with NaN: 0 of" in message
    _assert_last_checkpoint_is_the_last_good_step(tmp_path, module)


@pytest.mark.slow  # trains a model
def test_nan_reward_stops_before_the_baseline_sees_it(tmp_path: Path) -> None:
    def embedder(trainer: pl.Trainer, m: CFGRLModule) -> torch.nn.Module:
        return next(cb for cb in trainer.callbacks if isinstance(cb, DiversityRewardCallback)).embedder

    module, objectives, error = _fit_until_poisoned(tmp_path, embedder)
    message = str(error.value)
    rows = PROMPTS_PER_BATCH * module.group_size  # every reward of the batch is poisoned
    assert (
        f"non-finite diversity reward at global step {POISON_STEP}: term 'diversity', {rows} of {rows} rewards"
        in message
    )
    assert "PoisonableEmbedder" in message
    diversity = objectives[1]
    assert isinstance(diversity, DiversityRewardCallback)
    assert diversity.running.count == POISON_STEP and torch.isfinite(torch.tensor(diversity.running.ema))
    _assert_last_checkpoint_is_the_last_good_step(tmp_path, module)
    saved = load_checkpoint(tmp_path / "last.ckpt")["callbacks"][diversity.state_key]["running_baseline"]
    assert saved["count"] == POISON_STEP


class RecordDtypes(Callback):
    """Wraps every objective's ``loss_terms`` to record the dtypes of what it sees and returns."""

    def __init__(self) -> None:
        self.seen: dict[str, set[torch.dtype]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for cb in trainer.callbacks:
            if isinstance(cb, (CFGDistillCallback, DiversityRewardCallback)):
                cb.loss_terms = self._wrap(cb.loss_terms, cb)

    def _wrap(self, loss_terms: Any, cb: Any) -> Any:
        def recorded(pl_module: CFGRLModule, batch: Any) -> dict[str, Tensor]:
            terms = loss_terms(pl_module, batch)
            self.seen.setdefault("student_logits", set()).add(batch.student_logits.dtype)
            self.seen.setdefault("sequence_logprobs", set()).add(batch.sequence_logprobs.dtype)
            if isinstance(cb, CFGDistillCallback):
                self.seen.setdefault("teacher_logits", set()).add(cb.teacher_logits(batch).dtype)
            for name, value in terms.items():
                self.seen.setdefault(name, set()).add(value.dtype)
            return terms

        return recorded


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize(
    "precision, student_dtype", [("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16)]
)
def test_bf16_on_cpu_keeps_divergences_and_rewards_in_float32(
    precision: str, student_dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    module = CFGRLModule(
        AudioTokenTransformer(**TINY_ARGS), rollout={"num_frames": 8}, optimization={"learning_rate": 1e-3}
    )
    distill, diversity = CFGDistillCallback(), DiversityRewardCallback(tiny_embedder(), beta=1.0)
    recorder = RecordDtypes()
    trainer = quiet_trainer(
        max_steps=2, limit_val_batches=0, precision=precision, callbacks=[distill, diversity, recorder]
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    assert recorder.seen["student_logits"] == {student_dtype}  # the low precision really was in use
    for name in ("teacher_logits", "sequence_logprobs", "distill", "diversity"):
        assert recorder.seen[name] == {torch.float32}, (name, recorder.seen[name])
    weights = torch.float32 if precision == "bf16-mixed" else torch.bfloat16
    assert {p.dtype for p in module.generator.parameters()} == {weights}
    # the frozen helpers follow the module's precision ("bf16-true" converts them; AMP leaves them)
    assert {p.dtype for p in distill.teacher.parameters()} == {weights}
    assert {p.dtype for p in diversity.embedder.parameters()} == {weights}
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


# ----------------------------------------------------------------------------------- atomic saving


def _good_checkpoint(path: Path) -> bytes:
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(4096)}, "global_step": 1}, path)
    return path.read_bytes()


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_fails_midway(
    tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "last.ckpt"
    good = _good_checkpoint(target)
    real_save = torch.save

    def dies_halfway(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        # serialise for real, write half of it into the file being saved, then fail like a full disk
        real_save(obj, buffer := __import__("io").BytesIO())
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space left on device"):
        AtomicCheckpointIO().save_checkpoint(
            {"state_dict": {"w": torch.zeros(4096)}, "global_step": 2}, target
        )
    monkeypatch.undo()
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temporary file is gone
    assert load_checkpoint(target)["global_step"] == 1
    with pytest.raises(TypeError, match="got storage_options={'a': 1}; expected None"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, target, storage_options={"a": 1})


def _other_filesystem_dir() -> str | None:
    shm = "/dev/shm"
    if (
        os.path.isdir(shm)
        and os.access(shm, os.W_OK)
        and os.stat(shm).st_dev != os.stat(tempfile.gettempdir()).st_dev
    ):
        return shm
    return None


@pytest.mark.skipif(
    _other_filesystem_dir() is None or not hasattr(shutil, "_fastcopy_sendfile"),
    reason="needs a writable /dev/shm on another filesystem and CPython's sendfile copy path",
)
def test_atomic_checkpoint_io_never_copies_across_filesystems(tmp_path: Path, monkeypatch) -> None:
    """With the temp dir on another filesystem, a writer that moves its temporary file by *copying* it
    into ``last.ckpt`` truncates the good checkpoint when the copy dies halfway (Lightning 2.6.6's does).
    ``AtomicCheckpointIO`` writes beside the target and renames, so no copy can fail midway."""
    target = tmp_path / "last.ckpt"
    good = _good_checkpoint(target)
    monkeypatch.setattr(tempfile, "tempdir", _other_filesystem_dir())

    def dies_halfway(fsrc: Any, fdst: Any) -> None:
        data = fsrc.read()
        fdst.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "_fastcopy_sendfile", dies_halfway)
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(4096)}, "global_step": 2}, target)
    assert load_checkpoint(target)["global_step"] == 2  # the new checkpoint, whole
    assert len(target.read_bytes()) == len(good)
