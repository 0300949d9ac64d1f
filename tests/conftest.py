"""Shared fixtures: a tiny reference model and a briefly pretrained base on the synthetic domain."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_cfgrl.experiments import SyntheticMusic, SyntheticMusicDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.pretrain import PretrainModule

BASE_ARGS = dict(
    num_codebooks=2,
    vocab_size=32,
    condition_sizes=(4, 4, 3),
    dim=64,
    num_layers=2,
    num_heads=4,
    max_frames=32,
)


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or summary (tests)."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="session")
def domain() -> SyntheticMusic:
    return SyntheticMusic()


@pytest.fixture(scope="session")
def pretrained_base_state(domain: SyntheticMusic) -> dict[str, torch.Tensor]:
    """State dict of an ``AudioTokenTransformer(**BASE_ARGS)`` pretrained 600 steps (~20 s on 2 cores)
    with condition dropout 0.2 on the synthetic domain. Copy it before mutating."""
    pl.seed_everything(0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    module = PretrainModule(generator, condition_dropout=0.2, learning_rate=3e-3)
    data = SyntheticMusicDataModule(domain, num_train=20_000, num_val=256, batch_size=64, seed=0)
    quiet_trainer(max_steps=600, limit_val_batches=0).fit(module, data)
    return {k: v.detach().clone() for k, v in generator.state_dict().items()}


@pytest.fixture
def pretrained_base(pretrained_base_state: dict[str, torch.Tensor]) -> AudioTokenTransformer:
    """A fresh copy of the pretrained base (eval mode)."""
    generator = AudioTokenTransformer(**BASE_ARGS)
    generator.load_state_dict(pretrained_base_state)
    return generator.eval()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="also run the tests marked slow (what CI runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest --full`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
