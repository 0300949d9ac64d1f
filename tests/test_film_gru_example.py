"""The recurrent example model (examples/recurrent/film_gru.py) honours the TokenGenerator contract: causal
logits, cached decoding identical to recomputation, a learned null prompt for CFG."""

from __future__ import annotations

import torch

from examples.recurrent.film_gru import FilmGRU
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.core.sampling import DecodeConfig, SamplingConfig, sample
from lightning_cfgrl.experiments import SyntheticMusic


def _model() -> FilmGRU:
    torch.manual_seed(0)
    model = FilmGRU(dim=32)
    torch.nn.init.normal_(model.film[-1].weight, std=0.1)  # a conditioned model (FiLM starts at identity)
    return model.eval()


def test_cached_sampling_with_cfg_equals_recomputation() -> None:
    model, prompts = _model(), SyntheticMusic().prompts[:3]
    config = SamplingConfig(guidance_scale=3.0)
    cached = sample(model, prompts, 16, config, num_samples=2, seed=1)
    recomputed = sample(
        model, prompts, 16, config, num_samples=2, seed=1, decoding=DecodeConfig(use_cache=False)
    )
    assert torch.equal(cached, recomputed)


def test_logits_are_causal_and_depend_on_the_prompt() -> None:
    model, prompts = _model(), SyntheticMusic().prompts[:3]
    steps = sample(model, prompts, 16, SamplingConfig(), num_samples=2, seed=0)
    condition = repeat_condition(prompts, 2)
    changed = steps.clone()
    changed[:, 0, 5] = (changed[:, 0, 5] + 1) % model.vocab_size
    with torch.no_grad():
        a, b = model(steps, condition), model(changed, condition)
        null = model(steps, model.null_condition(condition))
    assert torch.equal(a[:, :, :6], b[:, :, :6])  # position s never reads step s or later
    assert not torch.allclose(a[:, :, 6:], b[:, :, 6:])
    assert not torch.allclose(a, null)  # the null prompt is a different condition
