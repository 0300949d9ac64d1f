"""Bad-input sweep: every row of the table in ``docs/bad_inputs.md`` is a case here (same id).

Each case feeds one bad value where it enters (a constructor, a callback's setup, a rollout, a
checkpoint path, a batch) and asserts the error's type and a message that names the value and what was
expected. Cases marked ``xfail`` are inputs that are *not* yet caught cleanly (their row says where the
fix belongs). ``test_docs_table_is_current`` regenerates the table from the errors actually raised and
compares it with the docs; ``python -m tests.test_bad_inputs`` prints it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from lightning_cfgrl import (
    CFGDistillCallback,
    CFGRLModule,
    DiversityGradientConfig,
    FrozenModelConfig,
    ModuleAdapter,
    RolloutBatch,
    SamplingConfig,
    TeacherConfig,
)
from lightning_cfgrl.cli.main import ConfigError
from lightning_cfgrl.core.condition import condition_batch_size, repeat_condition
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
from lightning_cfgrl.experiments import SyntheticMusic, SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import CheckpointError
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.configs import group_settings
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.tiny_fit import TINY_ARGS

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
PROMPTS = SyntheticMusic().prompts[:4]


# ------------------------------------------------------------------------------------------ builders


def _generator(**overrides: Any) -> AudioTokenTransformer:
    torch.manual_seed(0)
    return AudioTokenTransformer(**{**TINY_ARGS, **overrides})


def _module(**kwargs: Any) -> CFGRLModule:
    return CFGRLModule(_generator(), **group_settings({"num_frames": 8, **kwargs}))


def _embedder(**overrides: Any) -> ContrastiveTokenEmbedder:
    torch.manual_seed(1)
    return ContrastiveTokenEmbedder(**{**dict(dim=16, embed_dim=16, num_layers=1), **overrides})


def _rollout(group_size: int = 2, num_prompts: int = 2) -> tuple[CFGRLModule, RolloutBatch]:
    module = _module(num_samples_per_prompt=group_size)
    prompts = PROMPTS[:num_prompts]
    steps = module.rollout(prompts, group_size, SamplingConfig(), seed=0)
    condition = repeat_condition(prompts, group_size)
    mask = module.generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    return module, RolloutBatch(
        steps, condition, mask, group_size, module.generator(steps, condition), SamplingConfig()
    )


def _steps() -> tuple[AudioTokenTransformer, Tensor, Tensor]:
    """A generator, 4 valid step sequences ``[4, 2, 9]`` and their conditions."""
    module = _module()
    steps = module.rollout(PROMPTS[:2], 2, SamplingConfig(), seed=0)
    return module.generator, steps, repeat_condition(PROMPTS[:2], 2)


def _diversity_loss(embedder: nn.Module, **kwargs: Any) -> None:
    module, batch = _rollout(**kwargs)
    gradient = DiversityGradientConfig(baseline="running_mean")
    DiversityRewardCallback(embedder, gradient=gradient).loss_terms(module, batch)


def _generator_ckpt(path: Path, seed: int = 0, **overrides: Any) -> Path:
    torch.manual_seed(seed)
    generator = AudioTokenTransformer(**{**TINY_ARGS, **overrides})
    torch.save(
        {
            "state_dict": {f"generator.{k}": v for k, v in generator.state_dict().items()},
            "hyper_parameters": {"generator": generator.spec()},
        },
        path,
    )
    return path


def _embedder_ckpt(path: Path) -> Path:
    embedder = _embedder()
    torch.save(
        {
            "state_dict": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
            "hyper_parameters": {"embedder": embedder.spec()},
        },
        path,
    )
    return path


class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: code execution with a visible side effect."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def _malicious_ckpt(path: Path) -> Path:
    torch.save(
        {
            "state_dict": {"generator.heads.bias": torch.zeros(64)},
            "x": _RunsCode(str(path.parent / "code_ran")),
        },
        path,
    )
    return path


def _bad_file(kind: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / f"{kind}.ckpt"
        if kind == "corrupt":
            path.write_bytes(b"hello, not a checkpoint")
        elif kind == "truncated":
            data = _generator_ckpt(tmp / "good.ckpt").read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "foreign":
            _embedder_ckpt(path)
        elif kind == "pickled_code":
            _malicious_ckpt(path)
        elif kind == "directory":
            path.mkdir()
        elif kind == "wrong_architecture":
            _generator_ckpt(path, dim=64)
        elif kind == "empty_safetensors":
            path = tmp / "empty.safetensors"
            header = b"{}      "
            path.write_bytes(struct.pack("<Q", len(header)) + header)
        return path

    return make


def _teacher_setup(tmp: Path, **overrides: Any) -> None:
    path = str(_generator_ckpt(tmp / "teacher.ckpt", **overrides)) if overrides else str(tmp / "missing.ckpt")
    CFGDistillCallback(teacher=TeacherConfig(checkpoint=path)).setup(None, _module(), "fit")  # type: ignore[arg-type]


def _teacher_without_cfg(tmp: Path) -> None:
    class NextToken(nn.Module):  # a plain next-token model: tokens [B, K, T] -> logits [B, K, T, V]
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(33, 8), nn.Linear(8, 32)

        def forward(self, tokens: Tensor, condition: Tensor) -> Tensor:
            return self.out(self.emb(tokens))

    student = ModuleAdapter(NextToken(), num_codebooks=2, vocab_size=32, bos_id=32)  # no null_condition
    module = CFGRLModule(student, rollout={"num_frames": 4})
    callback = CFGDistillCallback()
    callback.setup(None, module, "fit")  # type: ignore[arg-type]
    steps = torch.zeros(2, 2, 4, dtype=torch.long)
    mask = torch.ones_like(steps, dtype=torch.bool)
    batch = RolloutBatch(steps, PROMPTS[:2], mask, 2, student(steps, PROMPTS[:2]), SamplingConfig())
    callback.teacher_logits(batch)


def _no_objectives(tmp: Path) -> None:
    module = _module()
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[])
    module.on_fit_start()


class _Flat(nn.Module):
    """An 'embedder' that returns one number per sequence instead of a vector."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.float().mean(dim=(1, 2))


