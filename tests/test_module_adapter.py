"""ModuleAdapter: both LM conventions meet the TokenGenerator contract; a mis-wired one fails on first use."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lightning_cfgrl import ModuleAdapter, SamplingConfig, sample
from tests.helpers.gru_lm import NextTokenGRU, ShiftingGRU

V = 8
CONDITION = torch.tensor([1, 3])


def _wrapped(convention: str, seed: int = 0, **kwargs) -> ModuleAdapter:
    torch.manual_seed(seed)
    module = NextTokenGRU(vocab_size=V) if convention == "next_token" else ShiftingGRU(vocab_size=V)
    bos = V if convention == "next_token" else None
    return ModuleAdapter(module, 2, V, bos_id=bos, null_condition=0, convention=convention, **kwargs).eval()


def _moved_positions(adapter: nn.Module, position: int, length: int = 10) -> list[int]:
    """Output positions whose logits change when every token of step ``position`` changes."""
    steps = torch.randint(0, V, (1, 2, length), generator=torch.Generator().manual_seed(1))
    changed = steps.clone()
    changed[:, :, position] = (changed[:, :, position] + 1) % V
    with torch.no_grad():
        diff = (adapter(steps, CONDITION[:1]) - adapter(changed, CONDITION[:1])).abs().amax(dim=(0, 1, 3))
    return [s for s, d in enumerate(diff.tolist()) if d > 0]


@pytest.mark.parametrize("convention", ["next_token", "shifts_internally"])
def test_each_convention_meets_the_contract(convention):
    adapter = _wrapped(convention)
    # logits at s depend on steps < s only, and on step s - 1: changing step 6 moves positions 7.. only
    assert _moved_positions(adapter, 6) == [7, 8, 9]
    assert _moved_positions(adapter, 0) == list(range(1, 10))


def test_the_two_conventions_give_the_same_model():
    next_token, shifting = _wrapped("next_token"), _wrapped("shifts_internally")
    steps = torch.randint(0, V, (2, 2, 7), generator=torch.Generator().manual_seed(2))
    assert torch.equal(next_token(steps, CONDITION), shifting(steps, CONDITION))
    config = SamplingConfig(guidance_scale=3.0)
    a = sample(next_token, CONDITION, 6, config, num_samples=2, seed=0)
    b = sample(shifting, CONDITION, 6, config, num_samples=2, seed=0)
    assert a.shape == (4, 2, 6) and torch.equal(a, b)


def test_a_shifting_module_wired_as_next_token_fails_on_first_use_naming_the_fix():
    torch.manual_seed(0)
    miswired = ModuleAdapter(ShiftingGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0, verify=False)
    # what goes wrong unchecked (the measurement): step 6 moves 8 and 9, the contract needs 7
    assert _moved_positions(miswired.eval(), 6) == [8, 9]
    adapter = ModuleAdapter(ShiftingGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0).eval()
    with pytest.raises(ValueError) as err:
        sample(adapter, CONDITION, 4, seed=0)
    message = str(err.value)
    assert "ModuleAdapter(convention='next_token') is mis-wired for ShiftingGRU" in message
    assert "moved the logits at positions [3] but not at 2" in message
    assert message.endswith("Build it with ModuleAdapter(..., convention='shifts_internally')")


def test_a_next_token_module_wired_as_shifting_fails_naming_the_fix():
    torch.manual_seed(0)
    adapter = ModuleAdapter(
        NextTokenGRU(vocab_size=V), 2, V, null_condition=0, convention="shifts_internally"
    )
    with pytest.raises(
        ValueError, match=r"including position 1 itself: the module's output at t sees token t"
    ) as err:
        adapter(torch.zeros(2, 2, 3, dtype=torch.long), CONDITION)
    assert "convention='next_token', bos_id=<a start id the module embeds>" in str(err.value)


def test_a_bidirectional_module_is_reported_as_not_causal():
    torch.manual_seed(0)
    adapter = ModuleAdapter(NextTokenGRU(vocab_size=V, bidirectional=True), 2, V, bos_id=V)
    with pytest.raises(ValueError, match="outputs before step 1 depend on it, so the module is not causal"):
        sample(adapter.eval(), CONDITION, 4, seed=0)


def test_the_probe_runs_once_in_eval_mode_and_respects_delays():
    torch.manual_seed(0)
    module = NextTokenGRU(vocab_size=V)
    modes: list[bool] = []
    module.register_forward_hook(lambda mod, args, out: modes.append(mod.training))
    adapter = ModuleAdapter(module, 2, V, bos_id=V, delays=(0, 1)).train()
    steps = torch.randint(0, V, (2, 2, 5))
    adapter(steps, CONDITION)
    assert modes == [False, False, True]  # two probe passes in eval mode, then the call itself
    adapter(steps, CONDITION)
    assert len(modes) == 4


def test_a_module_whose_logits_never_move_warns_instead_of_guessing():
    class ZeroHead(NextTokenGRU):
        def forward(self, tokens, condition):
            return super().forward(tokens, condition) * 0.0

    adapter = ModuleAdapter(ZeroHead(vocab_size=V), 2, V, bos_id=V)
    with pytest.warns(UserWarning, match="could not check its convention='next_token'"):
        adapter(torch.zeros(1, 2, 3, dtype=torch.long), CONDITION[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter(torch.zeros(1, 2, 3, dtype=torch.long), CONDITION[:1])  # checked once only


def test_bad_arguments_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="needs bos_id .* pass convention='shifts_internally'"):
        ModuleAdapter(NextTokenGRU(vocab_size=V), 2, V)
    with pytest.raises(
        ValueError, match=r"convention must be one of \('next_token', 'shifts_internally'\), got 'shifted'"
    ):
        ModuleAdapter(NextTokenGRU(vocab_size=V), 2, V, bos_id=V, convention="shifted")  # type: ignore[arg-type]
    adapter = ModuleAdapter(NextTokenGRU(vocab_size=V), 3, V, bos_id=V, verify=False)
    with pytest.raises(
        ValueError, match=r"wrapped module returned logits of shape \(1, 2, 3, 8\), expected \(1, 3, 3, 8\)"
    ):
        adapter(torch.zeros(1, 3, 3, dtype=torch.long), CONDITION[:1])
