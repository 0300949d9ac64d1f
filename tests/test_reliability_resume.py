"""Rules 5 and 2: a resumed run records what it did; paths stored in files are data.

* a resume whose training settings (module or objective callbacks) differ from the checkpoint's is
  refused, every differing setting named with both values, through ``Trainer.fit(ckpt_path=)`` and
  ``cfgrl fit --ckpt_path`` (which would otherwise drop the new value silently);
* a weights-only (merged) checkpoint cannot resume and says so;
* a checkpoint holding every weight never re-reads its ``init_checkpoint``; a stored path opens only a
  regular file, beside the checkpoint; a directory, a symlink loop, a FIFO are named as such.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import SingleDeviceStrategy

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DiversityGradientConfig
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import CheckpointError, load_checkpoint, load_generator_state
from lightning_cfgrl.training.configs import group_settings
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import RecordPrompts, tiny_embedder, tiny_generator

BASE: dict[str, Any] = dict(
    rollout={"num_frames": 8, "num_samples_per_prompt": 2},
    optimization={"learning_rate": 1e-2, "lr_warmup_steps": 0},
)


def _callbacks(guidance: float = 3.0, beta: float | None = None) -> list:
    out: list = [CFGDistillCallback(guidance_scale=guidance)]
    if beta is not None:
        out.append(
            DiversityRewardCallback(
                tiny_embedder(), beta=beta, gradient=DiversityGradientConfig(baseline="running_mean")
            )
        )
    return out


def _fit(tmp: Path, steps: int, module: CFGRLModule, callbacks: list, ckpt: Path | None = None) -> Any:
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[*callbacks, ModelCheckpoint(dirpath=tmp, save_last=True, every_n_train_steps=1)],
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4), ckpt_path=str(ckpt) if ckpt else None)
    return trainer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    _fit(tmp, 2, CFGRLModule(tiny_generator(), **BASE), _callbacks(beta=1.0))
    return tmp / "last.ckpt"


CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # id: (module overrides, callback overrides, what the message names)
    "learning_rate": (
        {"learning_rate": 5e-2},
        {},
        "optimization.learning_rate: 0.01 (checkpoint) vs 0.05 (now)",
    ),
    "schedule": (
        {"lr_decay": "linear"},
        {},
        "optimization.lr_decay: 'cosine' (checkpoint) vs 'linear' (now)",
    ),
    "warmup": ({"lr_warmup_steps": 5}, {}, "optimization.lr_warmup_steps: 0 (checkpoint) vs 5 (now)"),
    "G": ({"num_samples_per_prompt": 4}, {}, "rollout.num_samples_per_prompt: 2 (checkpoint) vs 4 (now)"),
    "temperature": ({"temperature": 0.7}, {}, "rollout.temperature: 1.0 (checkpoint) vs 0.7 (now)"),
    "seed": ({"seed": 3}, {}, "seed: 0 (checkpoint) vs 3 (now)"),
    "model_shape": ({"generator": {"dim": 64}}, {}, "generator.init_args.dim: 32 (checkpoint) vs 64 (now)"),
    "optimizer": (
        {"optimizer": "sgd"},
        {},
        "optimization.optimizer: None (checkpoint) vs",
    ),
    "guidance": ({}, {"guidance": 5.0}, "distill/guidance_scale: 3.0 (checkpoint) vs 5.0 (now)"),
    "beta": ({}, {"beta": 2.0}, "diversity/beta: 1.0 (checkpoint) vs 2.0 (now)"),
    "recipe": ({}, {"beta": None}, "diversity/beta: 1.0 (checkpoint) vs '<unset>' (now)"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_resume_with_a_changed_setting_is_refused_by_name(
    change: str, checkpoint: Path, tmp_path: Path
) -> None:
    module_kw, callback_kw, named = CHANGES[change]
    flat = {k: v for k, v in module_kw.items() if k != "generator"}
    if "optimizer" in module_kw:
        flat["optimizer"] = lambda params: torch.optim.SGD(params, lr=0.1)
    generator = tiny_generator(**module_kw.get("generator", {}))
    module = CFGRLModule(generator, **group_settings({**BASE, **flat}))
    callbacks = _callbacks(callback_kw.get("guidance", 3.0), callback_kw.get("beta", 1.0))
    with pytest.raises(ValueError, match="resume refused") as err:
        _fit(tmp_path, 4, module, callbacks, checkpoint)
    assert named in str(err.value), str(err.value)
    assert "init_checkpoint=<the checkpoint>" in str(err.value)


def test_a_resume_with_the_same_settings_continues(checkpoint: Path, tmp_path: Path) -> None:
    trainer = _fit(tmp_path, 3, CFGRLModule(tiny_generator(seed=5), **BASE), _callbacks(beta=1.0), checkpoint)
    assert trainer.global_step == 3


def test_a_weights_only_checkpoint_cannot_resume(checkpoint: Path, tmp_path: Path) -> None:
    """A merged checkpoint has no optimizer or loop state: Lightning raised a raw KeyError."""
    ckpt = load_checkpoint(checkpoint)
    merged = {k: v for k, v in ckpt.items() if k not in ("optimizer_states", "lr_schedulers", "loops")}
    torch.save(merged, tmp_path / "merged.ckpt")
    with pytest.raises(
        ValueError, match="holds weights only .* cannot resume a run; start a new run from its"
    ):
        _fit(
            tmp_path, 4, CFGRLModule(tiny_generator(), **BASE), _callbacks(beta=1.0), tmp_path / "merged.ckpt"
        )


def test_cli_resume_with_a_changed_setting_is_refused_not_silently_replaced(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lightning_cfgrl.cli.main import main

    config = tmp_path / "c.yaml"
    config.write_text(
        "model:\n  class_path: lightning_cfgrl.CFGRLModule\n  init_args:\n"
        "    generator: {class_path: lightning_cfgrl.models.AudioTokenTransformer, init_args: {num_codebooks: 2, "
        "vocab_size: 32, condition_sizes: [4, 4, 3], dim: 32, num_layers: 1, num_heads: 2, max_frames: 8}}\n"
        "    rollout: {num_frames: 8, num_samples_per_prompt: 2}\n"
        "    optimization: {learning_rate: 0.05, lr_warmup_steps: 0}\n"
        "data: {class_path: lightning_cfgrl.experiments.SyntheticPromptDataModule, init_args: {batch_size: 4}}\n"
        "trainer: {accelerator: cpu, max_steps: 3, logger: false, enable_progress_bar: false, "
        "limit_val_batches: 0, callbacks: [{class_path: lightning_cfgrl.CFGDistillCallback}]}\n"
    )
    code = main(["fit", "--config", str(config), "--ckpt_path", str(checkpoint)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert "optimization.learning_rate: 0.01 (checkpoint) vs 0.05 (now)" in last, last
    assert "1 training setting(s)" in last, last  # 'pkg.Class' in the config is the recorded 'pkg.mod.Class'


# ------------------------------------------------------------------------------ stored paths (rule 2)


def _with_init_checkpoint(checkpoint: Path, tmp: Path, stored: str) -> Path:
    ckpt = load_checkpoint(checkpoint)
    ckpt["hyper_parameters"]["init_checkpoint"] = stored
    torch.save(ckpt, tmp / "full.ckpt")
    return tmp / "full.ckpt"


def test_a_full_checkpoint_never_rereads_its_init_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # reading it would block forever
    for stored in ("gone.ckpt", str(tmp_path / "fifo"), str(tmp_path)):
        path = _with_init_checkpoint(checkpoint, tmp_path, stored)
        module = CFGRLModule.load_from_checkpoint(path)
        assert module.init_checkpoint == stored  # recorded, not read
        state = load_generator_state(checkpoint)
        assert all(torch.equal(v, state[k]) for k, v in module.generator.state_dict().items())


@pytest.mark.parametrize("kind", ["directory", "symlink_loop", "fifo", "dangling_symlink", "missing"])
def test_a_stored_path_opens_only_a_regular_file_and_says_what_it_is(kind: str, tmp_path: Path) -> None:
    from lightning_cfgrl.io.checkpoints import resolve_stored_path

    path = tmp_path / "x.ckpt"
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink_loop":
        os.symlink(tmp_path / "y.ckpt", path)
        os.symlink(path, tmp_path / "y.ckpt")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling_symlink":
        os.symlink(tmp_path / "nowhere.ckpt", path)
    said = {
        "directory": "is a directory",
        "symlink_loop": "is a symlink loop",
        "fifo": "is a FIFO, not a regular file; refused unopened",
        "dangling_symlink": "is a symlink to",
        "missing": "does not exist",
    }[kind]
    with pytest.raises(CheckpointError, match=said):
        resolve_stored_path("x.ckpt", tmp_path / "run.ckpt", "init_checkpoint")
    with pytest.raises(CheckpointError, match=said):  # every loader goes through the same check
        load_checkpoint(path)


def test_a_relative_stored_path_resolves_beside_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_cfgrl.io.checkpoints import resolve_stored_path

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "base.ckpt").write_bytes(b"beside")
    (tmp_path / "base.ckpt").write_bytes(b"cwd")
    monkeypatch.chdir(tmp_path)
    found = resolve_stored_path("base.ckpt", tmp_path / "run" / "last.ckpt", "init_checkpoint")
    assert found.read_bytes() == b"beside"


def test_a_resume_with_zero_batches_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    """Zero work when resuming: checked once the loops are restored (the data order resumes from them)."""
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=_callbacks(beta=1.0))
    module = CFGRLModule(tiny_generator(), **BASE)
    with pytest.raises(
        ValueError, match="the training data gives zero batches per epoch: a dataset of 36 item"
    ):
        trainer.fit(
            module,
            SyntheticPromptDataModule(batch_size=64, split=PromptSplit(repeats=1)),
            ckpt_path=str(checkpoint),
        )
    assert trainer.global_step == 2  # the checkpoint's step: nothing trained


@pytest.mark.slow  # two 2-step fits through the CLI
def test_cli_resume_from_last_with_a_changed_shape_names_the_setting_not_init_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """``--ckpt_path last`` is resolved to the run's ``last.ckpt`` before the model is built, so the config's
    changed generator is refused as a resume setting; before, building the new shape from the config's
    ``init_checkpoint`` failed first and the error blamed ``init_checkpoint``."""
    from lightning_cfgrl.cli.main import main

    configs = Path(__file__).resolve().parents[1] / "examples" / "configs"
    short = ["--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"]
    monkeypatch.chdir(tmp_path)
    assert (
        main(["fit", "--config", str(configs / "pretrain.yaml"), *short, "--data.init_args.num_train=256"])
        == 0
    )
    distill = ["fit", "--config", str(configs / "distill.yaml"), *short, "--data.init_args.batch_size=4"]
    distill += ["--model.init_args.validation.samples_per_prompt=2"]
    assert main(distill) == 0
    capsys.readouterr()
    assert main([*distill, "--ckpt_path", "last", "--model.init_args.generator.init_args.dim=32"]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--ckpt_path runs/distill/checkpoints/last.ckpt" in last, last
    assert "generator.init_args.dim: 64 (checkpoint) vs 32 (now)" in last, last
    assert "init_checkpoint 'runs/base" not in last, last


class _RestoresAfterSetup(SingleDeviceStrategy):
    """Restores the checkpoint after ``on_fit_start``, as ModelParallelStrategy, FSDP and DeepSpeed do."""

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True


@pytest.mark.parametrize("late_restore", [False, True], ids=["default", "restores_after_setup"])
def test_a_resume_continues_the_data_order_whenever_the_strategy_restores(
    late_restore: bool, tmp_path: Path
) -> None:
    """The resumed step trains on the batch the uninterrupted run trains on at that step. A strategy that
    restores after setup learns the checkpoint path after ``on_fit_start``; the zero-work check built the
    loaders there, before the loops were restored, and the resumed run restarted at the epoch's first batch
    (what made the FSDP resume test differ by ~1e-3)."""
    recorded = []
    for steps, ckpt in ((3, None), (2, None), (3, tmp_path / "last.ckpt")):
        recorder = RecordPrompts()
        strategy: Any = _RestoresAfterSetup(torch.device("cpu")) if late_restore else "auto"
        saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
        trainer = quiet_trainer(
            max_steps=steps,
            limit_val_batches=0,
            strategy=strategy,
            enable_checkpointing=steps == 2,  # only the run that writes the checkpoint, into tmp_path
            default_root_dir=tmp_path,
            callbacks=[*_callbacks(beta=1.0), recorder, *([saver] if steps == 2 else [])],
        )
        data = SyntheticPromptDataModule(batch_size=4, split=PromptSplit(shuffle_seed=0))
        trainer.fit(CFGRLModule(tiny_generator(), **BASE), data, ckpt_path=str(ckpt) if ckpt else None)
        recorded.append(recorder.prompts)
    uninterrupted, _, resumed = recorded
    assert len(uninterrupted) == 3 and len(resumed) == 1
    assert torch.equal(resumed[0], uninterrupted[2]), (resumed[0].tolist(), uninterrupted[2].tolist())


def test_zero_work_is_still_an_error_when_the_strategy_restores_after_setup() -> None:
    trainer = quiet_trainer(
        max_steps=2,
        limit_val_batches=0,
        strategy=_RestoresAfterSetup(torch.device("cpu")),
        callbacks=_callbacks(),
    )
    with pytest.raises(ValueError, match="a dataset of 36 item\\(s\\) in batches of 64 with drop_last=True"):
        trainer.fit(
            CFGRLModule(tiny_generator(), **BASE),
            SyntheticPromptDataModule(batch_size=64, split=PromptSplit(repeats=1)),
        )
    assert trainer.global_step == 0


def test_cli_resume_rebuilds_a_teacher_copied_from_the_init_checkpoint(
    checkpoint: Path, tmp_path: Path
) -> None:
    """``cfgrl fit --ckpt_path`` builds the student without reading ``init_checkpoint`` (the checkpoint
    restores it); the teacher copied from the student in ``setup`` is still that file's weights (it was
    refused as "not loaded from a file"), and 2 steps + a resume to 3 end where 3 steps in one go do (a constant rate: a cosine schedule
    depends on max_steps)."""
    from lightning_cfgrl.cli.main import main

    def config(out: Path, steps: int) -> Path:
        path = out / "c.yaml"
        path.write_text(
            "model:\n  class_path: lightning_cfgrl.CFGRLModule\n  init_args:\n"
            "    generator: {class_path: lightning_cfgrl.models.AudioTokenTransformer, init_args: {num_codebooks: 2, "
            "vocab_size: 32, condition_sizes: [4, 4, 3], dim: 32, num_layers: 1, num_heads: 2, max_frames: 8}}\n"
            f"    init_checkpoint: {checkpoint}\n"
            "    rollout: {num_frames: 8, num_samples_per_prompt: 2}\n"
            "    optimization: {learning_rate: 0.01, lr_warmup_steps: 0, lr_decay: constant}\n"
            "data: {class_path: lightning_cfgrl.experiments.SyntheticPromptDataModule, init_args: {batch_size: 4}}\n"
            f"trainer: {{accelerator: cpu, max_steps: {steps}, logger: false, enable_progress_bar: false, "
            f"default_root_dir: '{out}', "
            "limit_val_batches: 0, callbacks: [{class_path: lightning_cfgrl.CFGDistillCallback}, "
            "{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
            f"init_args: {{dirpath: '{out}', save_last: true, every_n_train_steps: 1}}}}]}}\n"
        )
        return path

    (once := tmp_path / "once").mkdir()
    (resumed := tmp_path / "resumed").mkdir()
    assert main(["fit", "--config", str(config(once, 3))]) == 0
    assert main(["fit", "--config", str(config(resumed, 2))]) == 0
    assert main(["fit", "--config", str(config(resumed, 3)), "--ckpt_path", str(resumed / "last.ckpt")]) == 0
    a, b = load_generator_state(once / "last.ckpt"), load_generator_state(resumed / "last.ckpt")
    assert load_checkpoint(resumed / "last.ckpt")["global_step"] == 3
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
