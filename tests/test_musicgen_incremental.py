"""MusicGen with 4 codebooks (musicgen-small's pattern, mono and stereo): decoding step by step with the KV
cache gives the whole-sequence forward's logits (float64). A prefix is not a whole sequence: its last steps
hold real tokens of every codebook, which must not be fed as the start id (they were, for K >= 3)."""

from __future__ import annotations

import pytest
import torch

from lightning_cfgrl import DecodeConfig, SamplingConfig, sample

pytest.importorskip("transformers")
from lightning_cfgrl.adapters.musicgen import MusicgenGenerator, import_musicgen  # noqa: E402
from tests.helpers.musicgen import tiny_config  # noqa: E402

V = 16


def generator(channels: int) -> MusicgenGenerator:
    hf = import_musicgen()
    torch.manual_seed(0)
    config = tiny_config(hf, num_codebooks=4, channels=channels)
    config.decoder.initializer_factor = 1.0  # logits of order 1
    return MusicgenGenerator(hf.MusicgenForConditionalGeneration(config).double()).eval()


def condition() -> dict:
    ids = torch.randint(3, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("channels", [1, 2])
def test_cached_steps_give_the_whole_sequence_logits(channels):
    gen = generator(channels)
    frames = torch.randint(0, V, (2, 4, 7), generator=torch.Generator().manual_seed(1))
    steps = gen.pattern.frames_to_steps(frames, V)
    cond = condition()
    with torch.no_grad():
        full = gen(steps, cond)
        cache = gen.new_cache(2, steps.shape[2])
        stepped = torch.cat(
            [gen(steps[..., : s + 1], cond, cache=cache) for s in range(steps.shape[2])], dim=2
        )
        # a prefix recomputed without the cache: each position's logits as in the whole sequence
        prefix = gen(steps[..., :5], cond)
    eps = torch.finfo(torch.float64).eps
    tol = 1e3 * eps * (1.0 + float(full.abs().max()))  # rounding only, relative to the logits
    torch.testing.assert_close(stepped, full, rtol=0, atol=tol)
    torch.testing.assert_close(prefix, full[..., :5, :], rtol=0, atol=tol)


def test_sampling_draws_from_the_whole_sequence_model():
    gen = generator(1)
    config = SamplingConfig(guidance_scale=3.0)
    a = sample(gen, condition(), 6, config, seed=2)
    assert torch.equal(a, sample(gen, condition(), 6, config, seed=2, decoding=DecodeConfig(use_cache=False)))
