"""The diversity reward's math: values against float64 loops, and unbiasedness of the policy gradient
on a tiny categorical policy whose expected pairwise diversity and gradient are known exactly."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_cfgrl.core.diversity import (
    RunningMeanBaseline,
    compute_baseline,
    diversity_rewards,
    diversity_surrogate,
    group_diversity,
    grouped,
    other_pairs_baseline,
    other_prompts_baseline,
    pairwise_distances,
)
from lightning_cfgrl.eval import PairwiseDiversity, pairwise_cosine_diversity


def _reference(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 loops: (distances [B, G, G], rewards [B, G], other-pairs baselines [B, G])."""
    e = embeddings.double()
    b, g, _ = e.shape
    d = torch.zeros(b, g, g, dtype=torch.float64)
    for n, i, j in itertools.product(range(b), range(g), range(g)):
        if i != j:
            d[n, i, j] = 1 - e[n, i].dot(e[n, j]) / (e[n, i].norm() * e[n, j].norm())
    rewards = torch.zeros(b, g, dtype=torch.float64)
    others = torch.zeros(b, g, dtype=torch.float64)
    for n, i in itertools.product(range(b), range(g)):
        rewards[n, i] = sum(d[n, i, j] for j in range(g) if j != i) / (g - 1)
        pairs = [d[n, j, k] for j in range(g) for k in range(j + 1, g) if i not in (j, k)]
        others[n, i] = sum(pairs) / len(pairs) if pairs else float("nan")
    return d, rewards, others


def test_rewards_and_baselines_match_float64_reference() -> None:
    torch.manual_seed(0)
    emb = torch.randn(3, 4, 6) * torch.tensor([1.0, 10.0, 0.1])[:, None, None]  # scale must not matter
    ref_d, ref_r, ref_other = _reference(emb)
    distances = pairwise_distances(emb)
    assert distances.dtype == torch.float32
    torch.testing.assert_close(distances.double(), ref_d, atol=1e-6, rtol=0)
    assert torch.equal(distances.diagonal(dim1=1, dim2=2), torch.zeros(3, 4))
    rewards = diversity_rewards(distances)
    torch.testing.assert_close(rewards.double(), ref_r, atol=1e-6, rtol=0)
    torch.testing.assert_close(other_pairs_baseline(distances).double(), ref_other, atol=1e-6, rtol=0)
    # a group's mean reward is its mean pairwise diversity (the evaluation metric)
    torch.testing.assert_close(group_diversity(distances), pairwise_cosine_diversity(emb), atol=1e-6, rtol=0)
    # other prompts' mean reward: prompt 0's baseline is the mean of prompts 1 and 2's rewards
    expected = torch.stack([ref_r[[1, 2]].mean(), ref_r[[0, 2]].mean(), ref_r[[0, 1]].mean()])
    torch.testing.assert_close(other_prompts_baseline(rewards)[:, 0].double(), expected, atol=1e-6, rtol=0)


def test_identical_samples_get_zero_reward_and_opposite_ones_two() -> None:
    e = torch.tensor([[[1.0, 2.0], [1.0, 2.0]], [[1.0, 0.0], [-3.0, 0.0]]])
    torch.testing.assert_close(
        diversity_rewards(pairwise_distances(e)), torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    )


def test_baseline_errors_name_the_problem() -> None:
    pairs = pairwise_distances(torch.randn(4, 2, 3))
    with pytest.raises(ValueError, match="G >= 3.*got G = 2"):
        other_pairs_baseline(pairs)
    with pytest.raises(ValueError, match=">= 2 prompts per batch, got 1"):
        other_prompts_baseline(torch.rand(1, 4))
    with pytest.raises(ValueError, match="baseline must be one of"):
        compute_baseline("leave_one_out", pairs, diversity_rewards(pairs), None)
    with pytest.raises(ValueError, match=r"\[B, G >= 2, D\]"):
        pairwise_distances(torch.randn(4, 1, 3))
    with pytest.raises(ValueError, match="not a multiple of group_size 3"):
        grouped(torch.randn(8, 2), 3)


def test_surrogate_is_twice_the_per_sample_form_and_ignores_reward_gradients() -> None:
    logp = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    adv = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    diversity_surrogate(adv, logp).backward()
    torch.testing.assert_close(logp.grad, 2 * adv.detach() / 3)
    assert adv.grad is None
    with pytest.raises(ValueError, match=r"both be \[N\]"):
        diversity_surrogate(torch.zeros(3), torch.zeros(4))


def test_running_mean_baseline_is_a_debiased_ema_and_round_trips() -> None:
    running = RunningMeanBaseline(decay=0.5)
    assert running.value == 0.0  # no history: no baseline
    running.update(2.0)
    assert running.value == pytest.approx(2.0)  # debiased: the first value, not 0.5 * 2
    running.update(4.0)
    assert running.value == pytest.approx((0.5 * 0.5 * 2.0 + 0.5 * 4.0) / (1 - 0.25))
    restored = RunningMeanBaseline(decay=0.5)
    restored.load_state_dict(running.state_dict())
    assert restored.value == running.value and restored.count == 2
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\), got 1.0"):
        RunningMeanBaseline(1.0)


# -- unbiasedness ---------------------------------------------------------------------------------

NUM_SEQUENCES, DIM = 5, 3


def _toy_policy() -> tuple[torch.Tensor, torch.Tensor]:
    """(logits theta [M], fixed embeddings [M, D]) of a policy over M "sequences", float64."""
    g = torch.Generator().manual_seed(1)
    return 0.8 * torch.randn(NUM_SEQUENCES, generator=g, dtype=torch.float64), torch.randn(
        NUM_SEQUENCES, DIM, generator=g, dtype=torch.float64
    )


