"""Sampling: KV-cache equivalence, seeding, top-k/top-p, delay pattern, adapters and bad input."""

import pytest
import torch
from torch import nn

from lightning_cfgrl import DecodeConfig, DelayPattern, ModuleAdapter, SamplingConfig, sample
from lightning_cfgrl.core.sampling import process_logits
from lightning_cfgrl.models import AudioTokenTransformer


@pytest.fixture
def model():
    torch.manual_seed(0)
    return AudioTokenTransformer(
        num_codebooks=3, vocab_size=16, condition_sizes=(4, 4, 3), dim=32, max_frames=24
    ).eval()


CONDITION = torch.tensor([[1, 2, 3], [4, 1, 2]])


@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(),
        SamplingConfig(guidance_scale=3.0),
        SamplingConfig(temperature=0.7, top_k=5, guidance_scale=2.0),
        SamplingConfig(top_p=0.8),
    ],
)
def test_kv_cache_gives_identical_tokens(model, config):
    cached = sample(
        model, CONDITION, 20, config, num_samples=3, seed=11, decoding=DecodeConfig(use_cache=True)
    )
    recomputed = sample(
        model, CONDITION, 20, config, num_samples=3, seed=11, decoding=DecodeConfig(use_cache=False)
    )
    assert torch.equal(cached, recomputed)


def test_incremental_logits_equal_teacher_forced_logits(model):
    steps = sample(model, CONDITION, 12, seed=0)
    full = model(steps, CONDITION)
    cache = model.new_cache(2, steps.shape[2])
    incremental = torch.cat(
        [model(steps[:, :, : s + 1], CONDITION, cache=cache) for s in range(steps.shape[2])], dim=2
    )
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


def test_seed_reproducibility_and_variation(model):
    a = sample(model, CONDITION, 16, num_samples=2, seed=1)
    assert torch.equal(a, sample(model, CONDITION, 16, num_samples=2, seed=1))
    assert not torch.equal(a, sample(model, CONDITION, 16, num_samples=2, seed=2))


def test_output_layout_follows_delay_pattern(model):
    steps = sample(model, CONDITION, 10, num_samples=4, seed=0)
    assert steps.shape == (8, 3, 10 + 2)
    valid = model.pattern.valid_mask(12)
    assert bool((steps[:, ~valid] == model.vocab_size).all()), "positions without a token hold pad_id"
    assert bool((steps[:, valid] < model.vocab_size).all())
    frames = model.pattern.steps_to_frames(steps)
    assert torch.equal(model.pattern.frames_to_steps(frames, model.vocab_size), steps)


def test_delay_pattern_puts_codebook_k_of_frame_t_at_step_t_plus_k():
    frames = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    steps = DelayPattern.musicgen(3).frames_to_steps(frames, pad_id=-1)
    for k in range(3):
        assert torch.equal(steps[:, k, k : k + 4], frames[:, k])


def test_top_k_one_is_greedy(model):
    steps = sample(model, CONDITION, 8, SamplingConfig(top_k=1), seed=0)
    for seed in (1, 2):
        assert torch.equal(steps, sample(model, CONDITION, 8, SamplingConfig(top_k=1), seed=seed))
    logits = model(steps, CONDITION)
    valid = model.pattern.valid_mask(steps.shape[2])
    assert torch.equal(logits.argmax(-1)[:, valid], steps[:, valid])


def test_process_logits_top_p_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(process_logits(logits, SamplingConfig(top_p=0.75)))
    assert kept.tolist() == [True, True, False, False]
    kept = torch.isfinite(process_logits(logits, SamplingConfig(top_p=0.8)))
    assert kept.tolist() == [True, True, False, False]
    kept = torch.isfinite(process_logits(logits, SamplingConfig(top_p=0.81)))
    assert kept.tolist() == [True, True, True, False]


def test_guidance_changes_samples_toward_condition(model):
    plain = sample(model, CONDITION, 16, SamplingConfig(), seed=3)
    guided = sample(model, CONDITION, 16, SamplingConfig(guidance_scale=5.0), seed=3)
    assert not torch.equal(plain, guided)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature must be a finite number > 0, got 0.0"),
        (dict(top_k=0), "top_k must be >= 1 or None, got 0"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\] or None, got 1.5"),
        (dict(guidance_scale=-2.0), "guidance_scale must be a finite number >= 0, got -2.0"),
        (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number >= 0, got nan"),
    ],
)
def test_bad_sampling_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


class TinyLM(nn.Module):
    """A user's own next-token model: forward(tokens [B, K, T], condition [B]) -> logits [B, K, T, V]."""

    def __init__(self, k=2, v=8):
        super().__init__()
        self.k, self.v = k, v
        self.emb = nn.Embedding(v + 1, 16)
        self.cond = nn.Embedding(5, 16)
        self.rnn = nn.GRU(16, 16, batch_first=True)
        self.out = nn.Linear(16, k * v)

    def forward(self, tokens, condition):
        x = self.emb(tokens).sum(1) + self.cond(condition)[:, None]
        h, _ = self.rnn(x)
        return self.out(h).reshape(tokens.shape[0], tokens.shape[2], self.k, self.v).transpose(1, 2)


def test_module_adapter_samples_and_does_cfg():
    torch.manual_seed(0)
    adapter = ModuleAdapter(TinyLM(), num_codebooks=2, vocab_size=8, bos_id=8, null_condition=0).eval()
    condition = torch.tensor([1, 3])
    steps = sample(adapter, condition, 6, SamplingConfig(guidance_scale=3.0), num_samples=2, seed=0)
    assert steps.shape == (4, 2, 6) and int(steps.max()) < 8
    logits = adapter(steps, condition.repeat_interleave(2))
    assert logits.shape == (4, 2, 6, 8)


def test_cfg_without_null_condition_is_a_clear_error():
    adapter = ModuleAdapter(TinyLM(), num_codebooks=2, vocab_size=8, bos_id=8).eval()
    sample(adapter, torch.tensor([1]), 4, seed=0)  # plain sampling is fine
    with pytest.raises(ValueError, match="without null_condition, so it cannot do CFG"):
        sample(adapter, torch.tensor([1]), 4, SamplingConfig(guidance_scale=3.0), seed=0)


def test_condition_batch_size_must_match_tokens(model):
    steps = sample(model, CONDITION, 4, seed=0)
    with pytest.raises(ValueError, match="condition batch size 2 differs from the token batch size 3"):
        model(torch.cat([steps, steps[:1]]), CONDITION)


def test_tokens_outside_vocab_are_rejected(model):
    steps = sample(model, CONDITION, 4, seed=0)
    steps[0, 0, 1] = 99
    with pytest.raises(ValueError, match=r"tokens contain id 99, outside \[0, 16\) \(vocab_size\)"):
        model(steps, CONDITION)


def test_wrong_codebook_count_and_condition_shape(model):
    with pytest.raises(ValueError, match="tokens have 2 codebooks, the generator expects 3"):
        model(torch.zeros(2, 2, 5, dtype=torch.long), CONDITION)
    with pytest.raises(ValueError, match=r"condition must be attribute ids \[B, 3\], got \(2, 2\)"):
        model(torch.zeros(2, 3, 5, dtype=torch.long), CONDITION[:, :2])
    with pytest.raises(ValueError, match="condition ids must be int64 in"):
        model(torch.zeros(2, 3, 5, dtype=torch.long), torch.tensor([[9, 1, 1], [1, 1, 1]]))
