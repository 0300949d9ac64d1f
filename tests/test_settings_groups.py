"""CFGRLModule's settings groups (``training/configs.py``): typed, validated by name, recorded in
checkpoints as plain dicts, and checkpoints of the earlier flat layout load, sample and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cfgrl import (
    CFGDistillCallback,
    CFGRLModule,
    OptimizationConfig,
    RolloutConfig,
    ValidationConfig,
)
from lightning_cfgrl.audio.generation import checkpoint_num_frames
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.training.configs import FLAT_TO_GROUPED, group_settings, upgrade_hparams
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import tiny_generator

SETTINGS: dict[str, Any] = dict(
    rollout={"num_frames": 8, "num_samples_per_prompt": 2},
    optimization={"learning_rate": 1e-2, "lr_warmup_steps": 0},
)


def flat_layout(hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` as a checkpoint written before the grouping recorded them (the inverse mapping)."""
    out = {k: v for k, v in hparams.items() if k not in ("rollout", "optimization", "validation")}
    for flat, grouped in FLAT_TO_GROUPED.items():
        group, field = grouped.split(".")
        if field in hparams.get(group, {}):
            out[flat] = hparams[group][field]
    return out


def _fit(tmp: Path, steps: int, module: CFGRLModule, ckpt: Path | None = None) -> Any:
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[CFGDistillCallback(), ModelCheckpoint(dirpath=tmp, save_last=True, every_n_train_steps=1)],
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4), ckpt_path=str(ckpt) if ckpt else None)
    return trainer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a checkpoint of the grouped layout, the same checkpoint in the flat layout)."""
    tmp = tmp_path_factory.mktemp("run")
    _fit(tmp, 2, CFGRLModule(tiny_generator(), **SETTINGS))
    ckpt = load_checkpoint(tmp / "last.ckpt")
    ckpt["hyper_parameters"] = flat_layout(dict(ckpt["hyper_parameters"]))
    assert "num_samples_per_prompt" in ckpt["hyper_parameters"] and "rollout" not in ckpt["hyper_parameters"]
    torch.save(ckpt, tmp / "flat.ckpt")
    return tmp / "last.ckpt", tmp / "flat.ckpt"


def test_a_checkpoint_records_the_groups_as_plain_dicts(checkpoints: tuple[Path, Path]) -> None:
    hparams = load_checkpoint(checkpoints[0])["hyper_parameters"]  # weights-only load: plain values
    assert hparams["rollout"] == {
        "num_frames": 8,
        "num_samples_per_prompt": 2,
        "temperature": 1.0,
        "top_k": None,
        "top_p": None,
    }
    assert hparams["optimization"] == {
        "optimizer": None,
        "scheduler": None,
        "learning_rate": 1e-2,
        "lr_warmup_steps": 0,
        "lr_decay": "cosine",
    }
    assert hparams["validation"] == {"samples_per_prompt": 4, "scorers": None}


def test_a_flat_layout_checkpoint_loads_with_the_same_settings(checkpoints: tuple[Path, Path]) -> None:
    grouped, flat = (CFGRLModule.load_from_checkpoint(path) for path in checkpoints)
    assert dict(flat.hparams) == dict(grouped.hparams)
    assert flat.rollout_config == RolloutConfig(num_frames=8, num_samples_per_prompt=2)
    assert flat.optimization == OptimizationConfig(learning_rate=1e-2, lr_warmup_steps=0)
    for key, value in grouped.generator.state_dict().items():
        assert torch.equal(value, flat.generator.state_dict()[key])
    assert checkpoint_num_frames(str(checkpoints[1])) == checkpoint_num_frames(str(checkpoints[0])) == 8


def test_a_flat_layout_checkpoint_resumes(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = _fit(tmp_path, 3, CFGRLModule(tiny_generator(seed=5), **SETTINGS), checkpoints[1])
    assert trainer.global_step == 3


def test_a_flat_layout_checkpoint_refuses_a_changed_setting_by_its_grouped_name(
    checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    changed = group_settings({**SETTINGS, "learning_rate": 5e-2})
    with pytest.raises(ValueError, match="resume refused") as err:
        _fit(tmp_path, 3, CFGRLModule(tiny_generator(), **changed), checkpoints[1])
    assert "optimization.learning_rate: 0.01 (checkpoint) vs 0.05 (now)" in str(err.value)


def test_an_optimizer_set_in_code_is_still_a_changed_setting(
    checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    """The checkpoint recorded ``optimizer: None``; a callable is not recorded but still compared."""
    changed = group_settings({**SETTINGS, "optimizer": lambda params: torch.optim.SGD(params, lr=0.1)})
    with pytest.raises(ValueError, match="optimization.optimizer: None \\(checkpoint\\) vs '<function set"):
        _fit(tmp_path, 3, CFGRLModule(tiny_generator(), **changed), checkpoints[0])


def test_upgrade_hparams_moves_only_a_flat_cfgrl_module_record() -> None:
    flat = {"generator": {"class_path": "x"}, "num_frames": 8, "num_samples_per_prompt": 2, "seed": 1}
    flat |= {"learning_rate": 0.1, "val_samples_per_prompt": 3, "optimizer": None, "top_k": None}
    assert upgrade_hparams(flat) == {
        "generator": {"class_path": "x"},
        "seed": 1,
        "rollout": {"num_frames": 8, "num_samples_per_prompt": 2, "top_k": None},
        "optimization": {"learning_rate": 0.1, "optimizer": None},
        "validation": {"samples_per_prompt": 3},
    }
    pretrain = {"generator": {"class_path": "x"}, "learning_rate": 0.003, "condition_dropout": 0.2}
    assert upgrade_hparams(pretrain) == pretrain  # PretrainModule's flat settings stay flat
    grouped = {"rollout": {"num_frames": 8}, "seed": 0}
    assert upgrade_hparams(grouped) == grouped


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rollout": {"num_frames": 0}}, ValueError, "rollout.num_frames must be >= 1, got 0"),
        ({"rollout": {"num_frames": 2.5}}, TypeError, "rollout.num_frames must be an integer"),
        ({"rollout": {"top_p": 2.0}}, ValueError, "rollout.top_p must be in"),
        ({"rollout": {"frames": 8}}, ValueError, "rollout has no setting(s) ['frames']"),
        ({"optimization": {"lr_decay": "cosin"}}, ValueError, "optimization.lr_decay must be one of"),
        ({"optimization": {"lr_warmup_steps": -1}}, ValueError, "optimization.lr_warmup_steps must be >= 0"),
        ({"validation": {"samples_per_prompt": 0}}, ValueError, "validation.samples_per_prompt must be >= 1"),
        ({"validation": [4]}, TypeError, "validation must be a ValidationConfig or a dict of its fields"),
    ],
)
def test_each_setting_is_checked_where_it_enters_and_named_with_its_group(kwargs, error, message) -> None:
    with pytest.raises(error) as err:
        CFGRLModule(tiny_generator(), **kwargs)
    assert message in str(err.value)


def test_the_objects_and_their_dicts_are_the_same_settings() -> None:
    a = CFGRLModule(tiny_generator(), rollout=RolloutConfig(num_frames=8), validation=ValidationConfig(4))
    b = CFGRLModule(tiny_generator(), rollout={"num_frames": 8}, validation={"samples_per_prompt": 4})
    assert dict(a.hparams) == dict(b.hparams)
    assert a.rollout_sampling == b.rollout_sampling


def test_a_flat_layout_checkpoint_still_refuses_an_optimizer_set_in_code(
    checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    changed = group_settings({**SETTINGS, "optimizer": lambda params: torch.optim.SGD(params, lr=0.1)})
    with pytest.raises(ValueError, match="optimization.optimizer: None \\(checkpoint\\) vs '<function set"):
        _fit(tmp_path, 3, CFGRLModule(tiny_generator(), **changed), checkpoints[1])
