"""cfg_logits and the divergences against independent float64 references (torch.distributions)."""

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from lightning_cfgrl import cfg_logits, forward_kl, generalized_jsd, reverse_kl, token_divergence


def _random_logits(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(*shape, generator=g)


@pytest.mark.parametrize("scale", [0.0, 1.0, 1.5, 3.0, 7.0])
def test_cfg_logits_matches_probability_reference(scale):
    cond, uncond = _random_logits(4, 2, 5, 11, seed=1), _random_logits(4, 2, 5, 11, seed=2)
    # reference in probability space: p_cfg ∝ p_cond^g * p_uncond^(1-g), from log-probs (not raw logits)
    log_pc = Categorical(logits=cond.double()).logits
    log_pu = Categorical(logits=uncond.double()).logits
    reference = torch.softmax(scale * log_pc + (1 - scale) * log_pu, -1)
    got = torch.softmax(cfg_logits(cond.double(), uncond.double(), scale), -1)
    torch.testing.assert_close(got, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_cfg_logits_rejects_bad_scale(bad):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number >= 0, got"):
        cfg_logits(x, x, bad)


def test_cfg_logits_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        cfg_logits(torch.zeros(2, 3), torch.zeros(2, 4), 3.0)


def test_kl_divergences_match_torch_distributions():
    s, t = _random_logits(3, 2, 7, 13, seed=3), _random_logits(3, 2, 7, 13, seed=4)
    ps, pt = Categorical(logits=s.double()), Categorical(logits=t.double())
    torch.testing.assert_close(
        reverse_kl(s.double(), t.double()), kl_divergence(ps, pt), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        forward_kl(s.double(), t.double()), kl_divergence(pt, ps), rtol=1e-10, atol=1e-12
    )
    # float32 inputs are computed in float32 and agree to float32 precision
    torch.testing.assert_close(reverse_kl(s, t).double(), kl_divergence(ps, pt), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_matches_mixture_reference(beta):
    s, t = _random_logits(5, 9, seed=5).double(), _random_logits(5, 9, seed=6).double()
    ps, pt = Categorical(logits=s).probs, Categorical(logits=t).probs
    mixture = Categorical(probs=beta * pt + (1 - beta) * ps)
    reference = beta * kl_divergence(Categorical(probs=pt), mixture) + (1 - beta) * kl_divergence(
        Categorical(probs=ps), mixture
    )
    torch.testing.assert_close(generalized_jsd(s, t, beta), reference, rtol=1e-10, atol=1e-12)
    assert bool((generalized_jsd(s, t, 0.5) <= math.log(2) + 1e-12).all())


def test_divergences_zero_for_equal_distributions_and_handle_masked_tokens():
    x = _random_logits(4, 6, seed=7)
    x[:, :2] = float("-inf")  # top-k style masked tokens: 0 * log 0 must count as 0, not NaN
    for kind in ("reverse_kl", "forward_kl", "jsd"):
        d = token_divergence(x, x.clone(), kind)
        assert torch.isfinite(d).all()
        torch.testing.assert_close(d, torch.zeros_like(d), atol=1e-6, rtol=0)


def test_unknown_divergence_and_bad_jsd_beta():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="divergence must be one of"):
        token_divergence(x, x, "wasserstein")
    with pytest.raises(ValueError, match=r"jsd beta must be in \(0, 1\), got 1.5"):
        generalized_jsd(x, x, 1.5)


@pytest.mark.parametrize("kind", ["reverse_kl", "forward_kl", "jsd"])
def test_masked_sequence_loss_gradient_matches_finite_differences(kind):
    """The distillation loss (per-token divergence, masked, summed per sequence, averaged) has the
    analytic gradient: torch.autograd.gradcheck compares it with central finite differences."""
    teacher = _random_logits(2, 2, 4, 5, seed=8).double()
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]]).expand(2, 2, 4)

    def loss(student):
        per_token = token_divergence(student, teacher, kind)
        return torch.where(mask, per_token, torch.zeros_like(per_token)).sum(dim=(1, 2)).mean()

    student = _random_logits(2, 2, 4, 5, seed=9).double().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (student,), eps=1e-6, atol=1e-6)
