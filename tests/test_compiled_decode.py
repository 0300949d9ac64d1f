"""Static-shape decoding (``AudioTokenTransformer.decode_step``) and ``sample(..., decoding=DecodeConfig(compile=True))``.

The static step attends over the whole preallocated cache with a mask; in float64 it must give the
cached forward's logits to rounding, and positions not written yet must not matter. The compiled path
(slow: ``torch.compile`` traces for ~15 s per shape on a 2-core CPU) must sample the tokens of the eager
path for the same seed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_cfgrl import DecodeConfig, SamplingConfig, sample
from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.experimental import ControlFiLMTransformer
from lightning_cfgrl.models import AudioTokenTransformer, TransformerOptions
from tests.helpers.compiler import needs_cxx

CONTROLS = ["guidance_scale", "diversity_weight"]


def model(
    dtype: torch.dtype = torch.float32, controls: list[str] | None = None, film: bool = False
) -> AudioTokenTransformer:
    """The reference model; ``film``: the experimental one with control FiLM in every layer."""
    torch.manual_seed(0)
    m = (ControlFiLMTransformer if film else AudioTokenTransformer)(
        num_codebooks=3,
        vocab_size=16,
        dim=32,
        num_layers=2,
        num_heads=4,
        max_frames=24,
        options=TransformerOptions(controls=controls or ()),
    )
    for name, p in m.named_parameters():  # a trained control path (the zero-initialised one adds nothing)
        if name.startswith(("control_emb.", "control_film.")):
            nn.init.normal_(p, std=0.3)
    return m.to(dtype).eval()


def cached_and_static_logits(m: AudioTokenTransformer, steps, condition, controls=None, poison=None):
    """Logits of steps 1.. from the cached forward and from ``decode_step`` on the same tokens."""
    extra = {"controls": controls} if controls else {}
    num_steps = steps.shape[2]
    cached = m.new_cache(steps.shape[0], num_steps)
    static = m.new_cache(steps.shape[0], num_steps)
    m(steps[:, :, :1], condition, cache=cached, **extra)
    m(steps[:, :, :1], condition, cache=static, **extra)
    if poison is not None:  # junk where nothing is written yet: the mask must hide it
        for buffer in (*static.keys, *static.values):
            buffer[:, :, static.length :] = poison
    position = torch.zeros(1, dtype=torch.long)
    expected, actual = [], []
    for s in range(1, num_steps):
        expected.append(m(steps[:, :, : s + 1], condition, cache=cached, **extra)[:, :, -1])
        actual.append(m.decode_step(steps[:, :, s - 1], position.fill_(s), static, **extra))
        static.advance(1, 1)
    return torch.stack(expected, 2), torch.stack(actual, 2)


@pytest.mark.parametrize("with_controls, film", [(False, False), (True, False), (True, True)])
def test_decode_step_gives_the_cached_forward_logits_in_float64(with_controls, film):
    """With controls at the input and, in the experimental ``ControlFiLMTransformer``, as FiLM in every
    layer."""
    m = model(torch.float64, CONTROLS if with_controls else None, film)
    torch.manual_seed(1)
    steps = torch.randint(0, 16, (4, 3, m.max_steps))
    condition = torch.tensor([[1, 2, 0], [0, 0, 0], [4, 4, 3], [2, 1, 1]])
    controls = (
        {"guidance_scale": torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)} if with_controls else None
    )
    expected, actual = cached_and_static_logits(m, steps, condition, controls)
    assert actual.shape == (4, 3, m.max_steps - 1, 16)
    # float64 rounding of O(1) logits through a 2-layer model: ~1e-15; a wrong position or mask: O(1)
    tolerance = 1e-10 * expected.abs().max().item()
    assert torch.allclose(actual, expected, rtol=0, atol=tolerance)


def test_positions_not_written_yet_do_not_change_the_logits():
    m = model(torch.float64)
    steps = torch.randint(0, 16, (2, 3, 12), generator=torch.Generator().manual_seed(2))
    condition = torch.tensor([[1, 2, 3], [0, 1, 0]])
    _, clean = cached_and_static_logits(m, steps, condition)
    _, poisoned = cached_and_static_logits(m, steps, condition, poison=1e6)
    assert torch.equal(clean, poisoned)


def test_compile_needs_a_generator_with_a_static_decode_step():
    class NoStaticStep(nn.Module):
        num_codebooks, vocab_size, pattern = 1, 8, DelayPattern((0,))

        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(9, 8)

        def forward(self, steps, condition, cache=None):
            return self.emb(steps)

        def null_condition(self, condition):
            return torch.zeros_like(condition)

        def new_cache(self, batch_size, max_steps):
            return None

    with pytest.raises(
        ValueError, match="compile=True needs a generator with a static-shape decode_step.*NoStaticStep"
    ):
        sample(NoStaticStep(), torch.zeros(2, 1, dtype=torch.long), 4, decoding=DecodeConfig(compile=True))


@pytest.mark.slow
@needs_cxx
def test_compiled_sampling_draws_the_eager_tokens():
    """Plain, CFG (the doubled batch), top-k/top-p and per-sequence controls, K = 3 with the delay
    pattern; a second call with a new cache reuses the compiled graph (no new trace needed)."""
    m = model(controls=CONTROLS)
    condition = torch.tensor([[1, 2, 0], [0, 0, 3], [4, 4, 3]])
    controls = {"guidance_scale": torch.tensor([1.5, 3.0, 5.0]), "diversity_weight": 2.0}
    configs = [
        SamplingConfig(),
        SamplingConfig(temperature=0.8, top_k=10, top_p=0.9),
        SamplingConfig(guidance_scale=3.0),
    ]
    for config in configs:
        for seed in (0, 1):
            eager = sample(m, condition, 24, config, num_samples=2, seed=seed, controls=controls)
            compiled = sample(
                m,
                condition,
                24,
                config,
                num_samples=2,
                seed=seed,
                controls=controls,
                decoding=DecodeConfig(compile=True),
            )
            assert torch.equal(compiled, eager), (config, seed)
    film = model(controls=CONTROLS, film=True)  # FiLM in every layer (experimental): one more trace
    eager = sample(film, condition, 24, num_samples=2, seed=0, controls=controls)
    assert torch.equal(
        sample(
            film, condition, 24, num_samples=2, seed=0, controls=controls, decoding=DecodeConfig(compile=True)
        ),
        eager,
    )