def _exact_gradient(theta: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """grad of J(theta) = sum_{y, y'} p(y) p(y') (1 - cos(E(y), E(y'))), by autograd on the enumeration."""
    theta = theta.clone().requires_grad_(True)
    p = theta.softmax(-1)
    d = pairwise_distances(emb[None])[0]
    (grad,) = torch.autograd.grad(p @ d @ p, theta)
    return grad


def _estimates(
    theta: torch.Tensor,
    emb: torch.Tensor,
    group_size: int,
    baseline: str,
    num_prompts: int = 20_000,
    prompts_per_batch: int = 16,
    loo: bool = False,
) -> torch.Tensor:
    """Per-prompt gradient estimates ``[R, M]`` of the surrogate, as the callback computes it: batches of
    ``prompts_per_batch`` prompts x G samples, the running baseline updated after each batch's loss."""
    g = torch.Generator().manual_seed(2)
    # one leaf row of logits per prompt, so autograd hands back each prompt's own gradient
    rows = theta.expand(num_prompts, -1).clone().requires_grad_(True)
    ys = torch.multinomial(
        theta.softmax(-1).expand(num_prompts, -1), group_size, replacement=True, generator=g
    )
    logp = rows.log_softmax(-1).gather(1, ys)  # [R, G]
    distances = pairwise_distances(emb[ys])  # [R, G, G]
    rewards = diversity_rewards(distances)
    running = RunningMeanBaseline(0.9)
    total = rows.new_zeros(())
    for start in range(0, num_prompts, prompts_per_batch):
        part = slice(start, start + prompts_per_batch)
        if loo:  # RLOO's leave-one-out mean of the others' rewards: depends on y_i (the wrong baseline)
            r = rewards[part]
            b = (r.sum(-1, keepdim=True) - r) / (group_size - 1)
        else:
            b = compute_baseline(baseline, distances[part], rewards[part], running)
        total = total + diversity_surrogate((rewards[part] - b).flatten(), logp[part].flatten())
        running.update(float(rewards[part].mean()))
    (grad,) = torch.autograd.grad(total, rows)
    return grad * prompts_per_batch  # undo the surrogate's mean over the batch's prompts


@pytest.mark.parametrize("group_size", [2, 4])
@pytest.mark.parametrize("baseline", ["none", "other_pairs", "other_prompts", "running_mean"])
def test_policy_gradient_is_unbiased(baseline: str, group_size: int) -> None:
    theta, emb = _toy_policy()
    exact = _exact_gradient(theta, emb)
    if baseline == "other_pairs" and group_size < 3:
        with pytest.raises(ValueError, match="G >= 3"):
            _estimates(theta, emb, group_size, baseline, num_prompts=16)
        return
    est = _estimates(theta, emb, group_size, baseline)
    mean, se = est.mean(0), est.std(0) / est.shape[0] ** 0.5
    assert bool((se < 0.1 * exact.abs().max()).all()), f"too noisy to test: se {se}, exact {exact}"
    z = (mean - exact) / se
    assert bool((z.abs() < 4).all()), f"mean {mean} vs exact {exact}: z = {z}"


def test_leave_one_out_reward_baseline_would_be_caught() -> None:
    """The unbiasedness test has the power to see the classic mistake: with the others' mean reward as
    the baseline, the expected gradient shrinks by (G - 2) / (G - 1), and vanishes for G = 2."""
    theta, emb = _toy_policy()
    exact = _exact_gradient(theta, emb)
    est = _estimates(theta, emb, 4, "none", loo=True)
    mean, se = est.mean(0), est.std(0) / est.shape[0] ** 0.5
    assert float(((mean - exact) / se).abs().max()) > 8
    assert bool((((mean - exact * 2 / 3) / se).abs() < 4).all())
    pairs = _estimates(theta, emb, 2, "none", num_prompts=512, loo=True)
    assert float(pairs.abs().max()) == 0.0


# -- the torchmetrics metric ----------------------------------------------------------------------


def test_pairwise_diversity_metric_merges_like_one_pass_over_all_data() -> None:
    torch.manual_seed(0)
    first, second = torch.randn(5, 4, 8), torch.randn(3, 4, 8)  # unequal shares, as on uneven ranks
    whole = PairwiseDiversity()
    whole.update(torch.cat([first, second]))
    expected = pairwise_cosine_diversity(torch.cat([first, second])).mean()
    torch.testing.assert_close(whole.compute(), expected)
    rank0, rank1 = PairwiseDiversity(), PairwiseDiversity()
    rank0.update(first)
    rank1.update(second[:1])
    rank1.update(second[1:])
    rank0.merge_state(rank1)
    torch.testing.assert_close(rank0.compute(), expected)
    # across processes the states are summed, which is what merge_state did
    assert {name: fx.__name__ for name, fx in rank0._reductions.items()} == {
        "total": "dim_zero_sum",
        "count": "dim_zero_sum",
    }


def test_pairwise_diversity_metric_weights_prompts_equally_and_refuses_empty() -> None:
    metric = PairwiseDiversity()
    with (
        pytest.warns(UserWarning, match="before the ``update``"),
        pytest.raises(ValueError, match="before any update"),
    ):
        metric.compute()
    same = torch.ones(2, 3, 4)  # two prompts whose 3 samples coincide: diversity 0
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # one prompt, 2 opposite samples: diversity 2
    metric.update(same)
    metric.update(opposite)
    torch.testing.assert_close(metric.compute(), torch.tensor(2.0 / 3))
