"""Masked tokens (logit ``-inf``) and extreme temperatures through the divergences, CFG and the sampler.

References are computed in float64 on the unmasked tokens only, where nothing is infinite; the
tolerances are float64 rounding on numbers of order one.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.divergences import token_divergence
from lightning_cfgrl.core.guidance import cfg_logits
from lightning_cfgrl.core.sampling import SamplingConfig, _draw, process_logits, sample

NEG = float("-inf")
V = 8


def _logits(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def _reference(kind: str, s_keep: Tensor, teacher: Tensor, keep: Tensor) -> Tensor:
    """The divergence written out term by term, summing only terms whose weight is non-zero: the
    student has mass on ``keep`` only (logits ``s_keep``), the teacher on every unmasked token."""
    log_s = s_keep.log_softmax(-1)  # [..., |keep|]
    log_t = teacher.log_softmax(-1)  # [..., V]
    if kind == "reverse_kl":
        return (log_s.exp() * (log_s - log_t[..., keep])).sum(-1)
    if kind == "forward_kl":  # the teacher is masked off ``keep`` too
        return (log_t[..., keep].exp() * (log_t[..., keep] - log_s)).sum(-1)
    half = math.log(0.5)  # jsd_beta = 0.5: m = (t + s) / 2, which is t / 2 where the student is masked
    log_m_keep = torch.logaddexp(log_t[..., keep] + half, log_s + half)
    kl_t = (log_t[..., keep].exp() * (log_t[..., keep] - log_m_keep)).sum(-1)
    kl_t = kl_t + (log_t[..., ~keep].exp() * -half).sum(-1)  # log t - log(t / 2) = log 2 off keep
    kl_s = (log_s.exp() * (log_s - log_m_keep)).sum(-1)
    return 0.5 * kl_t + 0.5 * kl_s


@pytest.mark.parametrize("kind", ["reverse_kl", "forward_kl", "jsd"])
def test_divergence_of_a_masked_token_has_finite_exact_gradients(kind: str) -> None:
    student, teacher = _logits(0, 3, 2), _logits(1, 3, 2)
    masked = torch.tensor([1, 5])
    student[..., masked] = NEG  # the student never emits these (e.g. a vocabulary restriction)
    if kind == "forward_kl":
        teacher[..., masked] = NEG  # KL(t || s) is +inf where only s is masked: mask both
    keep = torch.ones(V, dtype=torch.bool)
    keep[masked] = False

    s = student.clone().requires_grad_(True)
    value = token_divergence(s, teacher, kind)
    value.sum().backward()
    ref_s = student[..., keep].clone().requires_grad_(True)
    ref = _reference(kind, ref_s, teacher, keep)
    ref.sum().backward()

    torch.testing.assert_close(value, ref.detach(), rtol=0, atol=1e-12)
    assert torch.isfinite(s.grad).all(), "a masked token made the row's gradient NaN"
    assert torch.equal(s.grad[..., masked], torch.zeros_like(s.grad[..., masked]))
    torch.testing.assert_close(s.grad[..., keep], ref_s.grad, rtol=0, atol=1e-12)


def test_a_real_nan_propagates_through_the_divergence() -> None:
    student, teacher = _logits(0, 2), _logits(1, 2)
    student[0, 3] = float("nan")
    for kind in ("reverse_kl", "forward_kl", "jsd"):
        value = token_divergence(student, teacher, kind)
        assert torch.isnan(value[0]) and torch.isfinite(value[1]), kind


# ------------------------------------------------------------------------------------------------- CFG


def _guided_reference(cond: Tensor, uncond: Tensor, g: float) -> Tensor:
    """CFG on masked tokens as documented: g = 0 / 1 are the models themselves; otherwise a token masked
    in either stays masked and the others follow the formula."""
    if g == 0:
        return uncond
    if g == 1:
        return cond
    masked = torch.isneginf(cond) | torch.isneginf(uncond)
    safe = lambda x: x.masked_fill(masked, 0.0)  # noqa: E731
    return (safe(uncond) + g * (safe(cond) - safe(uncond))).masked_fill(masked, NEG)


@pytest.mark.parametrize("g", [0.0, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("where", ["cond", "uncond", "both"])
def test_cfg_keeps_masked_tokens_masked_and_never_returns_nan(g: float, where: str) -> None:
    cond, uncond = _logits(2, 4), _logits(3, 4)
    if where in ("cond", "both"):
        cond[:, 2] = NEG
    if where in ("uncond", "both"):
        uncond[:, 6] = NEG
    got = cfg_logits(cond, uncond, g)
    expected = _guided_reference(cond, uncond, g)
    assert not torch.isnan(got).any() and not torch.isposinf(got).any()
    assert torch.equal(torch.isneginf(got), torch.isneginf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], rtol=0, atol=1e-12)
    if g == 0:
        assert torch.equal(got, uncond)  # the unconditional model, even where cond is masked


def test_cfg_propagates_a_real_nan() -> None:
    cond, uncond = _logits(2, 1), _logits(3, 1)
    cond[0, 0] = float("nan")
    assert torch.isnan(cfg_logits(cond, uncond, 3.0)[0, 0])


class _FixedLogits(nn.Module):
    """A one-codebook TokenGenerator whose logits ignore the prefix: ``cond`` for condition 1, ``uncond``
    for the null condition 0."""

    def __init__(self, cond: Tensor, uncond: Tensor) -> None:
        super().__init__()
        self.num_codebooks, self.vocab_size, self.pattern = 1, V, DelayPattern.flat(1)
        self.table = nn.Parameter(torch.stack([uncond, cond]).float(), requires_grad=False)  # [2, V]

    def forward(self, steps: Tensor, condition: Tensor, cache: object = None) -> Tensor:
        return self.table[condition][:, None, None, :].expand(steps.shape[0], 1, steps.shape[2], V)

    def null_condition(self, condition: Tensor) -> Tensor:
        return torch.zeros_like(condition)

    def new_cache(self, batch_size: int, max_steps: int) -> None:
        return None


def test_sampling_with_cfg_and_a_masked_unconditional_token_follows_the_guided_distribution() -> None:
    cond, uncond = _logits(4, 1)[0], _logits(5, 1)[0]
    uncond[V - 1] = NEG  # what made every draw land on token V - 1 (NaN row, clamped search)
    cond[0] = NEG
    model = _FixedLogits(cond, uncond)
    n = 20_000
    tokens = sample(model, torch.ones(n, dtype=torch.long), 1, SamplingConfig(guidance_scale=3.0), seed=0)
    counts = torch.bincount(tokens.flatten(), minlength=V).double()
    probs = _guided_reference(cond[None], uncond[None], 3.0)[0].softmax(-1)
    assert counts[0] == 0 and counts[V - 1] == 0
    # binomial standard error of each frequency, 5 sigma
    tolerance = 5 * torch.sqrt(probs * (1 - probs) / n) + 1e-12
    assert ((counts / n - probs).abs() <= tolerance).all(), (counts / n, probs)


# -------------------------------------------------------------------------------------------- sampler


def test_inverse_cdf_never_draws_a_zero_probability_token() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    logits[0] = NEG  # masked first token: u = 0 must not land on it
    logits[-1] = NEG  # masked last token: u above the float32 CDF's last value must not land on it
    cdf_end = logits.softmax(-1).cumsum(-1)[-1]
    largest_uniform = torch.tensor(1 - 2**-24)  # torch.rand's largest float32 value
    assert cdf_end < largest_uniform  # the rounding this test is about (cdf[-1] = 1 - 2.4e-7)
    ids = _draw(logits.expand(2, -1), torch.stack([torch.tensor(0.0), largest_uniform]))
    assert ids.tolist() == [1, 998]  # the first and the last token with mass


def test_tiny_temperature_is_greedy_and_a_subnormal_one_is_refused() -> None:
    cond = _logits(6, 3).float() * 5  # |logits| up to ~30: logits / 2e-38 overflow float32
    model = _FixedLogits(cond[0], cond[1])
    config = SamplingConfig(temperature=2e-38)
    processed = process_logits(cond, config)
    assert not torch.isnan(processed).any()
    assert torch.equal(processed.argmax(-1), cond.argmax(-1)) and (processed == 0).sum() == 3
    tokens = sample(model, torch.ones(50, dtype=torch.long), 1, config, seed=0)
    assert (tokens == int(cond[1].argmax())).all()  # greedy, every time
    with pytest.raises(
        ValueError, match=r"temperature must be >= 1.18e-38 \(the smallest normal float32\), got 1e-40"
    ):
        SamplingConfig(temperature=1e-40)
