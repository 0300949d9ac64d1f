"""Checkpoints rebuild one's own generator: ``spec()`` (nested through ``ModuleAdapter``), the dict or
YAML it was built from, or an early warning when none of these exist."""

from __future__ import annotations

import warnings

import pytest
import torch
import yaml

from lightning_cfgrl import CFGRLModule, ModuleAdapter, PretrainModule, load_generator
from tests.helpers.gru_lm import NextTokenGRU, NoSpecGRU
from tests.helpers.models import quiet_trainer

V = 8
ADAPTER_SPEC = {
    "class_path": "lightning_cfgrl.ModuleAdapter",
    "init_args": {
        "module": {"class_path": "tests.helpers.gru_lm.NoSpecGRU", "init_args": {"vocab_size": V, "dim": 12}},
        "num_codebooks": 2,
        "vocab_size": V,
        "bos_id": V,
        "null_condition": 0,
    },
}


def _saved(module, tmp_path) -> str:
    trainer = quiet_trainer(max_steps=0)
    trainer.strategy.connect(module)
    path = str(tmp_path / "model.ckpt")
    trainer.save_checkpoint(path)
    return path


def _same_logits(a, b) -> bool:
    steps = torch.randint(0, V, (2, 2, 5), generator=torch.Generator().manual_seed(0))
    condition = torch.tensor([1, 2])
    with torch.no_grad():
        return torch.equal(a.eval()(steps, condition), b.eval()(steps, condition))


def test_adapter_spec_nests_the_module_spec_and_the_checkpoint_rebuilds_it(tmp_path):
    torch.manual_seed(0)
    adapter = ModuleAdapter(
        NextTokenGRU(vocab_size=V, dim=12),
        2,
        V,
        null_condition=0,
        convention="shifts_internally",
        verify=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a generator with a spec: no warning
        module = PretrainModule(adapter)
    assert module.hparams["generator"] == {
        "class_path": "lightning_cfgrl.core.module_adapter.ModuleAdapter",
        "init_args": {
            "module": {
                "class_path": "tests.helpers.gru_lm.NextTokenGRU",
                "init_args": {"num_codebooks": 2, "vocab_size": V, "dim": 12, "bidirectional": False},
            },
            "num_codebooks": 2,
            "vocab_size": V,
            "bos_id": None,
            "null_condition": 0,
            "delays": None,
            "convention": "shifts_internally",
            "verify": False,
        },
    }
    rebuilt = load_generator(_saved(module, tmp_path))
    assert isinstance(rebuilt, ModuleAdapter) and rebuilt.convention == "shifts_internally"
    assert _same_logits(adapter, rebuilt)


def test_a_generator_without_spec_warns_at_construction_naming_the_fix():
    torch.manual_seed(0)
    adapter = ModuleAdapter(NoSpecGRU(vocab_size=V), 2, V, bos_id=V, null_condition=0)
    with pytest.warns(UserWarning) as record:
        CFGRLModule(adapter, rollout={"num_frames": 4})
    message = str(record[0].message)
    assert message.startswith(
        "CFGRLModule: checkpoints will hold the generator's weights but not how to build it"
    )
    assert (
        "ModuleAdapter.spec() cannot record it: the wrapped NoSpecGRU has no spec() method; give it one"
        in message
    )
    callable_null = ModuleAdapter(NextTokenGRU(vocab_size=V), 2, V, bos_id=V, null_condition=lambda c: c * 0)
    with pytest.warns(UserWarning, match="null_condition is a function, which a checkpoint cannot record"):
        PretrainModule(callable_null)


def test_a_generator_built_from_a_dict_records_that_dict(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = CFGRLModule(ADAPTER_SPEC, rollout={"num_frames": 4})
    assert module.hparams["generator"] == ADAPTER_SPEC
    assert _same_logits(module.generator, load_generator(_saved(module, tmp_path)))


def test_a_generator_built_by_lightning_cli_records_its_yaml(tmp_path):
    from lightning_cfgrl.cli.main import run_cli

    config = {
        "model": {
            "class_path": "lightning_cfgrl.PretrainModule",
            "init_args": {"generator": ADAPTER_SPEC, "condition_dropout": 0.1},
        },
        "data": {"class_path": "lightning_cfgrl.experiments.SyntheticMusicDataModule"},
        "trainer": {"logger": False, "accelerator": "cpu"},
    }
    path = tmp_path / "byom.yaml"
    path.write_text(yaml.safe_dump(config))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cli = run_cli(["--config", str(path)], run=False)
    assert not [w for w in record if "checkpoints will hold" in str(w.message)]
    spec = cli.model.hparams["generator"]
    assert spec["class_path"] == "lightning_cfgrl.ModuleAdapter"
    assert spec["init_args"]["null_condition"] == 0 and spec["init_args"]["convention"] == "next_token"
    assert spec["init_args"]["module"] == {
        "class_path": "tests.helpers.gru_lm.NoSpecGRU",
        "init_args": {"num_codebooks": 2, "vocab_size": V, "dim": 12, "bidirectional": False},
    }
    assert _same_logits(cli.model.generator, load_generator(_saved(cli.model, tmp_path)))