# --------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    input: str  # what was fed (docs column)
    where: str  # where it is caught
    build: Callable[[Path], Any]
    error: type[BaseException]
    match: str  # literal text the message must contain: the value and what was expected
    not_clean: str | None = None  # why the input is not caught cleanly yet (xfail)


def _c(
    id: str,
    input: str,
    where: str,
    build: Callable[[Path], Any],
    error: type[BaseException],
    match: str,
    not_clean: str | None = None,
) -> Case:
    return Case(id, input, where, build, error, match, not_clean)


CONSTRUCT, SETUP, STEP, LOAD = "construction", "fit setup", "first training step", "load"


# ------------------------------------------------------------------------------- round two (issue 14)

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def _spec_ckpt(path: Path, class_path: str = "os.mkdir", module: str = "lightning_cfgrl.CFGRLModule") -> Path:
    """A weights-only-safe checkpoint whose generator *spec* names a function: building it would call
    ``os.mkdir(<dir>/code_ran)`` (the marker every case checks)."""
    generator = _generator()
    spec = {"class_path": class_path, "init_args": {"path": str(path.parent / "code_ran")}}
    torch.save(
        {
            "state_dict": {f"generator.{k}": v for k, v in generator.state_dict().items()},
            "hyper_parameters": {"_class_path": module, "generator": spec, "num_frames": 8},
        },
        path,
    )
    return path


def _cli(*args: str) -> None:
    from lightning_cfgrl.cli.main import run_cli

    run_cli(["fit", "--config", str(CONFIGS / "distill.yaml"), "--trainer.max_steps=1", *args])


class _WrongLogits(AudioTokenTransformer):
    """Breaks the logits contract: ``"minus_one"`` (V - 1 wide), ``"plus_three"`` (V + 3) or
    ``"one_codebook"`` (K = 1 for a 2-codebook model)."""

    def __init__(self, how: str) -> None:
        torch.manual_seed(0)
        super().__init__(**TINY_ARGS)
        self.how = how

    def forward(self, steps: Tensor, condition: Any, cache: Any = None) -> Tensor:
        logits = super().forward(steps, condition, cache)
        if self.how == "minus_one":
            return logits[..., :-1]
        if self.how == "plus_three":
            return torch.cat([logits, logits[..., :3]], dim=-1)
        return logits[:, :1]


def _wrong_logits_rollout(how: str) -> None:
    CFGRLModule(_WrongLogits(how), rollout={"num_frames": 8}).rollout(
        PROMPTS[:2], 2, SamplingConfig(), seed=0
    )


def _merge_onto_input(tmp: Path) -> None:
    from lightning_cfgrl.cli.merge import merge_checkpoints

    quality, diversity = _generator_ckpt(tmp / "q.ckpt"), _generator_ckpt(tmp / "d.ckpt", seed=3)
    merge_checkpoints(str(quality), str(diversity), [0.5], str(tmp / "out"))
    merge_checkpoints(
        str(tmp / "out" / "merged_lambda=0.50.ckpt"), str(diversity), [0.5, 0.75], str(tmp / "out")
    )


def _mixed_merged_set(tmp: Path) -> None:
    from lightning_cfgrl.cli.merge import merge_checkpoints
    from lightning_cfgrl.merging.merged_sets import complete_merged_sets

    quality, diversity = _generator_ckpt(tmp / "q.ckpt"), _generator_ckpt(tmp / "d.ckpt", seed=3)
    merge_checkpoints(str(quality), str(diversity), [0.25, 0.5], str(tmp / "out"))
    # what a crash between renames used to leave: one write's .ckpt beside another's sidecar
    shutil.copy(tmp / "out" / "merged_lambda=0.25.ckpt", tmp / "out" / "merged_lambda=0.50.ckpt")
    complete_merged_sets(tmp / "out")


def _resume_into_other_module(tmp: Path) -> None:
    from lightning_cfgrl import PretrainModule

    path = tmp / "pretrain.ckpt"
    ckpt = _spec_ckpt(path, class_path="lightning_cfgrl.models.AudioTokenTransformer")
    state = torch.load(ckpt, weights_only=True)
    state["cfgrl_module_class"] = "lightning_cfgrl.training.pretrain.PretrainModule"
    torch.save(state, path)
    PretrainModule  # noqa: B018 - imported, so the recorded class resolves (and still is another class)
    _module().on_load_checkpoint(torch.load(path, weights_only=True))


def _teacher_file_changed(tmp: Path) -> None:
    path = _generator_ckpt(tmp / "teacher.ckpt")
    first = CFGDistillCallback(teacher=TeacherConfig(checkpoint=str(path)))
    first.setup(None, _module(), "fit")  # type: ignore[arg-type]
    state = first.state_dict()
    _generator_ckpt(path, seed=3)  # replaced between the run and its resume
    resumed = CFGDistillCallback(teacher=TeacherConfig(checkpoint=str(path)))
    resumed.setup(None, _module(), "fit")  # type: ignore[arg-type]
    resumed.load_state_dict(state)


class _Zero(nn.Module):
    """An 'embedder' whose vectors are all zero (cosine is undefined)."""

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.zeros(tokens.shape[0], 4)


