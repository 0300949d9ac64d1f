"""ModuleAdapter with a module that decodes incrementally (``step``): a recurrent GRU state and an HF-style
``past_key_values``. Cached logits equal the full forward's (float64), sampling draws the recompute path's
tokens for the same seed (CFG included), and a ``step`` that disagrees with ``forward`` fails on first use."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from lightning_cfgrl import DecodeConfig, ModuleAdapter, SamplingConfig, sample
from lightning_cfgrl.core.module_adapter import StepCache
from tests.helpers.gru_lm import NextTokenGRU, RecurrentGRU, RecurrentShiftingGRU

V = 8
CONDITION = torch.tensor([1, 3])
EPS64 = torch.finfo(torch.float64).eps


def _adapter(convention: str, delays=None, seed: int = 0, layers: int = 2) -> ModuleAdapter:
    torch.manual_seed(seed)
    cls = RecurrentGRU if convention == "next_token" else RecurrentShiftingGRU
    module = cls(vocab_size=V, num_layers=layers)
    bos = V if convention == "next_token" else None
    adapter = ModuleAdapter(module, 2, V, bos, null_condition=0, delays=delays, convention=convention)
    return adapter.double().eval()


def _steps(adapter: ModuleAdapter, batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    frames_ = torch.randint(0, V, (batch, 2, frames), generator=torch.Generator().manual_seed(seed))
    return adapter.pattern.frames_to_steps(frames_, V)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # same math, different kernels (one sequence vs single steps): rounding only, relative to the logits
    torch.testing.assert_close(a, b, rtol=0, atol=256 * EPS64 * (1.0 + float(b.abs().max())))


@pytest.mark.parametrize("convention", ["next_token", "shifts_internally"])
@pytest.mark.parametrize("delays", [None, (0, 1)])
def test_cached_logits_equal_the_full_forward_in_float64(convention, delays):
    adapter = _adapter(convention, delays)
    steps = _steps(adapter, 3, 9)
    cond = torch.tensor([0, 1, 3])
    with torch.no_grad():
        full = adapter(steps, cond)
        cache = adapter.new_cache(3, steps.shape[2])
        assert isinstance(cache, StepCache)
        # a chunk of 4 first (a prompt), then one step at a time, as the sampler feeds them
        chunks = [adapter(steps[..., :4], cond, cache=cache)]
        chunks += [adapter(steps[..., : s + 1], cond, cache=cache) for s in range(4, steps.shape[2])]
    assert full.dtype == torch.float64 and cache.steps == steps.shape[2]
    assert [c.shape[2] for c in chunks] == [4] + [1] * (steps.shape[2] - 4)
    _close(torch.cat(chunks, dim=2), full)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("convention", ["next_token", "shifts_internally"])
def test_sampling_with_the_state_draws_the_recompute_paths_tokens(convention, guidance):
    adapter = _adapter(convention, delays=(0, 1))
    config = SamplingConfig(temperature=0.9, top_k=6, guidance_scale=guidance)
    calls = {"forward": 0, "step": 0}
    module = adapter.module
    adapter(_steps(adapter, 2, 3), CONDITION)  # the first-use probe, before counting
    module.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    step = module.step

    def counted_step(*args):
        calls["step"] += 1
        return step(*args)

    module.step = counted_step
    cached = sample(adapter, CONDITION, 12, config, num_samples=3, seed=7)
    assert calls == {"forward": 0, "step": 13}  # one step per decoded position (12 frames + 1 delay)
    recomputed = sample(
        adapter, CONDITION, 12, config, num_samples=3, seed=7, decoding=DecodeConfig(use_cache=False)
    )
    assert calls["forward"] == 13 and cached.shape == (6, 2, 13)
    assert torch.equal(cached, recomputed)
    # not the same tokens by accident: another seed draws others
    assert not torch.equal(cached, sample(adapter, CONDITION, 12, config, num_samples=3, seed=8))


class StatelessStepGRU(RecurrentGRU):
    """A step that forgets its state: fine at the first position, wrong from the second on."""

    def step(self, tokens, state, condition):
        return super().step(tokens, None, condition)


class WrongShapeStepGRU(RecurrentGRU):
    def step(self, tokens, state, condition):
        logits, state = super().step(tokens, state, condition)
        return logits[..., :-1], state


def test_a_step_that_disagrees_with_forward_fails_on_first_use_naming_step():
    torch.manual_seed(0)
    adapter = ModuleAdapter(StatelessStepGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0).eval()
    with pytest.raises(
        ValueError, match=r"StatelessStepGRU.step\(\) disagrees with its forward at positions \[1, "
    ):
        sample(adapter, CONDITION, 4, seed=0)
    # the recompute path (no cache asked for) still runs the probe, since the module has a step
    with pytest.raises(ValueError, match="disagrees with its forward"):
        adapter(_steps(adapter, 2, 4), CONDITION)


def test_a_step_with_the_wrong_logits_shape_is_named():
    torch.manual_seed(0)
    adapter = ModuleAdapter(WrongShapeStepGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0).eval()
    with pytest.raises(ValueError, match=r"step\(\) returned logits of shape \(1, 2, 4, 7\) over 4 steps"):
        sample(adapter, CONDITION, 4, seed=0)
    # unprobed, the cached forward names it
    torch.manual_seed(0)
    unprobed = ModuleAdapter(WrongShapeStepGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0, verify=False)
    with pytest.raises(ValueError, match=r"step\(\) returned logits of shape \(2, 2, 1, 7\) over 1 steps"):
        sample(unprobed.eval(), CONDITION, 4, seed=0)


def test_a_module_without_step_still_recomputes_and_rejects_foreign_caches():
    torch.manual_seed(0)
    adapter = ModuleAdapter(NextTokenGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0).eval()
    assert not adapter.has_step and adapter.new_cache(2, 8) is None
    with pytest.raises(ValueError, match="takes the cache its new_cache"):
        adapter(_steps(adapter, 2, 3), CONDITION, cache=object())
    adapter = _adapter("next_token")
    cache = adapter.new_cache(2, 8)
    adapter(_steps(adapter, 2, 3), CONDITION, cache=cache)
    with pytest.raises(ValueError, match="3 are already cached"):
        adapter(_steps(adapter, 2, 3), CONDITION, cache=cache)


class GPT2TokenLM(nn.Module):
    """A one-codebook LM on HF GPT-2 whose ``step`` carries HF's ``past_key_values``: the condition id is
    a prefix token (ids V + 1..), the adapter's start id V the first input."""

    def __init__(self) -> None:
        super().__init__()
        from lightning_cfgrl.adapters.encodec_import import torchaudio_stub_if_broken

        with torchaudio_stub_if_broken():
            from transformers import GPT2Config, GPT2LMHeadModel
        config = GPT2Config(vocab_size=V + 6, n_embd=16, n_layer=2, n_head=2, n_positions=64)
        self.lm = GPT2LMHeadModel(config)

    def forward(self, tokens, condition):  # tokens [B, 1, T] -> [B, 1, T, V]
        ids = torch.cat([condition[:, None] + V + 1, tokens[:, 0]], dim=1)
        return self.lm(ids).logits[:, 1:, :V][:, None]

    def step(self, tokens, state, condition):
        ids = tokens[:, 0]
        if state is None:
            ids = torch.cat([condition[:, None] + V + 1, ids], dim=1)
        # transformers 5 renamed past_key_values to cache
        name = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
        out = self.lm(ids, use_cache=True, **{name: state})
        past = getattr(out, "cache", None)
        return out.logits[:, -1:, :V][:, None], past if past is not None else out.past_key_values


def test_an_hf_kv_cache_works_as_the_state():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    adapter = ModuleAdapter(GPT2TokenLM(), 1, V, bos_id=V, null_condition=0).double().eval()
    steps = torch.randint(0, V, (2, 1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = adapter(steps, CONDITION)
        cache = adapter.new_cache(2, 7)
        stepped = torch.cat([adapter(steps[..., : s + 1], CONDITION, cache=cache) for s in range(7)], dim=2)
    _close(stepped, full)
    config = SamplingConfig(guidance_scale=3.0)
    a = sample(adapter, CONDITION, 10, config, num_samples=2, seed=1)
    assert torch.equal(
        a,
        sample(adapter, CONDITION, 10, config, num_samples=2, seed=1, decoding=DecodeConfig(use_cache=False)),
    )
