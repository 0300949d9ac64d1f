"""The latent-mode evaluation embedder: exact mode posteriors of the built-in domains."""

from __future__ import annotations

import pytest
import torch

from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity
from lightning_cfgrl.experiments import HMMMusic, LatentModeEmbedder, SyntheticMusic


def _sample_with_modes(domain, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples and the modes the sampler drew: both samplers draw the prompt-independent mode first."""
    rng = torch.Generator().manual_seed(seed)
    prompts = domain.prompts[torch.randint(domain.num_prompts, (n,), generator=rng)]
    state = rng.get_state()
    modes = torch.randint(domain.num_modes, (n,), generator=rng)
    rng.set_state(state)
    return domain.sample(prompts, rng), modes


@pytest.mark.parametrize(
    "make", [SyntheticMusic, lambda: HMMMusic(num_frames=16, vocab_size=16, num_states=4)]
)
def test_the_posterior_is_normalised_and_finds_the_mode_that_drew_the_sample(make):
    domain = make()
    frames, modes = _sample_with_modes(domain, 64, seed=3)
    log_post = domain.mode_log_posterior(frames)
    assert log_post.shape == (64, domain.num_modes)
    torch.testing.assert_close(log_post.exp().sum(1), torch.ones(64, dtype=log_post.dtype))
    assert (log_post.argmax(1) == modes).float().mean() > 0.9


def test_the_per_mode_forward_sums_to_the_likelihood():
    domain = HMMMusic(num_frames=16, vocab_size=16, num_states=4)
    frames, _ = _sample_with_modes(domain, 8, seed=0)
    joint = domain._forward(frames, None, per_mode=True)  # [B, P, M]
    torch.testing.assert_close(torch.logsumexp(joint, dim=2), domain._forward(frames, None))


def test_diversity_counts_samples_from_different_modes():
    domain = SyntheticMusic()
    embed = LatentModeEmbedder(domain)
    frames, modes = _sample_with_modes(domain, 256, seed=1)
    e = embed(frames)
    assert e.shape == (256, domain.num_modes) and e.dtype == torch.float32
    one_mode = frames[modes == modes[0]][:16]
    assert float(pairwise_cosine_diversity(embed(one_mode)[None]).mean()) < 0.1
    # samples of the true process: about 1 - 1/M of their pairs come from different modes
    spread = float(pairwise_cosine_diversity(e.reshape(16, 16, -1)).mean())
    assert abs(spread - (1 - 1 / domain.num_modes)) < 0.1


def test_a_domain_without_modes_is_refused_by_name():
    with pytest.raises(TypeError, match="mode_log_posterior"):
        LatentModeEmbedder(object())
