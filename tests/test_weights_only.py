"""Every checkpoint load this package makes or configures is weights-only, URLs included: Lightning's
own default for an ``http(s)://`` path is ``weights_only=False``, which would run a pickle's code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_cfgrl import CFGRLModule
from lightning_cfgrl.io.checkpoint_io import AtomicCheckpointIO

URL = "https://example.invalid/model.ckpt"
CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


class _Fetched(Exception):
    pass


@pytest.fixture
def fetch(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records the ``weights_only`` of every URL load (nothing is downloaded)."""
    calls: list = []

    def load_state_dict_from_url(url: str, map_location=None, weights_only=None, **kwargs):  # noqa: ANN001, ANN202
        calls.append(weights_only)
        raise _Fetched(url)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", load_state_dict_from_url)
    return calls


def test_load_from_checkpoint_of_a_url_is_weights_only(fetch: list) -> None:
    with pytest.raises(_Fetched):
        CFGRLModule.load_from_checkpoint(URL)
    assert fetch == [True]


def test_atomic_checkpoint_io_loads_a_url_weights_only(fetch: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning.fabric.plugins.io.torch_io as torch_io

    class _Exists:
        def exists(self, path: str) -> bool:
            return True

    monkeypatch.setattr(torch_io, "get_filesystem", lambda path: _Exists())
    with pytest.raises(_Fetched):
        AtomicCheckpointIO().load_checkpoint(URL)
    with pytest.raises(_Fetched):
        AtomicCheckpointIO().load_checkpoint(URL, weights_only=False)  # an explicit choice is kept
    assert fetch == [True, False]


def test_the_cli_defaults_to_weights_only(capsys: pytest.CaptureFixture) -> None:
    from lightning_cfgrl.cli.main import run_cli

    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(CONFIGS / "distill.yaml"), "--print_config"])
    assert "\nweights_only: true\n" in capsys.readouterr().out