RESUME, CLI, MERGE = (
    "resume (state restore)",
    "cfgrl fit, before anything is built",
    "merge, before any write",
)

CASES: list[Case] = [
    # -- configuration values
    _c(
        "guidance_scale_negative",
        "CFGDistillCallback(guidance_scale=-1.0)",
        CONSTRUCT,
        lambda t: CFGDistillCallback(guidance_scale=-1.0),
        ValueError,
        "guidance_scale must be a finite number >= 0, got -1.0",
    ),
    _c(
        "guidance_scale_nan",
        "CFGDistillCallback(guidance_scale=nan)",
        CONSTRUCT,
        lambda t: CFGDistillCallback(guidance_scale=float("nan")),
        ValueError,
        "guidance_scale must be a finite number >= 0, got nan",
    ),
    _c(
        "guidance_scale_string",
        "CFGDistillCallback(guidance_scale='abc') (Python API; the CLI's type check rejects it first)",
        CONSTRUCT,
        lambda t: CFGDistillCallback(guidance_scale="abc"),  # type: ignore[arg-type]
        ValueError,
        "guidance_scale must be a finite number >= 0, got 'abc'",
    ),
    _c(
        "divergence_unknown",
        "CFGDistillCallback(divergence='l2')",
        CONSTRUCT,
        lambda t: CFGDistillCallback(divergence="l2"),  # type: ignore[arg-type]
        ValueError,
        "divergence must be one of ('reverse_kl', 'forward_kl', 'jsd'), got 'l2'",
    ),
    _c(
        "jsd_beta_out_of_range",
        "CFGDistillCallback(divergence='jsd', jsd_beta=1.5)",
        CONSTRUCT,
        lambda t: CFGDistillCallback(divergence="jsd", jsd_beta=1.5),
        ValueError,
        "jsd_beta must be in (0, 1), got 1.5",
    ),
    _c(
        "distill_weight_inf",
        "CFGDistillCallback(weight=inf)",
        CONSTRUCT,
        lambda t: CFGDistillCallback(weight=float("inf")),
        ValueError,
        "weight must be a finite number >= 0, got inf",
    ),
    _c(
        "reduction_unknown",
        "CFGDistillCallback(reduction='max')",
        CONSTRUCT,
        lambda t: CFGDistillCallback(reduction="max"),  # type: ignore[arg-type]
        ValueError,
        "reduction must be 'sum' or 'mean', got 'max'",
    ),
    _c(
        "beta_negative",
        "DiversityRewardCallback(beta=-1.0)",
        CONSTRUCT,
        lambda t: DiversityRewardCallback(_embedder(), beta=-1.0),
        ValueError,
        "beta must be a finite number >= 0, got -1.0",
    ),
    _c(
        "beta_inf",
        "DiversityRewardCallback(beta=inf)",
        CONSTRUCT,
        lambda t: DiversityRewardCallback(_embedder(), beta=float("inf")),
        ValueError,
        "beta must be a finite number >= 0, got inf",
    ),
    _c(
        "baseline_unknown",
        "DiversityRewardCallback(gradient={baseline: leave_one_out})",
        CONSTRUCT,
        lambda t: DiversityGradientConfig(baseline="leave_one_out"),  # type: ignore[arg-type]
        ValueError,
        "gradient.baseline must be one of ('running_mean', 'other_pairs', 'other_prompts', 'none', 'auto'), got 'leave_one_out'",
    ),
    _c(
        "baseline_decay_one",
        "DiversityRewardCallback(gradient={baseline_decay: 1.0})",
        CONSTRUCT,
        lambda t: DiversityGradientConfig(baseline_decay=1.0),
        ValueError,
        "gradient.baseline_decay must be in [0, 1), got 1.0",
    ),
    _c(
        "embedding_chunk_size_zero",
        "DiversityRewardCallback(embedding={chunk_size: 0})",
        CONSTRUCT,
        lambda t: FrozenModelConfig(chunk_size=0),
        ValueError,
        "embedding.chunk_size must be >= 1 or None (the whole batch), got 0",
    ),
    _c(
        "embedder_not_a_module",
        "DiversityRewardCallback(embedder='histogram')",
        CONSTRUCT,
        lambda t: DiversityRewardCallback("histogram"),  # type: ignore[arg-type]
        TypeError,
        "embedder must be an nn.Module mapping tokens [B, K, T] to [B, D], got str",
    ),
    _c(
        "diversity_with_G1",
        "DiversityRewardCallback with CFGRLModule(rollout={num_samples_per_prompt: 1})",
        SETUP,
        lambda t: DiversityRewardCallback(_embedder()).setup(None, _module(num_samples_per_prompt=1), "fit"),  # type: ignore[arg-type]
        ValueError,
        "needs G >= 2 samples per prompt (CFGRLModule rollout.num_samples_per_prompt), got G = 1",
    ),
    _c(
        "other_pairs_baseline_with_G2",
        "DiversityRewardCallback(gradient={baseline: other_pairs}), rollout.num_samples_per_prompt=2",
        SETUP,
        lambda t: DiversityRewardCallback(
            _embedder(), gradient=DiversityGradientConfig(baseline="other_pairs")
        ).setup(
            None,  # type: ignore[arg-type]
            _module(num_samples_per_prompt=2),
            "fit",
        ),  # type: ignore[arg-type]
        ValueError,
        "gradient.baseline='other_pairs' needs rollout.num_samples_per_prompt >= 3, got 2",
    ),
    _c(
        "other_prompts_baseline_one_prompt",
        "DiversityRewardCallback(gradient={baseline: other_prompts}), batch of 1 prompt",
        STEP,
        lambda t: DiversityRewardCallback(
            _embedder(), gradient=DiversityGradientConfig(baseline="other_prompts")
        ).loss_terms(*_rollout(num_prompts=1)),
        ValueError,
        "the 'other_prompts' baseline needs >= 2 prompts per batch, got 1",
    ),
    _c(
        "temperature_zero",
        "CFGRLModule(rollout={temperature: 0.0})",
        CONSTRUCT,
        lambda t: _module(temperature=0.0),
        ValueError,
        "rollout.temperature must be a finite number > 0, got 0.0",
    ),
    _c(
        "temperature_nan",
        "CFGRLModule(rollout={temperature: nan})",
        CONSTRUCT,
        lambda t: _module(temperature=float("nan")),
        ValueError,
        "rollout.temperature must be a finite number > 0, got nan",
    ),
    _c(
        "top_k_zero",
        "CFGRLModule(rollout={top_k: 0})",
        CONSTRUCT,
        lambda t: _module(top_k=0),
        ValueError,
        "rollout.top_k must be >= 1 or None, got 0",
    ),
    _c(
        "top_p_zero",
        "CFGRLModule(rollout={top_p: 0.0})",
        CONSTRUCT,
        lambda t: _module(top_p=0.0),
        ValueError,
        "rollout.top_p must be in (0, 1] or None, got 0.0",
    ),
    _c(
        "top_p_above_one",
        "CFGRLModule(rollout={top_p: 1.5})",
        CONSTRUCT,
        lambda t: _module(top_p=1.5),
        ValueError,
        "rollout.top_p must be in (0, 1] or None, got 1.5",
    ),
    _c(
        "num_frames_zero",
        "CFGRLModule(rollout={num_frames: 0})",
        CONSTRUCT,
        lambda t: CFGRLModule(_generator(), rollout={"num_frames": 0}),
        ValueError,
        "rollout.num_frames must be >= 1, got 0",
    ),
    _c(
        "num_frames_beyond_max_frames",
        "CFGRLModule(rollout={num_frames: 100}) with a generator of max_frames=8",
        CONSTRUCT,
        lambda t: CFGRLModule(_generator(), rollout={"num_frames": 100}),
        ValueError,
        "rollout.num_frames=100 needs 101 decoding steps, more than the generator's max_steps=9",
    ),
    _c(
        "samples_per_prompt_zero",
        "CFGRLModule(rollout={num_samples_per_prompt: 0})",
        CONSTRUCT,
        lambda t: _module(num_samples_per_prompt=0),
        ValueError,
        "rollout.num_samples_per_prompt must be >= 1, got 0",
    ),
    _c(
        "val_samples_per_prompt_zero",
        "CFGRLModule(validation={samples_per_prompt: 0})",
        CONSTRUCT,
        lambda t: _module(val_samples_per_prompt=0),
        ValueError,
        "validation.samples_per_prompt must be >= 1, got 0",
    ),
    _c(
        "learning_rate_zero",
        "CFGRLModule(optimization={learning_rate: 0.0})",
        CONSTRUCT,
        lambda t: _module(learning_rate=0.0),
        ValueError,
        "optimization.learning_rate must be a finite number > 0, got 0.0",
    ),
    _c(
        "learning_rate_inf",
        "CFGRLModule(optimization={learning_rate: inf})",
        CONSTRUCT,
        lambda t: _module(learning_rate=float("inf")),
        ValueError,
        "optimization.learning_rate must be a finite number > 0, got inf",
    ),
    _c(
        "generator_not_a_module",
        "CFGRLModule(generator=42)",
        CONSTRUCT,
        lambda t: CFGRLModule(42),
        TypeError,  # type: ignore[arg-type]
        "generator must be an nn.Module implementing TokenGenerator (num_codebooks, vocab_size, pattern, forward(steps, condition)); got int",
    ),
    _c(
        "generator_spec_without_class_path",
        "CFGRLModule(generator={'init_args': {}})",
        CONSTRUCT,
        lambda t: CFGRLModule({"init_args": {}}),
        ValueError,
        "a generator spec needs a 'class_path' entry, got keys ['init_args']",
    ),
    _c(
        "generator_spec_unknown_class",
        "CFGRLModule(generator={'class_path': 'lightning_cfgrl.models.Nope'})",
        CONSTRUCT,
        lambda t: CFGRLModule({"class_path": "lightning_cfgrl.models.Nope"}),
        ValueError,
        "class_path 'lightning_cfgrl.models.Nope'",
    ),
    _c(
        "datamodule_batch_size_zero",
        "SyntheticPromptDataModule(batch_size=0)",
        CONSTRUCT,
        lambda t: SyntheticPromptDataModule(batch_size=0),
        ValueError,
        "batch_size must be >= 1, got 0",
    ),
    _c(
        "datamodule_repeats_zero",
        "SyntheticPromptDataModule(split=PromptSplit(repeats=0))",
        CONSTRUCT,
        lambda t: SyntheticPromptDataModule(split=PromptSplit(repeats=0)),
        ValueError,
        "split.repeats must be >= 1, got 0",
    ),
    _c(
        "heldout_fraction_one",
        "SyntheticPromptDataModule(split=PromptSplit(heldout_fraction=1.0))",
        CONSTRUCT,
        lambda t: SyntheticPromptDataModule(split=PromptSplit(heldout_fraction=1.0)),
        ValueError,
        "split.heldout_fraction must be in [0, 1), got 1.0",
    ),
    # -- shapes, ids and dtypes of conditions and tokens
    _c(
        "condition_attribute_count",
        "condition [B, 2] for a model with 3 attribute slots",
        STEP,
        lambda t: _module().rollout(PROMPTS[:2, :2], 2, SamplingConfig(), 0),
        ValueError,
        "condition must be attribute ids [B, 3], got (4, 2)",
    ),  # the 2 prompts repeated for G = 2
    _c(
        "condition_ids_out_of_range",
        "condition id 9 in a slot with 4 values",
        STEP,
        lambda t: _module().rollout(torch.tensor([[9, 1, 1]]), 2, SamplingConfig(), 0),
        ValueError,
        "condition ids must be int64 in [0, n] per slot with n = (4, 4, 3), got dtype torch.int64 and values in [1, 9]",
    ),
    _c(
        "condition_ids_negative",
        "condition id -1",
        STEP,
        lambda t: _module().rollout(torch.tensor([[-1, 1, 1]]), 2, SamplingConfig(), 0),
        ValueError,
        "condition ids must be int64 in [0, n] per slot with n = (4, 4, 3), got dtype torch.int64 and values in [-1, 1]",
    ),
    _c(
        "condition_float_dtype",
        "condition as float32",
        STEP,
        lambda t: _module().rollout(PROMPTS[:2].float(), 2, SamplingConfig(), 0),
        ValueError,
        "condition ids must be int64 in [0, n] per slot with n = (4, 4, 3), got dtype torch.float32",
    ),
    _c(
        "condition_dict_for_tensor_model",
        "condition {'genre': ...} for a model taking a tensor",
        STEP,
        lambda t: _module().rollout({"genre": PROMPTS[:2, 0]}, 2, SamplingConfig(), 0),
        ValueError,
        "condition must be attribute ids [B, 3], got dict",
    ),
    _c(
        "condition_dict_batch_sizes_disagree",
        "condition dict with batch sizes 2 and 3",
        STEP,
        lambda t: condition_batch_size({"a": torch.zeros(2, 1), "b": torch.zeros(3, 1)}),
        ValueError,
        "condition tensors disagree on the batch size: {'a': 2, 'b': 3}",
    ),
    _c(
        "condition_vs_token_batch",
        "tokens [4, 2, 9] with condition [2, 3]",
        STEP,
        lambda t: (lambda g, s, c: g(s, c[:2]))(*_steps()),
        ValueError,
        "condition batch size 2 differs from the token batch size 4",
    ),
    _c(
        "token_id_out_of_range",
        "token id 40 with vocab_size 32",
        STEP,
        lambda t: (lambda g, s, c: g(s.index_fill(2, torch.tensor([1]), 40), c))(*_steps()),
        ValueError,
        "tokens contain id 40, outside [0, 32) (vocab_size)",
    ),
    _c(
        "token_dtype_int32",
        "tokens as int32",
        STEP,
        lambda t: (lambda g, s, c: g(s.int(), c))(*_steps()),
        ValueError,
        "tokens must be int64 token ids, got dtype torch.int32",
    ),
    _c(
        "token_codebook_count",
        "tokens with 3 codebooks for a 2-codebook model",
        STEP,
        lambda t: (lambda g, s, c: g(torch.cat([s, s[:, :1]], 1), c))(*_steps()),
        ValueError,
        "tokens have 3 codebooks, the generator expects 2",
    ),
    _c(
        "token_tensor_2d",
        "tokens [B, S] (codebook dim missing)",
        STEP,
        lambda t: (lambda g, s, c: g(s[:, 0], c))(*_steps()),
        ValueError,
        "tokens must have shape [B, K, S], got (4, 9)",
    ),
    _c(
        "embedder_token_out_of_range",
        "ContrastiveTokenEmbedder given token id 40 (vocab_size 32)",
        STEP,
        lambda t: _embedder()(torch.full((2, 2, 8), 40)),
        ValueError,
        "token ids must be in [0, 32), got [40, 40]",
    ),
    _c(
        "embedder_float_tokens",
        "ContrastiveTokenEmbedder given float32 tokens",
        STEP,
        lambda t: _embedder()(torch.zeros(2, 2, 8)),
        ValueError,
        "tokens must be int64",
    ),
    _c(
        "embedder_codebook_mismatch",
        "ContrastiveTokenEmbedder(num_codebooks=3) with a 2-codebook generator",
        STEP,
        lambda t: _diversity_loss(_embedder(num_codebooks=3)),
        ValueError,
        "tokens must be [B, 3, T] frames, got shape (4, 2, 8)",
    ),
    _c(
        "embedder_vocab_smaller",
        "ContrastiveTokenEmbedder(vocab_size=16) with a 32-token generator",
        STEP,
        lambda t: _diversity_loss(_embedder(vocab_size=16)),
        ValueError,
        "token ids must be in [0, 16), got [0, 31]",
    ),
    _c(
        "embedder_wrong_output_shape",
        "an embedder returning [N] instead of [N, D]",
        STEP,
        lambda t: _diversity_loss(_Flat()),
        ValueError,
        "embedder must return [N, D] = [4, D], got shape (4,)",
    ),
    # -- dataset contents
    _c(
        "batch_without_condition",
        "batch {'prompt': ...} (no 'condition')",
        STEP,
        lambda t: _module().training_step({"prompt": PROMPTS[:2]}, 0),
        ValueError,
        "CFGRLModule expects batches as dicts with a 'condition' entry, got dict",
    ),
    _c(
        "batch_not_a_dict",
        "batch as a bare tensor",
        STEP,
        lambda t: _module().training_step(PROMPTS[:2], 0),
        ValueError,
        "CFGRLModule expects batches as dicts with a 'condition' entry, got Tensor",
    ),
    _c(
        "batch_prompt_ids_out_of_range",
        "batch {'condition': [[9, 1, 1]]}",
        STEP,
        lambda t: _module().training_step({"condition": torch.tensor([[9, 1, 1]])}, 0),
        ValueError,
        "condition ids must be int64 in [0, n] per slot with n = (4, 4, 3), got dtype torch.int64 and values in [1, 9]",
    ),
    # -- files
    _c(
        "init_checkpoint_missing",
        "CFGRLModule(init_checkpoint='<tmp>/missing.ckpt')",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(t / "missing.ckpt")),
        CheckpointError,
        "missing.ckpt does not exist; expected a Lightning .ckpt or a .safetensors file of generator weights",
    ),
    _c(
        "init_checkpoint_corrupt",
        "init_checkpoint: a text file",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("corrupt")(t))),
        CheckpointError,
        "corrupt.ckpt is corrupt or truncated",
    ),
    _c(
        "init_checkpoint_truncated",
        "init_checkpoint: first half of a good checkpoint",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("truncated")(t))),
        CheckpointError,
        "truncated.ckpt is corrupt or truncated",
    ),
    _c(
        "init_checkpoint_foreign",
        "init_checkpoint: an embedder checkpoint",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("foreign")(t))),
        CheckpointError,
        "foreign.ckpt has no 'generator.*' entries in its state_dict; expected the generator's weights there",
    ),
    _c(
        "init_checkpoint_pickled_code",
        "init_checkpoint: a pickle that calls os.mkdir when loaded",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("pickled_code")(t))),
        CheckpointError,
        "pickled_code.ckpt was refused for safety",
    ),
    _c(
        "init_checkpoint_directory",
        "init_checkpoint: a directory (e.g. a sharded checkpoint)",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("directory")(t))),
        CheckpointError,
        "directory.ckpt is a directory; expected a Lightning .ckpt or a .safetensors file of generator weights",
    ),
    _c(
        "init_checkpoint_wrong_architecture",
        "init_checkpoint of a dim=64 model into a dim=32 model",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("wrong_architecture")(t))),
        ValueError,
        "wrong_architecture.ckpt' does not fit the generator: Error(s) in loading state_dict for AudioTokenTransformer",
    ),
    _c(
        "init_checkpoint_empty_safetensors",
        "init_checkpoint: a safetensors file with no tensors",
        CONSTRUCT,
        lambda t: _module(init_checkpoint=str(_bad_file("empty_safetensors")(t))),
        CheckpointError,
        "empty.safetensors holds no tensors; expected the generator's weights",
    ),
    _c(
        "teacher_checkpoint_missing",
        "CFGDistillCallback(teacher={checkpoint: '<tmp>/missing.ckpt'})",
        SETUP,
        lambda t: _teacher_setup(t),
        CheckpointError,
        "missing.ckpt does not exist; expected a Lightning .ckpt",
    ),
    _c(
        "teacher_vocab_mismatch",
        "teacher.checkpoint of a vocab_size=16 model, student vocab_size=32",
        SETUP,
        lambda t: _teacher_setup(t, vocab_size=16),
        ValueError,
        "teacher vocab_size=16 does not match the student's vocab_size=32",
    ),
    _c(
        "teacher_codebook_mismatch",
        "teacher.checkpoint of a 3-codebook model, student 2 codebooks",
        SETUP,
        lambda t: _teacher_setup(t, num_codebooks=3),
        ValueError,
        "teacher num_codebooks=3 does not match the student's num_codebooks=2",
    ),
    _c(
        "teacher_without_cfg",
        "CFGDistillCallback on a ModuleAdapter built without null_condition",
        STEP,
        _teacher_without_cfg,
        ValueError,
        "this ModuleAdapter was built without null_condition, so it cannot do CFG",
    ),
    _c(
        "embedder_checkpoint_missing",
        "ContrastiveTokenEmbedder(checkpoint='<tmp>/missing.ckpt')",
        CONSTRUCT,
        lambda t: ContrastiveTokenEmbedder(checkpoint=str(t / "missing.ckpt")),
        FileNotFoundError,
        "missing.ckpt' does not exist",
    ),
    _c(
        "embedder_checkpoint_pickled_code",
        "ContrastiveTokenEmbedder(checkpoint=<a pickle that runs code>)",
        CONSTRUCT,
        lambda t: ContrastiveTokenEmbedder(checkpoint=str(_bad_file("pickled_code")(t))),
        CheckpointError,
        "pickled_code.ckpt was refused for safety",
    ),
    _c(
        "embedder_checkpoint_foreign",
        "ContrastiveTokenEmbedder(checkpoint=<a generator checkpoint>)",
        CONSTRUCT,
        lambda t: ContrastiveTokenEmbedder(checkpoint=str(_generator_ckpt(t / "generator.ckpt"))),
        ValueError,
        "has no 'embedder.*' weights in its state_dict; expected a checkpoint of ContrastiveEmbedderModule",
    ),
    # -- trainer wiring
    _c(
        "no_objective_callback",
        "Trainer(callbacks=[]) fitting a CFGRLModule",
        SETUP,
        _no_objectives,
        ValueError,
        "CFGRLModule found no objective callback on the Trainer; add CFGDistillCallback and/or DiversityRewardCallback",
    ),
    _c(
        "two_diversity_callbacks_same_name",
        "two DiversityRewardCallback(name='diversity') on one Trainer",
        CONSTRUCT,
        lambda t: pl.Trainer(
            logger=False,
            callbacks=[DiversityRewardCallback(_embedder()), DiversityRewardCallback(_embedder())],
        ),
        Exception,
        "Found more than one stateful callback of type `DiversityRewardCallback`",
    ),
    # -- round two (issue 14): a spec read from a file may only build an nn.Module
    _c(
        "spec_calls_a_function_teacher_checkpoint",
        "teacher.checkpoint whose generator spec is {class_path: os.mkdir, ...}",
        SETUP,
        lambda t: CFGDistillCallback(
            teacher=TeacherConfig(checkpoint=str(_spec_ckpt(t / "evil.ckpt")))
        ).setup(None, _module(), "fit"),  # type: ignore[arg-type]
        ValueError,
        "refused class_path 'os.mkdir' in the generator spec of teacher.checkpoint",
    ),
    _c(
        "spec_calls_a_function_load_from_checkpoint",
        "CFGRLModule.load_from_checkpoint(<checkpoint whose generator spec is os.mkdir>)",
        LOAD,
        lambda t: CFGRLModule.load_from_checkpoint(_spec_ckpt(t / "evil.ckpt")),
        ValueError,
        "refused class_path 'os.mkdir' in the generator spec of checkpoint",
    ),
    _c(
        "spec_calls_a_function_pretrain_load_from_checkpoint",
        "PretrainModule.load_from_checkpoint(<checkpoint whose generator spec is os.mkdir>)",
        LOAD,
        lambda t: __import__("lightning_cfgrl").PretrainModule.load_from_checkpoint(
            _spec_ckpt(t / "evil.ckpt", module="lightning_cfgrl.PretrainModule")
        ),
        ValueError,
        "refused class_path 'os.mkdir' in the generator spec of checkpoint",
    ),
    _c(
        "spec_calls_a_function_load_generator",
        "load_generator(<same>) (what cfgrl evaluate --base / --merged_dir / --students use)",
        LOAD,
        lambda t: __import__("lightning_cfgrl").load_generator(_spec_ckpt(t / "evil.ckpt")),
        ValueError,
        "refused class_path 'os.mkdir' in the generator spec of checkpoint",
    ),
    _c(
        "spec_calls_a_function_ckpt_path",
        "cfgrl fit --ckpt_path <same>",
        CLI,
        lambda t: _cli("--ckpt_path", str(_spec_ckpt(t / "evil.ckpt"))),
        ValueError,
        "refused class_path 'os.mkdir' in the generator spec of --ckpt_path",
    ),
    _c(
        "spec_calls_a_function_yaml",
        "YAML model.init_args.generator: {class_path: os.mkdir, init_args: {path: ...}}",
        CLI,
        lambda t: _cli(
            f"--model.init_args.generator={{class_path: os.mkdir, init_args: {{path: {t / 'code_ran'}}}}}"
        ),
        ValueError,
        "refused class_path 'os.mkdir' in a generator spec: it is a builtin_function_or_method, not an nn.Module subclass",
    ),
    _c(
        "spec_imports_a_new_module",
        "CFGRLModule(generator={'class_path': 'antigravity.Model'}) (importing it would open a browser)",
        CONSTRUCT,
        lambda t: CFGRLModule({"class_path": "antigravity.Model"}),
        ValueError,
        "refused class_path 'antigravity.Model' in a generator spec: its module 'antigravity' is not imported",
    ),
    # -- checkpoints of another module class
    _c(
        "ckpt_path_of_another_module_class",
        "cfgrl fit --config distill.yaml (CFGRLModule) --ckpt_path <a PretrainModule checkpoint>",
        CLI,
        lambda t: _cli(
            "--ckpt_path",
            str(
                _spec_ckpt(
                    t / "p.ckpt",
                    "lightning_cfgrl.models.AudioTokenTransformer",
                    "lightning_cfgrl.PretrainModule",
                )
            ),
        ),
        ValueError,
        "is a checkpoint of lightning_cfgrl.PretrainModule, not of lightning_cfgrl.training.module.CFGRLModule",
    ),
    _c(
        "resume_of_another_module_class",
        "Trainer.fit(CFGRLModule, ckpt_path=<a PretrainModule checkpoint>) (Python API, or --ckpt_path last)",
        RESUME,
        _resume_into_other_module,
        ValueError,
        "the checkpoint being restored is a checkpoint of lightning_cfgrl.training.pretrain.PretrainModule",
    ),
    # -- the CLI reports a constructor's own message last
    _c(
        "cli_constructor_error",
        "cfgrl fit with CFGDistillCallback guidance_scale: -1.0 in the YAML",
        CLI,
        lambda t: _cli(
            "--model.init_args.init_checkpoint=null",
            "--trainer.callbacks=[{class_path: lightning_cfgrl.CFGDistillCallback, init_args: {guidance_scale: -1.0}}]",
        ),
        ConfigError,  # the constructor's own message alone, not inside jsonargparse's Union report
        "guidance_scale must be a finite number >= 0, got -1.0",
    ),
    # -- merging
    _c(
        "merge_output_overwrites_input",
        "cfgrl merge --quality out/merged_lambda=0.50.ckpt --lambdas 0.5,0.75 --out out",
        MERGE,
        _merge_onto_input,
        ValueError,
        "is the output for lambda=0.5",
    ),
    _c(
        "merged_set_of_two_writes",
        "a merged_lambda=0.50.ckpt that is not the file its sidecar hashed (read by cfgrl evaluate --merged_dir)",
        LOAD,
        _mixed_merged_set,
        ValueError,
        "merged_lambda=0.50.ckpt does not match the recorded sha256",
    ),
    # -- the generator contract
    _c(
        "logits_vocab_minus_one",
        "a generator whose logits have V - 1 entries",
        STEP,
        lambda t: _wrong_logits_rollout("minus_one"),
        ValueError,
        "_WrongLogits returned logits of shape (4, 2, 1, 31), expected [B, K, S, V] = (4, 2, 1, 32)",
    ),
    _c(
        "logits_vocab_plus_three",
        "a generator whose logits have V + 3 entries",
        STEP,
        lambda t: _wrong_logits_rollout("plus_three"),
        ValueError,
        "_WrongLogits returned logits of shape (4, 2, 1, 35), expected [B, K, S, V] = (4, 2, 1, 32)",
    ),
    _c(
        "logits_one_codebook",
        "a 2-codebook generator whose logits have 1 codebook",
        STEP,
        lambda t: _wrong_logits_rollout("one_codebook"),
        ValueError,
        "_WrongLogits returned logits of shape (4, 1, 1, 32), expected [B, K, S, V] = (4, 2, 1, 32)",
    ),
    _c(
        "temperature_subnormal",
        "CFGRLModule(rollout={temperature: 1e-40})",
        CONSTRUCT,
        lambda t: _module(temperature=1e-40),
        ValueError,
        "rollout.temperature must be >= 1.18e-38 (the smallest normal float32), got 1e-40; for greedy decoding use top_k=1",
    ),
    _c(
        "embedder_zero_vectors",
        "DiversityRewardCallback with an embedder that returns all-zero vectors",
        STEP,
        lambda t: _diversity_loss(_Zero()),
        ValueError,
        "embedder _Zero returned 4 zero-norm embedding(s) of 4; cosine diversity is undefined for a zero vector",
    ),
    # -- files a resumed run rebuilds from
    _c(
        "teacher_file_changed_before_resume",
        "CFGDistillCallback(teacher={checkpoint: f}): f replaced between the run and its resume",
        RESUME,
        _teacher_file_changed,
        ValueError,
        "the file changed since the checkpoint was written, so the resumed run would use another teacher",
    ),
]


