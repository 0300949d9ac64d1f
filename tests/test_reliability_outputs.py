"""Rule 6: outputs never delete inputs. ``cfgrl export --overwrite`` refuses a folder that is or holds any
input (the checkpoint, the base model folder with its tokenizer/processor files) and replaces only a
folder whose every file an earlier export wrote; ``cfgrl generate`` never writes over its checkpoint."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lightning_cfgrl.io.outputs import check_not_an_input, check_only_own_files

pytest.importorskip("transformers")

from lightning_cfgrl.adapters import MusicgenGenerator  # noqa: E402
from lightning_cfgrl.adapters.musicgen import import_musicgen  # noqa: E402
from lightning_cfgrl.cli.main import main  # noqa: E402
from lightning_cfgrl.io.checkpoints import atomic_save_safetensors  # noqa: E402
from tests.helpers.musicgen import save_tiny_musicgen  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hf = import_musicgen()
    hf.logging.set_verbosity_error()
    return save_tiny_musicgen(hf, tmp_path_factory.mktemp("musicgen") / "musicgen-tiny")


def _weights(folder: Path, path: Path) -> Path:
    atomic_save_safetensors(copy.deepcopy(MusicgenGenerator(str(folder))).state_dict(), path)
    return path


def _export(checkpoint: Path, base: Path, out: Path, overwrite: bool = True) -> list[str]:
    args = ["export", "--checkpoint", str(checkpoint), "--base", str(base), "--out", str(out)]
    return args + (["--overwrite", "true"] if overwrite else [])


def test_export_overwrite_into_the_checkpoints_folder_is_refused(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The issue's example: --overwrite into the folder holding the checkpoint deleted it, exit 0."""
    runs = tmp_path / "runs"
    runs.mkdir()
    ckpt = _weights(folder, runs / "merged.safetensors")
    before = ckpt.read_bytes()
    assert main(_export(ckpt, folder, runs)) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"holds an input of this command, the checkpoint {str(ckpt)!r}" in last, last
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize(
    "where", ["base_itself", "parent_of_base", "parent_of_checkpoint", "checkpoint_itself"]
)
def test_export_refuses_every_folder_holding_an_input(
    where: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = _weights(folder, tmp_path / "ckpts" / "w.safetensors")
    out = {
        "base_itself": folder,
        "parent_of_base": folder.parent,
        "parent_of_checkpoint": ckpt.parent.parent,
        "checkpoint_itself": ckpt,
    }[where]
    listing = sorted(p for p in folder.rglob("*"))
    assert main(_export(ckpt, folder, out)) == 1
    assert "holds an input of this command" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(p for p in folder.rglob("*")) == listing and ckpt.is_file()  # tokenizer files intact


def test_export_overwrite_replaces_only_what_an_export_wrote(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = _weights(folder, tmp_path / "w.safetensors")
    out = tmp_path / "exported"
    assert main(_export(ckpt, folder, out, overwrite=False)) == 0
    written = sorted(p.name for p in out.iterdir())
    assert "tokenizer_config.json" in written  # the processor files came along (and are outputs now)
    assert main(_export(ckpt, folder, out)) == 0  # an export's own folder: replaced
    assert sorted(p.name for p in out.iterdir()) == written
    (out / "notes.txt").write_text("mine")
    assert main(_export(ckpt, folder, out)) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds file(s) that cfgrl export did not write (notes.txt)" in last, last
    assert (out / "notes.txt").read_text() == "mine"


def test_generate_never_writes_over_its_checkpoint(tmp_path: Path) -> None:
    from lightning_cfgrl.audio.generation import generate

    ckpt = tmp_path / "tokens.safetensors"  # a checkpoint named like generate's output, in --out
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="holds an input of this command, the checkpoint"):
        generate(checkpoint=str(ckpt), prompts=torch.tensor([[1, 1, 1]]), out=str(tmp_path))
    assert ckpt.read_bytes() == b"x"


def test_the_two_checks_directly(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.ckpt").write_text("x")
    check_not_an_input(tmp_path / "b", {"checkpoint": tmp_path / "a" / "f.ckpt", "none": None})
    with pytest.raises(ValueError, match="the checkpoint"):
        check_not_an_input(tmp_path, {"checkpoint": tmp_path / "a" / "f.ckpt"})
    check_only_own_files(tmp_path / "a", ["f.ckpt"], "x")
    with pytest.raises(ValueError, match=r"did not write \(a/f.ckpt\)"):
        check_only_own_files(tmp_path, [], "x")
