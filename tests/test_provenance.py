"""Checkpoints carry only what cannot be rebuilt: a teacher or reward embedder loaded from a file is
saved as that file's path and sha256, and a resumed run refuses a file that changed or vanished."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, FrozenModelConfig, TeacherConfig
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import file_sha256, load_checkpoint
from lightning_cfgrl.training.configs import group_settings
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import tiny_embedder, tiny_generator


def _generator_file(path: Path, seed: int) -> Path:
    generator = tiny_generator(seed)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": generator.spec()}}, path)
    return path


def _embedder_file(path: Path, seed: int) -> Path:
    embedder = tiny_embedder(seed)
    state = {f"embedder.{k}": v for k, v in embedder.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"embedder": embedder.spec()}}, path)
    return path


def _fit(root: Path, module: CFGRLModule, callbacks: list, steps: int, resume: bool = False) -> Path:
    checkpoints = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = quiet_trainer(
        max_steps=steps, limit_val_batches=0, enable_checkpointing=True, callbacks=[*callbacks, checkpoints]
    )
    data = SyntheticPromptDataModule(batch_size=4, split=PromptSplit(repeats=1))
    trainer.fit(module, data, ckpt_path=root / "last.ckpt" if resume else None)
    return root / "last.ckpt"


def _callbacks(teacher: Path | None, embedder: Path, embed: bool = False) -> list:
    return [
        CFGDistillCallback(
            teacher=TeacherConfig(checkpoint=str(teacher) if teacher else None, embed_in_checkpoint=embed)
        ),
        DiversityRewardCallback(
            ContrastiveTokenEmbedder(checkpoint=str(embedder)),
            embedding=FrozenModelConfig(embed_in_checkpoint=embed),
        ),
    ]


def _module(**kwargs) -> CFGRLModule:
    return CFGRLModule(tiny_generator(0), **group_settings({"num_frames": 4, **kwargs}))


def _states(ckpt: Path) -> tuple[dict, dict]:
    states = load_checkpoint(ckpt)["callbacks"]
    distill = next(v for k, v in states.items() if k.startswith("CFGDistillCallback"))
    diversity = next(v for k, v in states.items() if k.startswith("DiversityRewardCallback"))
    return distill, diversity


@pytest.mark.slow  # trains a model
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_files_are_recorded_by_hash_and_verified_on_resume(tmp_path: Path) -> None:
    teacher, embedder = (
        _generator_file(tmp_path / "teacher.ckpt", 5),
        _embedder_file(tmp_path / "emb.ckpt", 6),
    )
    last = _fit(tmp_path / "run", _module(), _callbacks(teacher, embedder), steps=2)
    distill, diversity = _states(last)
    assert distill == {
        "teacher": None,
        "teacher_source": {"path": str(teacher), "sha256": file_sha256(teacher)},
    }
    assert diversity["embedder"] is None
    assert diversity["embedder_source"] == {"path": str(embedder), "sha256": file_sha256(embedder)}

    embedded = _fit(tmp_path / "embedded", _module(), _callbacks(teacher, embedder, embed=True), steps=2)
    distill_e, diversity_e = _states(embedded)
    weights = sum(
        t.numel() * t.element_size()
        for t in [*distill_e["teacher"].values(), *diversity_e["embedder"].values()]
    )
    saved = embedded.stat().st_size - last.stat().st_size
    assert 0.95 * weights < saved < 1.05 * weights + 20_000  # the two models' bytes, give or take the zip

    # resumed from the same files: runs on, with the teacher and the embedder of those files
    callbacks = _callbacks(teacher, embedder)
    _fit(tmp_path / "run", _module(), callbacks, steps=3, resume=True)
    expected = {k[len("generator.") :]: v for k, v in torch.load(teacher)["state_dict"].items()}
    assert all(torch.equal(callbacks[0].teacher.state_dict()[k], v) for k, v in expected.items())

    # the teacher file changed: refused, naming the file and both hashes
    _generator_file(teacher, 7)
    with pytest.raises(
        ValueError, match=r"teacher was loaded from .*teacher.ckpt \(sha256 .*the file changed"
    ):
        _fit(tmp_path / "run", _module(), _callbacks(teacher, embedder), steps=4, resume=True)
    # the embedder file vanished: refused where it is loaded
    embedder.unlink()
    with pytest.raises(FileNotFoundError, match="emb.ckpt' does not exist"):
        _callbacks(teacher, embedder)


@pytest.mark.slow  # trains a model
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_teacher_copied_from_the_init_checkpoint_is_rebuilt_from_it(tmp_path: Path) -> None:
    init, embedder = _generator_file(tmp_path / "base.ckpt", 8), _embedder_file(tmp_path / "emb.ckpt", 6)
    last = _fit(tmp_path / "run", _module(init_checkpoint=str(init)), _callbacks(None, embedder), steps=2)
    distill, _ = _states(last)
    assert distill == {"teacher": None, "teacher_source": {"path": str(init), "sha256": file_sha256(init)}}
    _fit(
        tmp_path / "run", _module(init_checkpoint=str(init)), _callbacks(None, embedder), steps=3, resume=True
    )
    _generator_file(init, 9)
    with pytest.raises(ValueError, match="the file changed since the checkpoint was written"):
        _fit(
            tmp_path / "run",
            _module(init_checkpoint=str(init)),
            _callbacks(None, embedder),
            steps=4,
            resume=True,
        )

    # no file to rebuild it from (random init): the weights are embedded, as before
    scratch = _fit(tmp_path / "scratch", _module(), _callbacks(None, embedder), steps=1)
    distill, _ = _states(scratch)
    assert "teacher_source" not in distill and set(distill["teacher"]) == set(tiny_generator(0).state_dict())
