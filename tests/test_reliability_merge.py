"""Rule 8: merge sidecars are confined and consistent. A sidecar names only files beside it; the lambda it
states is the lambda its files record; two models merge only if their generator specs agree."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_cfgrl.cli.merge import merge_checkpoints
from lightning_cfgrl.eval.plan import merged_checkpoints
from lightning_cfgrl.io.checkpoints import CheckpointError, file_sha256
from lightning_cfgrl.models import AudioTokenTransformer
from tests.helpers.tiny_fit import TINY_ARGS


def _ckpt(path: Path, seed: int, **overrides: Any) -> Path:
    torch.manual_seed(seed)
    generator = AudioTokenTransformer(**{**TINY_ARGS, **overrides})
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": state, "hyper_parameters": {"generator": generator.spec(), "num_frames": 8}}, path
    )
    return path


@pytest.fixture
def merged(tmp_path: Path) -> Path:
    q, d = _ckpt(tmp_path / "runs/base/checkpoints/last.ckpt", 0), _ckpt(tmp_path / "runs/div/last.ckpt", 1)
    merge_checkpoints(str(q), str(d), [0.0, 0.5], str(tmp_path / "merged"))
    return tmp_path / "merged"


def _rewrite(sidecar: Path, **changes: Any) -> None:
    content = json.loads(sidecar.read_text())
    for key, value in changes.items():
        if key == "checkpoint_name":  # point the checkpoint role elsewhere, with a matching hash
            content["files"]["checkpoint"] = value
            target = sidecar.parent / value
            content["sha256"]["checkpoint"] = file_sha256(target) if target.is_file() else "0" * 64
        else:
            content[key] = value
    sidecar.write_text(json.dumps(content))


def test_a_sidecar_naming_the_base_model_is_refused(merged: Path) -> None:
    """The issue's example: evaluate reported the base model as "merged lambda=0.5"."""
    _rewrite(merged / "merged_lambda=0.50.json", checkpoint_name="../runs/base/checkpoints/last.ckpt")
    with pytest.raises(
        CheckpointError, match=r"checkpoint file '\.\./runs/base/checkpoints/last\.ckpt' is not a plain"
    ):
        merged_checkpoints(str(merged))


@pytest.mark.parametrize(
    "name",
    ["../x.ckpt", "/etc/passwd", "sub/merged.ckpt", "..", ".", "", "a\\..\\b", 42, "symlink_out.ckpt"],
    ids=[
        "dotdot",
        "absolute",
        "subfolder",
        "parent",
        "self",
        "empty",
        "backslash",
        "not_a_string",
        "symlink",
    ],
)
def test_every_name_escaping_the_folder_is_refused(merged: Path, tmp_path: Path, name: Any) -> None:
    if name == "symlink_out.ckpt":
        os.symlink(tmp_path / "runs/base/checkpoints/last.ckpt", merged / name)
    sidecar = merged / "merged_lambda=0.50.json"
    content = json.loads(sidecar.read_text())
    content["files"]["checkpoint"] = name
    if isinstance(name, str) and (merged / name).is_file():
        content["sha256"]["checkpoint"] = file_sha256(merged / name)
    sidecar.write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match="a sidecar may only name files beside it"):
        merged_checkpoints(str(merged))


def test_a_lambda_the_files_do_not_record_is_refused(merged: Path) -> None:
    _rewrite(merged / "merged_lambda=0.50.json", **{"lambda": 0.25})
    with pytest.raises(CheckpointError, match=r"says lambda=0\.25, but its .* is '?0\.5"):
        merged_checkpoints(str(merged))


def test_a_sidecar_swapped_with_its_neighbour_is_refused(merged: Path) -> None:
    """Both sidecars internally consistent, but each under the other's name."""
    a, b = merged / "merged_lambda=0.00.json", merged / "merged_lambda=0.50.json"
    text_a, text_b = a.read_text(), b.read_text()
    a.write_text(text_b)
    b.write_text(text_a)
    with pytest.raises(CheckpointError, match="which its file name does not say"):
        merged_checkpoints(str(merged))


def test_an_intact_set_is_read(merged: Path) -> None:
    assert [lam for lam, _ in merged_checkpoints(str(merged))] == [0.0, 0.5]


def test_models_with_equal_shapes_but_different_specs_do_not_merge(tmp_path: Path) -> None:
    q = _ckpt(tmp_path / "q.ckpt", 0, num_heads=2)
    d = _ckpt(tmp_path / "d.ckpt", 1, num_heads=4)  # dim 32: every tensor has the same shape
    assert {k: v.shape for k, v in torch.load(q)["state_dict"].items()} == {
        k: v.shape for k, v in torch.load(d)["state_dict"].items()
    }
    with pytest.raises(ValueError, match=r"record different generators \(init_args\.num_heads: 2 vs 4\)"):
        merge_checkpoints(str(q), str(d), [0.5], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
