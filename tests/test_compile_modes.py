"""``sample(..., decoding=DecodeConfig(compile=<torch.compile mode>))``: a bad mode is named; ``"reduce-overhead"`` samples the eager
tokens (on CPU inductor has no CUDA graphs, so this checks the mode's plumbing; the CUDA-graph path runs in
``benchmarks/gpu_suite.py``); the cache reused across calls for CUDA graphs is reset, not rebuilt."""

from __future__ import annotations

import pytest
import torch

from lightning_cfgrl import DecodeConfig, SamplingConfig, sample
from lightning_cfgrl.core.sampling import _cache_tensors, _reused_cache
from lightning_cfgrl.models import AudioTokenTransformer
from tests.helpers.compiler import needs_cxx

CONDITION = torch.tensor([[1, 2, 0], [3, 0, 2]])


def model() -> AudioTokenTransformer:
    torch.manual_seed(0)
    return AudioTokenTransformer(
        num_codebooks=2,
        vocab_size=16,
        condition_sizes=(4, 4, 3),
        dim=16,
        num_layers=1,
        num_heads=2,
        max_frames=8,
    ).eval()


def test_an_unknown_compile_mode_is_named():
    with pytest.raises(ValueError, match=r"torch.compile mode .*'reduce-overhead'.*got 'fast'"):
        sample(model(), CONDITION, 4, decoding=DecodeConfig(compile="fast"))


def test_the_reused_cache_is_reset_per_sequence_and_rebuilt_for_another_shape():
    m = model()
    first = _reused_cache(m, 4, 6)
    first.advance(5, 2)
    again = _reused_cache(m, 4, 6)
    assert again is first and (again.length, again.steps) == (0, 0)
    assert _reused_cache(m, 2, 6) is not first
    # every key and value buffer is found, to be marked as a static address
    assert len(_cache_tensors(first)) == 2 * len(m.blocks)


@pytest.mark.slow
@needs_cxx
def test_reduce_overhead_mode_samples_the_eager_tokens():
    m = model()
    config = SamplingConfig(guidance_scale=3.0)
    eager = sample(m, CONDITION, 5, config, seed=3)
    assert torch.equal(
        sample(m, CONDITION, 5, config, seed=3, decoding=DecodeConfig(compile="reduce-overhead")), eager
    )
