"""Rule 1: nothing named in a file imports anything, at any depth, through any entry point.

A module with an import side effect (it creates a marker file) sits on ``sys.path`` but is not
imported. Checkpoints name it at every position a stored hyperparameter can hold a name that Lightning,
jsonargparse or our loaders would resolve; every entry point must refuse the file, naming the position,
without importing the module.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_cfgrl import CFGRLModule
from lightning_cfgrl.io.specs import UnsafeSpecError, check_no_imports
from tests.helpers.tiny_fit import tiny_generator

MARKER = "imported.marker"


@pytest.fixture
def side_effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of an importable, not yet imported module whose import writes ``tmp_path/MARKER``."""
    name = f"cfgrl_side_effect_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(tmp_path / MARKER)!r}).write_text('ran')\n"
        "import torch\nclass Thing(torch.nn.Module):\n    pass\ndef fn(*a, **k):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield name
    sys.modules.pop(name, None)


def _positions(name: str) -> dict[str, Callable[[dict[str, Any]], None]]:
    """Every place a name can sit in stored hyperparameters: position id -> how to put it there."""
    spec = {"class_path": f"{name}.Thing", "init_args": {}}

    def gen_init_arg(h: dict) -> None:
        h["generator"]["init_args"]["extra"] = spec

    def gen_init_arg_list(h: dict) -> None:
        h["generator"]["init_args"]["extra"] = [1, {"x": [spec]}]

    def gen_dict_kwargs(h: dict) -> None:
        h["generator"]["dict_kwargs"] = {"inner": spec}

    return {
        "top_level_list": lambda h: h.__setitem__("val_scorers", [spec]),  # the example
        "top_level_spec": lambda h: h.__setitem__("embedder", spec),
        "generator_class_path": lambda h: h["generator"].__setitem__("class_path", f"{name}.Thing"),
        "generator_init_arg": gen_init_arg,
        "generator_init_arg_in_list": gen_init_arg_list,
        "generator_dict_kwargs": gen_dict_kwargs,
        "optimizer_string": lambda h: h.__setitem__("optimizer", f"{name}.fn"),
        "optimizer_spec": lambda h: h.__setitem__("optimizer", {"class_path": f"{name}.Thing"}),
        "scheduler_nested": lambda h: h.__setitem__(
            "scheduler", {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"x": [spec]}}
        ),
        "module_class_path": lambda h: h.__setitem__("_class_path", f"{name}.Thing"),
        "deep_mapping": lambda h: h.__setitem__("extra", {"a": [{"b": ({"c": spec},)}]}),
    }


def _ckpt(path: Path, place: Callable[[dict[str, Any]], None]) -> Path:
    generator = tiny_generator()
    hparams: dict[str, Any] = {"generator": generator.spec(), "num_frames": 8}
    hparams["generator"]["init_args"] = dict(hparams["generator"]["init_args"])
    place(hparams)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


def _load_from_checkpoint(path: Path) -> None:
    CFGRLModule.load_from_checkpoint(path)


def _load_generator(path: Path) -> None:
    from lightning_cfgrl.io.generators import load_generator

    load_generator(path)


def _evaluate(path: Path) -> None:  # how `cfgrl evaluate` loads every candidate
    from lightning_cfgrl.eval.plan import load_candidate

    load_candidate(str(path), ["c"])


def _teacher(path: Path) -> None:
    from lightning_cfgrl import CFGDistillCallback, TeacherConfig

    module = CFGRLModule(tiny_generator(), rollout={"num_frames": 8})
    CFGDistillCallback(teacher=TeacherConfig(checkpoint=str(path))).setup(None, module, "fit")  # type: ignore[arg-type]


ENTRY_POINTS: dict[str, Callable[[Path], None]] = {
    "load_from_checkpoint": _load_from_checkpoint,
    "load_generator": _load_generator,
    "evaluate": _evaluate,
    "teacher_checkpoint": _teacher,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    "position",
    sorted(_positions("m")),
)
def test_no_name_in_a_checkpoint_imports_a_module(
    entry: str, position: str, side_effect_module: str, tmp_path: Path
) -> None:
    path = _ckpt(tmp_path / "c.ckpt", _positions(side_effect_module)[position])
    with pytest.raises(ValueError, match="refused") as err:
        ENTRY_POINTS[entry](path)
    assert side_effect_module in str(err.value)
    assert side_effect_module not in sys.modules
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("command", ["fit_ckpt_path", "generate", "export"])
@pytest.mark.parametrize(
    "position", ["top_level_list", "generator_init_arg_in_list", "generator_dict_kwargs"]
)
def test_cli_commands_refuse_a_checkpoint_naming_an_unimported_module(
    command: str, position: str, side_effect_module: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _ckpt(tmp_path / "c.ckpt", _positions(side_effect_module)[position])
    if command == "fit_ckpt_path":
        from lightning_cfgrl.cli.main import main

        code = main(
            [
                "fit",
                "--config",
                str(Path(__file__).resolve().parents[1] / "examples/configs/distill.yaml"),
                "--trainer.max_steps=1",
                f"--ckpt_path={path}",
            ]
        )
    elif command == "generate":
        from lightning_cfgrl.cli.generate import generate_main

        code = generate_main(
            ["--checkpoint", str(path), "--prompts", "[[1, 1, 1]]", "--out", str(tmp_path / "o")]
        )
    else:
        from lightning_cfgrl.cli.export import export_main

        code = export_main(["--checkpoint", str(path), "--out", str(tmp_path / "o")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code != 0
    assert "refused" in last and side_effect_module in last, last
    assert side_effect_module not in sys.modules
    assert not (tmp_path / MARKER).exists()


def test_the_walker_names_the_position_and_leaves_data_strings_alone() -> None:
    # a stored path with a dot is data, not an import; an imported module's class is fine
    check_no_imports({"init_checkpoint": "base.ckpt", "optimizer": "torch.optim.AdamW", "x": [{"y": 1}]}, "f")
    with pytest.raises(UnsafeSpecError, match=r"at a\[1\]\.b\.class_path of f"):
        check_no_imports({"a": [0, {"b": {"class_path": "not_imported_mod_xyz.C"}}]}, "f")
    # a submodule of an imported package that is not loaded yet would run its code too
    with pytest.raises(
        UnsafeSpecError, match="its module .torch.not_a_loaded_submodule_xyz. is not imported"
    ):
        check_no_imports({"class_path": "torch.not_a_loaded_submodule_xyz.C"}, "f")
