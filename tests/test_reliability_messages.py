"""Rules 7 and 9: zero work is an error, and the last line a user sees names the problem.

* a fit that would train zero steps fails before it starts, naming the sizes (every way to get there);
* ``cfgrl fit`` parse errors (misspelled option, callback name, Literal value, wrong type) end with one
  line naming the option and the cause;
* failed writes are one OSError naming the file; Python API type errors are caught where they enter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, SamplingConfig, sample
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import atomic_save, atomic_save_json
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import tiny_generator

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


# ---------------------------------------------------------------------------------- zero work (rule 7)


@pytest.mark.parametrize(
    "how,named",
    [
        ("batch_larger_than_split", "a dataset of 36 item(s) in batches of 64 with drop_last=True"),
        ("max_steps_0", "Trainer(max_steps=0) would train zero steps"),
        ("max_epochs_0", "Trainer(max_epochs=0) would train zero steps"),
        ("limit_train_batches_0", "Trainer(limit_train_batches=0) would train zero steps"),
    ],
)
def test_a_fit_of_zero_steps_fails_before_it_starts(how: str, named: str, tmp_path: Path) -> None:
    """The issue's example: a prompt batch larger than the training split exited 0 after no step."""
    trainer_kw: dict[str, Any] = {"max_steps": 2}
    batch = 4
    if how == "batch_larger_than_split":
        batch = 64
    elif how == "max_steps_0":
        trainer_kw["max_steps"] = 0
    elif how == "max_epochs_0":
        trainer_kw = {"max_epochs": 0}
    else:
        trainer_kw["limit_train_batches"] = 0
    trainer = quiet_trainer(limit_val_batches=0, callbacks=[CFGDistillCallback()], **trainer_kw)
    with pytest.raises(ValueError, match="zero") as err:
        trainer.fit(
            CFGRLModule(tiny_generator(), rollout={"num_frames": 8}),
            SyntheticPromptDataModule(batch_size=batch, split=PromptSplit(repeats=1)),
        )
    assert named in str(err.value), str(err.value)
    assert trainer.global_step == 0


def test_pretraining_of_zero_steps_fails_too() -> None:
    from lightning_cfgrl import PretrainModule
    from lightning_cfgrl.experiments import SyntheticMusicDataModule

    trainer = quiet_trainer(max_steps=0, limit_val_batches=0)
    with pytest.raises(ValueError, match=r"Trainer\(max_steps=0\) would train zero steps"):
        trainer.fit(PretrainModule(tiny_generator()), SyntheticMusicDataModule(batch_size=4))


# ------------------------------------------------------------------------------ parse errors (rule 9)


@pytest.mark.parametrize(
    "arg,last",
    [
        ("--trainer.max_stepz=1", "unrecognized arguments: --trainer.max_stepz=1"),
        (
            "--trainer.callbacks+=lightning_cfgrl.CFGDistillCallbak",
            "trainer.callbacks: class_path 'lightning_cfgrl.CFGDistillCallbak': module 'lightning_cfgrl' has no "
            "attribute 'CFGDistillCallbak'",
        ),
        (
            "--model.init_args.optimization.lr_decay=cosin",
            "model.optimization.lr_decay: class_path 'lightning_cfgrl.CFGRLModule': Expected a typing.Literal['cosine', "
            "'linear', 'constant']. Got value: cosin",
        ),
        (
            "--model.init_args.rollout.num_frames=abc",
            "model.rollout.num_frames: class_path 'lightning_cfgrl.CFGRLModule': Expected a <class 'int'>. Got value: abc",
        ),
        ("--model.init_args.learning_rat=0.1", "Option 'learning_rat' is not accepted"),
    ],
    ids=["misspelled_option", "callback_name", "literal", "wrong_type", "misspelled_model_option"],
)
def test_parse_errors_end_with_the_option_and_the_cause(
    arg: str, last: str, capsys: pytest.CaptureFixture
) -> None:
    from lightning_cfgrl.cli.main import main

    with pytest.raises(SystemExit) as code:
        main(["fit", "--config", str(CONFIGS / "distill.yaml"), arg])
    assert code.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last in line, line
    assert "Given value" not in line


