"""The package's MusicGen rollout samples HF ``generate()``'s token distribution (same model, same settings):
chi-square per (codebook, frame) over many draws, with and without CFG; a temperature mismatch is detected."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("scipy")

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "musicgen_rollout.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_musicgen_rollout", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model(bench, codebooks: int):
    from lightning_cfgrl.adapters.musicgen import import_musicgen

    return bench.build_model(import_musicgen(), "tiny", "cpu", initializer_factor=1.0, codebooks=codebooks)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("codebooks", [2, 4])  # 4: musicgen-small's delays 0..3
def test_same_token_distribution_as_hf_generate(bench, codebooks, guidance):
    check = bench.distribution_check(model(bench, codebooks), draws=1500, frames=4, guidance=guidance)
    assert check["positions"] == codebooks * 4  # every (codebook, frame) tested
    assert check["same_distribution"], check


def test_the_check_detects_a_different_temperature(bench):
    check = bench.distribution_check(model(bench, 4), draws=1500, frames=4, guidance=3.0, temperature=1.3)
    assert not check["same_distribution"] and check["min_p"] < 1e-8, check