def _params() -> list[Any]:
    marks = lambda case: [pytest.mark.xfail(strict=True, reason=case.not_clean)] if case.not_clean else []  # noqa: E731
    return [pytest.param(case, id=case.id, marks=marks(case)) for case in CASES]


_OBSERVED: dict[str, str] = {}  # id -> what the case raised, kept for the docs table check


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # these tensors are tiny: a second intra-op thread only adds synchronisation on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path: Path) -> None:
    try:
        case.build(tmp_path)
    except Exception as err:  # noqa: BLE001 - recorded first, checked below
        raised: Exception | None = err
    else:
        raised = None
    _OBSERVED[case.id] = _describe(raised, tmp_path)
    assert not (tmp_path / "code_ran").exists()  # a refused pickle never ran
    assert isinstance(raised, case.error), f"{case.id}: expected {case.error.__name__}, got {raised!r}"
    assert case.match in str(raised), f"{case.id}: {raised}"


# ---------------------------------------------------------------------------------------- the table


def _describe(err: Exception | None, tmp: Path) -> str:
    """``Type: message`` on one line, the temp dir shown as ``<tmp>``, cut at 300 characters."""
    if err is None:
        return "no error"
    text = " ".join(f"{type(err).__name__}: {err}".replace(str(tmp), "<tmp>").split())
    return text if len(text) <= 300 else text[:300] + "…"


