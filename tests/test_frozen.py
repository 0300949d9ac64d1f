"""The frozen-model lifecycle shared by the CFG teacher and the reward embedder."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_cfgrl.io.checkpoints import file_sha256
from lightning_cfgrl.training.frozen import freeze, frozen_state, load_frozen_state, place_frozen


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))


def test_freeze_and_place_follow_the_precision_plugin_and_dtype():
    model = freeze(_model(0).train())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-true", logger=False, enable_progress_bar=False)
    placed = place_frozen(_model(0).train(), trainer, torch.device("cpu"))
    assert {p.dtype for p in placed.parameters()} == {torch.bfloat16}
    assert not placed.training and not any(p.requires_grad for p in placed.parameters())
    trainer32 = pl.Trainer(accelerator="cpu", precision="32-true", logger=False, enable_progress_bar=False)
    cast = place_frozen(_model(0), trainer32, torch.device("cpu"), torch.float16)
    assert {p.dtype for p in cast.parameters()} == {torch.float16}


def test_a_model_from_a_file_is_saved_as_its_source_and_checked_on_load(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model(0).state_dict(), path)
    source = {"path": str(path), "sha256": file_sha256(path)}
    state = frozen_state(_model(0), "teacher", source, embed=False)
    assert state == {"teacher": None, "teacher_source": source}
    load_frozen_state(_model(0), state, "teacher", source, "teacher")  # same file: fine
    other = {"path": str(path), "sha256": "0" * 64}
    with pytest.raises(ValueError, match="teacher"):
        load_frozen_state(_model(0), state, "teacher", other, "teacher")
    with pytest.raises(ValueError, match="teacher"):
        load_frozen_state(_model(0), state, "teacher", None, "teacher")


def test_weights_are_saved_when_embedded_or_without_a_source_and_restored():
    saved = _model(1)
    for state in (
        frozen_state(saved, "embedder", None, embed=False),
        frozen_state(saved, "embedder", {"path": "x", "sha256": "y"}, embed=True),
    ):
        assert set(state) == {"embedder"}
        restored = _model(2)
        load_frozen_state(restored, state, "embedder", None, "reward embedder")
        for a, b in zip(restored.state_dict().values(), saved.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert frozen_state(None, "teacher", None, embed=False) == {"teacher": None}
