"""The objective callbacks' settings groups (issue 22): ``CFGDistillCallback(teacher=TeacherConfig)``,
``DiversityRewardCallback(gradient=DiversityGradientConfig, embedding=FrozenModelConfig)``.

* YAML nests them and the callbacks get the typed objects; each error names the group's field;
* a checkpoint written before the grouping resumes: what a checkpoint records of the callbacks (their
  state and their settings for the resume check) kept its names;
* a config with a flat argument of before is refused naming its new place.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cfgrl import (
    CFGDistillCallback,
    CFGRLModule,
    DiversityGradientConfig,
    DiversityRewardCallback,
    FrozenModelConfig,
    RewardCallback,
    TeacherConfig,
)
from lightning_cfgrl.cli.main import parse_error_cause
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.training import PolicyGradientConfig
from lightning_cfgrl.training.resume_check import OBJECTIVES_KEY
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import tiny_embedder, tiny_generator

BASE = dict(
    rollout={"num_frames": 8, "num_samples_per_prompt": 3},
    # constant: the 2-step run and its resume follow the same schedule as the 3-step run
    optimization={"learning_rate": 1e-2, "lr_warmup_steps": 0, "lr_decay": "constant"},
)
# What the code before the grouping recorded for these callbacks (CFGDistillCallback(teacher_chunk_size=2),
# DiversityRewardCallback(beta=1.0, baseline="other_pairs", log_grad_norm=True, grad_norm_every_n_steps=1,
# embed_batch_size=4)), read from its checkpoint: the settings a resume compares, and the state's keys.
FLAT_LAYOUT_OBJECTIVES = {
    "distill/divergence": "reverse_kl",
    "distill/guidance_scale": 3.0,
    "distill/reduction": "mean",
    "distill/teacher": "the generator at fit start",
    "distill/weight": 1.0,
    "diversity/advantage_norm": "batch",
    "diversity/baseline": "other_pairs",
    "diversity/beta": 1.0,
    "diversity/beta_scale": "per_token",
    "diversity/embedder": "lightning_cfgrl.embedders.contrastive.ContrastiveTokenEmbedder",
    "diversity/shuffle_rewards": False,
}
FLAT_LAYOUT_STATE = {
    "CFGDistillCallback": ["teacher"],
    "DiversityRewardCallback{'name': 'diversity'}": ["dead_reward_steps", "embedder", "running_baseline"],
}


def _callbacks(embedder_seed: int = 0) -> list:
    return [
        CFGDistillCallback(guidance_scale=3.0, teacher=TeacherConfig(chunk_size=2)),
        DiversityRewardCallback(
            tiny_embedder(embedder_seed),
            beta=1.0,
            gradient=DiversityGradientConfig(baseline="other_pairs", log_norm=True, log_norm_every_n_steps=1),
            embedding=FrozenModelConfig(chunk_size=4),
        ),
    ]


def _fit(steps: int, callbacks: list, dirpath: Path | None = None, ckpt: Path | None = None) -> CFGRLModule:
    saving = [ModelCheckpoint(dirpath=dirpath, save_last=True, every_n_train_steps=1)] if dirpath else []
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        enable_checkpointing=bool(saving),
        callbacks=[*callbacks, *saving],
    )
    module = CFGRLModule(tiny_generator(7 if ckpt else 0), **BASE)  # a resume gets its weights from ckpt
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4), ckpt_path=str(ckpt) if ckpt else None)
    assert trainer.global_step == steps
    return module


def test_a_checkpoint_of_the_flat_layout_resumes_as_it_was_recorded(tmp_path: Path) -> None:
    _fit(2, _callbacks(), dirpath=tmp_path)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint[OBJECTIVES_KEY] == FLAT_LAYOUT_OBJECTIVES
    states = {k: sorted(v) for k, v in checkpoint["callbacks"].items() if k in FLAT_LAYOUT_STATE}
    assert states == FLAT_LAYOUT_STATE
    # resumed into callbacks built from the groups (and another embedder: the checkpoint brings it back)
    resumed = _fit(3, _callbacks(embedder_seed=99), ckpt=tmp_path / "last.ckpt")
    straight = _fit(3, _callbacks())
    for name, weight in straight.generator.state_dict().items():
        assert torch.equal(resumed.generator.state_dict()[name], weight), name


def test_yaml_nests_the_groups_and_the_callbacks_get_the_typed_objects() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CFGDistillCallback, "distill")
    parser.add_class_arguments(DiversityRewardCallback, "diversity")
    config = parser.parse_object(
        {
            "distill": {"teacher": {"checkpoint": "base.ckpt", "dtype": "bfloat16", "chunk_size": 8}},
            "diversity": {
                "embedder": {"class_path": "torch.nn.Identity"},
                "gradient": {"baseline": "other_pairs", "shuffle_rewards": True, "log_norm": False},
                "embedding": {"chunk_size": 64, "embed_in_checkpoint": True},
            },
        }
    )
    built = parser.instantiate(config)
    assert built.distill.teacher_config == TeacherConfig(
        checkpoint="base.ckpt", dtype="bfloat16", chunk_size=8
    )
    assert built.distill.teacher_config.torch_dtype == torch.bfloat16
    diversity = built.diversity
    assert diversity.gradient == DiversityGradientConfig(
        baseline="other_pairs", shuffle_rewards=True, log_norm=False
    )
    assert diversity.embedding == FrozenModelConfig(chunk_size=64, embed_in_checkpoint=True)
    assert diversity.baseline_for(4) == "other_pairs" and diversity.log_norm is False


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: TeacherConfig(chunk_size=0), "teacher.chunk_size must be >= 1 or None"),
        (lambda: TeacherConfig(dtype="int8"), "teacher.dtype must be one of"),
        (lambda: FrozenModelConfig(chunk_size=0), "embedding.chunk_size must be >= 1 or None"),
        (lambda: DiversityGradientConfig(baseline="leave_one_out"), "gradient.baseline must be one of"),
        (lambda: PolicyGradientConfig(baseline="other_pairs"), "gradient.baseline must be one of"),
        (
            lambda: DiversityGradientConfig(log_norm_every_n_steps=0),
            "gradient.log_norm_every_n_steps must be",
        ),
        (lambda: DiversityGradientConfig(advantage_norm="std"), "gradient.advantage_norm must be one of"),
        (lambda: DiversityGradientConfig(beta_scale="sum"), "gradient.beta_scale must be 'per_token' or"),
    ],
)
def test_a_bad_setting_is_named_with_its_group(build, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_each_callback_takes_only_its_own_settings_objects() -> None:
    """The diversity reward's baselines are not another reward's: the two gradient groups do not mix."""
    with pytest.raises(TypeError, match="takes a PolicyGradientConfig, got a DiversityGradientConfig"):
        RewardCallback(
            [lambda inputs: inputs.tokens.float().mean((1, 2))], gradient=DiversityGradientConfig()
        )
    with pytest.raises(
        TypeError,
        match="gradient must be a DiversityGradientConfig, a dict of its fields or None, got Policy",
    ):
        DiversityRewardCallback(torch.nn.Identity(), gradient=PolicyGradientConfig())
    with pytest.raises(TypeError, match="embedding must be a FrozenModelConfig"):
        DiversityRewardCallback(torch.nn.Identity(), embedding=TeacherConfig())
    with pytest.raises(TypeError, match="teacher must be a TeacherConfig"):
        CFGDistillCallback(teacher=FrozenModelConfig())  # type: ignore[arg-type]


def test_a_dict_of_a_groups_fields_builds_the_group_and_an_unknown_field_is_named() -> None:
    """The Python shorthand of CFGRLModule's groups holds for the callbacks' groups too."""
    assert CFGDistillCallback(teacher={"checkpoint": "base.ckpt"}).teacher_config == TeacherConfig(
        checkpoint="base.ckpt"
    )
    reward = DiversityRewardCallback(
        torch.nn.Identity(), gradient={"baseline": "running_mean"}, embedding={"chunk_size": 4}
    )
    assert reward.gradient == DiversityGradientConfig(baseline="running_mean")
    assert reward.embedding == FrozenModelConfig(chunk_size=4)
    with pytest.raises(ValueError, match=r"teacher has no setting\(s\) \['checkpoints'\]"):
        CFGDistillCallback(teacher={"checkpoints": "base.ckpt"})


@pytest.mark.parametrize(
    "class_path, old, new",
    [
        ("lightning_cfgrl.CFGDistillCallback", "teacher_checkpoint", "teacher.checkpoint"),
        ("lightning_cfgrl.training.distill.CFGDistillCallback", "teacher_dtype", "teacher.dtype"),
        ("lightning_cfgrl.DiversityRewardCallback", "baseline", "gradient.baseline"),
        ("lightning_cfgrl.DiversityRewardCallback", "log_grad_norm", "gradient.log_norm"),
        ("lightning_cfgrl.DiversityRewardCallback", "embed_batch_size", "embedding.chunk_size"),
    ],
)
def test_a_config_with_a_flat_setting_of_before_names_its_new_place(
    class_path: str, old: str, new: str
) -> None:
    report = f"Problem with given class_path '{class_path}':\n  Option '{old}' is not accepted"
    assert parse_error_cause(report).endswith(
        f"Option '{old}' is not accepted; {old} is {new} now "
        f"(init_args: {{{new.split('.')[0]}: {{{new.split('.')[1]}: ...}}}})"
    )
