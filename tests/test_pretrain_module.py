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


def test_stacked_condition_dropout_warns_with_the_resulting_keep_probability():
    class DropsPrompts(NextTokenGRU):
        condition_dropout = 0.1

    torch.manual_seed(0)
    adapter = ModuleAdapter(DropsPrompts(vocab_size=V), 2, V, bos_id=V, null_condition=0)
    with pytest.warns(
        UserWarning,
        match=r"stacks on the condition dropout DropsPrompts applies itself .* kept with probability 0\.72, not 0\.8",
    ):
        PretrainModule(adapter, condition_dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PretrainModule(adapter, condition_dropout=0.0)  # the model's own dropout alone: fine
        PretrainModule(_adapter(), condition_dropout=0.2)  # no dropout declared by the model


def test_pretrain_module_rejects_a_bad_dropout_value():
    with pytest.raises(ValueError, match=r"condition_dropout must be in \[0, 1\], got 1.5"):
        PretrainModule(_adapter(), condition_dropout=1.5)
    assert isinstance(_adapter().module, nn.Module)