def observed(case: Case, tmp: Path) -> str:
    """What ``case`` raises today (from this session's run of it when there was one)."""
    if case.id in _OBSERVED:
        return _OBSERVED[case.id]
    try:
        case.build(tmp)
    except Exception as err:  # noqa: BLE001 - the table records whatever is raised
        return _describe(err, tmp)
    return "no error"


def all_cases() -> list[Case]:
    """This file's cases, then the reliability rules' (``tests/test_reliability_cases.py``)."""
    from tests.test_reliability_cases import CASES as RELIABILITY

    return [*CASES, *RELIABILITY]


def table() -> str:
    rows = ["| id | bad input | caught at | error (type: message) | clean? |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as root:
        for i, case in enumerate(all_cases()):
            tmp = Path(root) / str(i)
            tmp.mkdir()
            cells = [
                f"`{case.id}`",
                case.input,
                case.where,
                observed(case, tmp),
                f"no: {case.not_clean}" if case.not_clean else "yes",
            ]
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_docs_table_is_current() -> None:
    text = DOC.read_text()
    block = re.search(r"<!-- table:start -->\n(.*?)\n<!-- table:end -->", text, re.S)
    assert block, f"{DOC} has no table block"
    assert block.group(1) == table(), (
        "docs/bad_inputs.md is stale: regenerate with python -m tests.test_bad_inputs"
    )


@pytest.mark.parametrize(
    "load",
    ["init_checkpoint", "teacher_checkpoint", "embedder_checkpoint", "fit_ckpt_path", "load_from_checkpoint"],
)
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path: Path, load: str) -> None:
    """Every way a checkpoint enters a run loads it weights_only: the payload's os.mkdir never runs."""
    path = str(_malicious_ckpt(tmp_path / "evil.ckpt"))
    marker = tmp_path / "code_ran"
    with pytest.raises(Exception, match="(refused for safety|Weights only load failed)"):
        if load == "init_checkpoint":
            _module(init_checkpoint=path)
        elif load == "teacher_checkpoint":
            CFGDistillCallback(teacher=TeacherConfig(checkpoint=path)).setup(None, _module(), "fit")  # type: ignore[arg-type]
        elif load == "embedder_checkpoint":
            ContrastiveTokenEmbedder(checkpoint=path)
        elif load == "fit_ckpt_path":  # resuming: Lightning's own load (torch's weights_only default)
            trainer = pl.Trainer(
                accelerator="cpu",
                max_steps=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[CFGDistillCallback()],
            )
            trainer.fit(_module(), SyntheticPromptDataModule(batch_size=2), ckpt_path=path)
        else:
            CFGRLModule.load_from_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the detector works: an unsafe load does run the payload
    assert marker.exists()


if __name__ == "__main__":
    print(table())
