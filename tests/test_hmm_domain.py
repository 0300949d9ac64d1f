"""The hidden-section domain: exact scores checked by enumeration, sampler against exact frequencies,
argument errors, and prompts that overlap."""

import itertools
import math

import pytest
import torch

from lightning_cfgrl.experiments import LogLikelihood, PromptAdherence, SyntheticMusicDataModule
from lightning_cfgrl.experiments.hmm_music import HMMMusic, HMMScales

TINY = dict(
    vocab_size=2,
    num_frames=2,
    num_states=2,
    num_modes=2,
    attribute_sizes=(2, 2),
    scales=HMMScales(prompt_scale=1.0),
    seed=1,
)


def every_sequence(domain: HMMMusic) -> torch.Tensor:
    """All ``V ** (3 T)`` sequences ``[N, 3, T]``."""
    k, t = domain.num_codebooks, domain.num_frames
    return torch.tensor(list(itertools.product(range(domain.vocab_size), repeat=k * t))).reshape(-1, k, t)


def naive_log_likelihood(domain: HMMMusic, frames: torch.Tensor, prompt: torch.Tensor) -> float:
    """``log p(frames | prompt)`` by summing over every groove and every hidden section path, straight
    from the process's parameters (none of the scorer's precomputed tables)."""
    a = sum(table[i - 1] for table, i in zip(domain.state_bias, prompt.tolist(), strict=True))
    e = sum(table[i - 1] for table, i in zip(domain.token_bias, prompt.tolist(), strict=True))
    paths = torch.tensor(
        list(itertools.product(range(domain.num_states), repeat=domain.num_frames))
    )  # [N, T]
    c0, c1, c2 = frames
    prev2 = torch.cat([torch.tensor([domain.vocab_size]), c2[:-1]])
    terms = []
    for m in range(domain.num_modes):
        log_p = torch.log_softmax(domain.start_logits[m] + a, -1)[paths[:, 0]]
        log_p = log_p + torch.log_softmax(domain.transition_logits[m] + a, -1)[
            paths[:, :-1], paths[:, 1:]
        ].sum(1)
        log_p = log_p + torch.log_softmax(domain.emission_logits[m] + e, -1)[paths, c0].sum(1)
        frame = torch.arange(domain.num_frames)
        log_c1 = torch.log_softmax(domain.residual1[c0][None] + domain.section1[paths], -1)  # [N, T, V]
        log_p = log_p + log_c1[:, frame, c1].sum(1)
        log_p = (
            log_p + torch.log_softmax(domain.residual2[c1] + domain.memory2[m, prev2], -1)[frame, c2].sum()
        )
        terms.append(log_p - math.log(domain.num_modes))
    return torch.logsumexp(torch.cat(terms), 0).item()


def test_exact_likelihood_sums_to_one_and_posterior_normalises():
    domain = HMMMusic(**TINY)
    every = every_sequence(domain)  # 2 ** 6 = 64 sequences
    table = torch.stack([domain.log_likelihood(every, p.expand(len(every), -1)) for p in domain.prompts], 1)
    torch.testing.assert_close(table.exp().sum(0), torch.ones(domain.num_prompts, dtype=torch.float64))
    posterior = torch.stack(
        [domain.prompt_log_posterior(every, p.expand(len(every), -1)) for p in domain.prompts], 1
    )
    assert posterior.dtype == torch.float64
    torch.testing.assert_close(posterior.exp().sum(1), torch.ones(len(every), dtype=torch.float64))
    torch.testing.assert_close(
        posterior, table - torch.logsumexp(table, 1, keepdim=True)
    )  # Bayes, uniform prior


def test_forward_algorithm_matches_sum_over_hidden_paths():
    """T = 6 runs past the forward algorithm's rescaling step; 3 states x 2 grooves = 1458 hidden paths."""
    domain = HMMMusic(
        vocab_size=4,
        num_frames=6,
        num_states=3,
        num_modes=2,
        attribute_sizes=(2, 3),
        scales=HMMScales(prompt_scale=1.0),
        seed=3,
    )
    prompts = domain.prompts[torch.tensor([0, 4, 5])]
    frames = domain.sample(prompts, torch.Generator().manual_seed(0))
    frames[2] = torch.randint(
        4, (3, 6), generator=torch.Generator().manual_seed(1)
    )  # an unlikely sequence too
    naive = torch.tensor(
        [[naive_log_likelihood(domain, f, p) for p in domain.prompts] for f in frames], dtype=torch.float64
    )  # [3, P]
    rows = torch.arange(3)
    torch.testing.assert_close(
        domain.log_likelihood(frames, prompts), naive[rows, domain.prompt_index(prompts)]
    )
    expected = naive[rows, domain.prompt_index(prompts)] - torch.logsumexp(naive, 1)
    torch.testing.assert_close(domain.prompt_log_posterior(frames, prompts), expected)