# ------------------------------------------------------------------------ Python API types (rule 9)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: CFGRLModule(tiny_generator(), rollout={"num_frames": 8, "top_k": 2.5}),
            "top_k must be an integer or None, got 2.5",
        ),
        (
            lambda: CFGRLModule(tiny_generator(), rollout={"num_frames": 2.5}),
            "num_frames must be an integer, got 2.5 (float)",
        ),
        (
            lambda: CFGRLModule(
                tiny_generator(), rollout={"num_frames": 8}, optimization={"learning_rate": "1e-3"}
            ),
            "learning_rate must be a real number, got '1e-3' (str); pass the number 1e-3, not a string",
        ),
        (
            lambda: CFGRLModule(tiny_generator(), rollout={"num_frames": 8, "num_samples_per_prompt": True}),
            "got True (bool)",
        ),
        (lambda: SamplingConfig(temperature="hot"), "temperature must be a real number, got 'hot'"),
        (lambda: sample(tiny_generator(), torch.tensor([[1, 1, 1]]), 2.5), "num_frames must be an integer"),
    ],
    ids=[
        "top_k_float",
        "num_frames_float",
        "learning_rate_string",
        "samples_bool",
        "temperature_string",
        "sample_frames",
    ],
)
def test_python_api_type_errors_are_caught_where_they_enter(call: Any, message: str) -> None:
    with pytest.raises(TypeError) as err:
        call()
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: sample(tiny_generator(), torch.tensor([[1, 1, 1]]), 4, seed=2**70),
            "seed must be an integer in",
        ),
        (
            lambda: sample(tiny_generator(), torch.zeros(0, 3, dtype=torch.long), 4),
            "the condition batch is empty (0 prompts)",
        ),
    ],
    ids=["seed_2_70", "empty_condition"],
)
def test_out_of_range_values_are_named(call: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value), str(err.value)


def test_generate_names_a_device_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lightning_cfgrl.cli.generate import generate_main

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the unavailable-device case cannot be shown")
    code = generate_main(
        ["--checkpoint", "x.ckpt", "--prompts", "[[1, 1, 1]]", "--out", str(tmp_path), "--device", "cuda"]
    )
    assert code == 2
    assert (
        "device 'cuda' was asked for, but cuda is not available" in capsys.readouterr().err.splitlines()[-1]
    )


def test_generate_refuses_nan_weights_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The issue's example: generate of a checkpoint with NaN weights exited 0 with only token V-1."""
    from lightning_cfgrl.cli.generate import generate_main
    from lightning_cfgrl.eval.plan import load_candidate

    generator = tiny_generator()
    with torch.no_grad():
        generator.heads.bias.fill_(float("nan"))
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    ckpt = tmp_path / "nan.ckpt"
    torch.save(
        {"state_dict": state, "hyper_parameters": {"generator": generator.spec(), "num_frames": 8}}, ckpt
    )
    code = generate_main(
        ["--checkpoint", str(ckpt), "--prompts", "[[1, 1, 1]]", "--out", str(tmp_path / "o")]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "non-finite weights in checkpoint" in last and "heads.bias" in last, last
    assert not (tmp_path / "o" / "tokens.safetensors").exists()
    with pytest.raises(ValueError, match="non-finite weights"):  # evaluate loads candidates the same way
        load_candidate(str(ckpt))


# ---------------------------------------------------------------------------- OS errors (rule 9)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; run as a user to test")
def test_a_read_only_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError, match=f"cannot write {folder / 'x.json'}: Permission denied"):
            atomic_save_json({}, folder / "x.json")
    finally:
        folder.chmod(0o700)


def test_a_failed_write_is_one_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk as a RuntimeError without the path; it becomes one OSError."""

    def full(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(torch, "save", full)
    (tmp_path / "last.ckpt").write_bytes(b"old")
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'last.ckpt'}: torch.save failed") as err:
        atomic_save({"a": 1}, tmp_path / "last.ckpt")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert (tmp_path / "last.ckpt").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left
