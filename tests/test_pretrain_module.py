"""PretrainModule on one's own model: init_checkpoint, condition dropout for any condition shape, and
the warning when the model drops prompts itself."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_cfgrl import ModuleAdapter, PretrainModule
from lightning_cfgrl.core.condition import where_condition
from tests.helpers.gru_lm import NextTokenGRU
from tests.helpers.models import quiet_trainer

V = 8


def _adapter(seed: int = 0, **kwargs) -> ModuleAdapter:
    torch.manual_seed(seed)
    return ModuleAdapter(NextTokenGRU(vocab_size=V, **kwargs), 2, V, bos_id=V, null_condition=0)


def _batches(n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "frames": torch.randint(0, V, (8, 2, 6), generator=g),
            "condition": torch.randint(1, 5, (8,), generator=g),
        }
        for _ in range(n)
    ]


def test_where_condition_drops_per_sample_for_any_condition_shape():
    keep = torch.tensor([True, False, True])
    flat, rows = torch.tensor([1, 2, 3]), torch.tensor([[1, 1], [2, 2], [3, 3]])
    assert where_condition(keep, flat, torch.zeros_like(flat)).tolist() == [1, 0, 3]
    assert where_condition(keep, rows, torch.zeros_like(rows)).tolist() == [[1, 1], [0, 0], [3, 3]]
    mixed = where_condition(keep, {"a": flat, "b": rows}, {"a": flat * 0, "b": rows * 0})
    assert mixed["a"].tolist() == [1, 0, 3] and mixed["b"].tolist() == [[1, 1], [0, 0], [3, 3]]


def test_full_condition_dropout_trains_on_the_null_prompt_for_a_flat_condition():
    module = PretrainModule(_adapter(), condition_dropout=1.0)
    batch = _batches(1)[0]
    null_batch = {"frames": batch["frames"], "condition": torch.zeros_like(batch["condition"])}
    dropped, unconditional = module._loss(batch, drop=True), module._loss(null_batch, drop=False)
    assert torch.equal(dropped, unconditional)
    assert not torch.equal(module._loss(batch, drop=False), unconditional)


@pytest.mark.slow  # trains a model
def test_init_checkpoint_continues_from_saved_weights(tmp_path):
    module = PretrainModule(_adapter(seed=0), condition_dropout=0.2, learning_rate=1e-2)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(module, DataLoader(_batches(), batch_size=None))
    path = tmp_path / "base.ckpt"
    trainer.save_checkpoint(path)
    resumed = PretrainModule(_adapter(seed=1), init_checkpoint=str(path))
    for key, value in module.generator.state_dict().items():
        assert torch.equal(resumed.generator.state_dict()[key], value), key
    with pytest.raises(ValueError, match=r"init_checkpoint '.*base\.ckpt' does not fit the generator"):
        PretrainModule(_adapter(dim=12), init_checkpoint=str(path))


class _Declares(NextTokenGRU):
    """A GRU that declares (but does not apply) a condition dropout under a given name."""


def _declaring(name: str, where: str) -> ModuleAdapter:
    torch.manual_seed(0)
    inner = _Declares(vocab_size=V)
    adapter = ModuleAdapter(inner, 2, V, bos_id=V, null_condition=0)
    if where == "wrapped_instance":
        setattr(inner, name, 0.1)
    elif where == "wrapped_class":
        inner = type("DeclaresOnClass", (NextTokenGRU,), {name: 0.1})(vocab_size=V)
        adapter = ModuleAdapter(inner, 2, V, bos_id=V, null_condition=0)
    elif where == "nested_submodule":  # deep inside: the condition embedding's own holder
        holder = nn.Module()
        setattr(holder, name, 0.1)
        inner.cond_encoder = holder
    elif where == "generator":
        setattr(adapter, name, 0.1)
    return adapter


@pytest.mark.parametrize(
    "name",
    ["condition_dropout", "cond_drop_prob", "p_uncond", "class_dropout_prob", "textDropout", "uncond_prob"],
)
@pytest.mark.parametrize("where", ["wrapped_instance", "wrapped_class", "nested_submodule", "generator"])
def test_declared_condition_dropout_warns_for_any_spelling_and_place(name: str, where: str):
    with pytest.warns(
        UserWarning,
        match=r"stacks on the condition dropout the model declares itself .*kept with "
        r"probability 0\.72, not 0\.8",
    ) as record:
        PretrainModule(_declaring(name, where), condition_dropout=0.2)
    assert name in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PretrainModule(_declaring(name, where), condition_dropout=0.0)  # the model's own dropout alone: fine


@pytest.mark.parametrize(
    "name", ["dropout", "attention_dropout", "layerdrop", "label_smoothing", "cfg_scale", "p"]
)
def test_other_rates_are_not_condition_dropout(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PretrainModule(_declaring(name, "wrapped_instance"), condition_dropout=0.2)
        PretrainModule(_adapter(), condition_dropout=0.2)  # no dropout declared by the model


class _DropsInCode(NextTokenGRU):
    """Replaces a share of its prompts by the null prompt in train mode, with no attribute naming it
    (a constant in ``forward``); ``nn.Dropout`` on the hidden state besides (ordinary dropout, no warning)."""

    def __init__(self, share: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mix = nn.Dropout(0.3)
        self._q = share

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if self.training:
            condition = torch.where(
                torch.rand(condition.shape) < self._q, torch.zeros_like(condition), condition
            )
        h, _ = self.rnn(self.mix(self.emb(tokens).sum(1)) + self.cond(condition)[:, None])
        return self.out(h).reshape(tokens.shape[0], tokens.shape[2], self.k, self.v).transpose(1, 2)


def _fit_one_step(inner: nn.Module, condition_dropout: float = 0.2) -> None:
    torch.manual_seed(0)
    adapter = ModuleAdapter(inner, 2, V, bos_id=V, null_condition=0)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(
        PretrainModule(adapter, condition_dropout=condition_dropout), DataLoader(_batches(1), batch_size=None)
    )


def test_condition_dropout_applied_in_code_is_measured_at_the_first_step():
    torch.manual_seed(0)
    with pytest.warns(
        UserWarning,
        match=r"the model applies in train mode \(ModuleAdapter replaced (\d+)% of the "
        r"first batch's prompts",
    ) as record:
        _fit_one_step(_DropsInCode(0.5, vocab_size=V))
    message = next(str(r.message) for r in record if "applies in train mode" in str(r.message))
    share = int(message.split("replaced ")[1].split("%")[0]) / 100
    assert 0.3 <= share <= 0.7, message  # 64 draws of a 0.5 coin
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*stacks on the condition dropout.*")
        _fit_one_step(_DropsInCode(0.0, vocab_size=V))  # ordinary dropout only: nothing to warn about
        _fit_one_step(_DropsInCode(0.5, vocab_size=V), condition_dropout=0.0)  # the model's alone


def test_the_probe_leaves_mode_dropout_and_rng_as_they_were():
    from lightning_cfgrl.training.condition_dropout import applied_condition_dropout

    torch.manual_seed(0)
    adapter = ModuleAdapter(_DropsInCode(0.5, vocab_size=V), 2, V, bos_id=V, null_condition=0).eval()
    batch = _batches(1)[0]
    steps = adapter.pattern.frames_to_steps(batch["frames"], V)
    state = torch.random.get_rng_state()
    assert applied_condition_dropout(adapter, steps, batch["condition"]) > 0
    assert not adapter.training and adapter.module.mix.p == 0.3
    assert torch.equal(torch.random.get_rng_state(), state)
    # a student in train mode with a frozen part in eval mode keeps that layout
    adapter.train()
    adapter.module.cond.eval()
    assert applied_condition_dropout(adapter, steps, batch["condition"]) > 0
    assert adapter.training and adapter.module.rnn.training and not adapter.module.cond.training


def test_pretrain_module_rejects_a_bad_dropout_value():
    with pytest.raises(ValueError, match=r"condition_dropout must be in \[0, 1\], got 1.5"):
        PretrainModule(_adapter(), condition_dropout=1.5)
    assert isinstance(_adapter().module, nn.Module)