def test_sampler_matches_exact_likelihood_frequencies():
    domain = HMMMusic(**TINY)
    prompt = domain.prompts[2]
    frames = domain.sample(prompt.expand(40_000, -1), torch.Generator().manual_seed(0))
    ids = (frames.reshape(len(frames), -1) * (2 ** torch.arange(5, -1, -1))).sum(
        -1
    )  # row-major, as every_sequence
    freq = torch.bincount(ids, minlength=64).double() / len(ids)
    exact = domain.log_likelihood(every_sequence(domain), prompt.expand(64, -1)).exp()
    assert (freq - exact).abs().max() < 0.01


def test_default_domain_shapes_and_determinism():
    domain = HMMMusic()
    assert (domain.num_codebooks, domain.vocab_size, domain.num_frames) == (3, 64, 64)
    assert domain.num_prompts == 48 and domain.prompts.shape == (48, 3) and domain.prompts.dtype == torch.long
    torch.testing.assert_close(domain.prompt_index(domain.prompts), torch.arange(48))
    assert domain.describe(domain.prompts[0]) == "ballad, major, sparse"
    prompts = domain.prompts[[0, 47]]
    frames = domain.sample(prompts, torch.Generator().manual_seed(0))
    assert frames.shape == (2, 3, 64) and frames.dtype == torch.long
    assert torch.equal(frames, HMMMusic().sample(prompts, torch.Generator().manual_seed(0)))
    assert not torch.equal(frames, HMMMusic(seed=1).sample(prompts, torch.Generator().manual_seed(0)))
    assert domain.log_likelihood(frames, prompts).shape == (2,)
    assert bool((domain.prompt_log_posterior(frames, prompts) <= 0).all())


@pytest.mark.parametrize(
    ("frames", "prompts", "match"),
    [
        (
            torch.zeros(1, 3, 64, dtype=torch.long),
            torch.tensor([[0, 1, 1]]),
            r"prompt ids must be in \[1, n\]",
        ),
        (
            torch.zeros(1, 3, 64, dtype=torch.long),
            torch.tensor([[1, 5, 1]]),
            r"prompt ids must be in \[1, n\]",
        ),
        (
            torch.zeros(1, 3, 64, dtype=torch.long),
            torch.tensor([[1, 1]]),
            r"prompts must be attribute ids \[B, 3\]",
        ),
        (torch.zeros(1, 3, 64, dtype=torch.long), torch.tensor([[1.0, 1.0, 1.0]]), r"prompts must be int64"),
        (
            torch.zeros(1, 2, 64, dtype=torch.long),
            torch.tensor([[1, 1, 1]]),
            r"frames must have shape \[B, 3, 64\]",
        ),
        (
            torch.zeros(1, 3, 8, dtype=torch.long),
            torch.tensor([[1, 1, 1]]),
            r"frames must have shape \[B, 3, 64\]",
        ),
        (torch.full((1, 3, 64), 64), torch.tensor([[1, 1, 1]]), r"frames must be int64 ids in \[0, 64\)"),
        (torch.zeros(1, 3, 64), torch.tensor([[1, 1, 1]]), r"frames must be int64 ids in \[0, 64\)"),
        (torch.zeros(2, 3, 64, dtype=torch.long), torch.tensor([[1, 1, 1]]), r"same batch size, got 2 and 1"),
    ],
)
def test_bad_inputs_raise_value_errors(frames, prompts, match):
    domain = HMMMusic()
    with pytest.raises(ValueError, match=match):
        domain.log_likelihood(frames, prompts)
    with pytest.raises(ValueError, match=match):
        domain.prompt_log_posterior(frames, prompts)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_states must be >= 1, got 0"):
        HMMMusic(num_states=0)
    with pytest.raises(ValueError, match=r"attribute_sizes must be .* got \(4, 0\)"):
        HMMMusic(attribute_sizes=(4, 0))


def test_prompts_overlap_so_adherence_is_not_trivial():
    """True samples: the exact posterior of the true prompt is far from certain (weak prompt signal)."""
    domain = HMMMusic()
    prompts = domain.prompts.repeat(8, 1)
    frames = domain.sample(prompts, torch.Generator().manual_seed(0))
    posterior = domain.prompt_log_posterior(frames, prompts).exp()
    assert 2 / 48 < posterior.mean().item() < 0.4


def test_works_with_the_synthetic_datamodule_and_scorers():
    domain = HMMMusic()
    data = SyntheticMusicDataModule(domain, num_train=64, num_val=8, seed=0)
    data.setup()
    frames, condition = data.train_set.tensors["frames"], data.train_set.tensors["condition"]
    assert frames.shape == (64, 3, 64) and condition.shape == (64, 3)
    adherence, likelihood = (
        PromptAdherence(domain)(frames, condition),
        LogLikelihood(domain)(frames, condition),
    )
    assert adherence.shape == likelihood.shape == (64,)
    torch.testing.assert_close(likelihood, domain.log_likelihood(frames, condition) / 64)
