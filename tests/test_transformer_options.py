"""``AudioTokenTransformer``'s options group (``models/options.py``): typed and documented, checked by
name, and checkpoints whose generator spec records the earlier flat arguments load, sample, resume and
merge unchanged; one written with ``control_layers="every"`` is refused by name and loads through the
experimental ``ControlFiLMTransformer``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import docstring_parser
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, load_generator, sample
from lightning_cfgrl.experimental import (
    ControlFiLMTransformer,
    load_control_film_generator,
    upgrade_control_film_spec,
)
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.io.specs import instantiate_spec, upgrade_spec
from lightning_cfgrl.merging.consistency import check_specs_agree, spec_differences
from lightning_cfgrl.models import AudioTokenTransformer, TransformerOptions
from lightning_cfgrl.models.options import FLAT_TO_OPTIONS
from lightning_cfgrl.training.configs import upgrade_hparams
from tests.helpers.models import BASE_ARGS, quiet_trainer

CONTROLS = ["guidance_scale", "diversity_weight"]
PROMPTS = torch.tensor([[1, 2, 3], [4, 1, 2]])
SETTINGS: dict[str, Any] = dict(rollout={"num_frames": 8, "num_samples_per_prompt": 2})
FILM_PATH = "lightning_cfgrl.experimental.control_film.ControlFiLMTransformer"


def flat_spec(spec: dict[str, Any], control_layers: str | None = None) -> dict[str, Any]:
    """``spec`` as the code before the grouping recorded it: the options flat in ``init_args`` (and the
    class ``AudioTokenTransformer`` with ``control_layers`` for the FiLM model)."""
    init_args = dict(spec["init_args"])
    init_args |= init_args.pop("options")
    if control_layers is not None:
        init_args["control_layers"] = control_layers
        return {
            "class_path": "lightning_cfgrl.models.transformer.AudioTokenTransformer",
            "init_args": init_args,
        }
    return {"class_path": spec["class_path"], "init_args": init_args}


def _fit(tmp: Path, steps: int, module: CFGRLModule, ckpt: Path | None = None) -> Any:
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[
            CFGDistillCallback(guidance_scale=[1.0, 3.0]),
            ModelCheckpoint(dirpath=tmp, save_last=True, every_n_train_steps=1),
        ],
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4), ckpt_path=str(ckpt) if ckpt else None)
    return trainer


def _student(cls: type = AudioTokenTransformer, seed: int = 0) -> AudioTokenTransformer:
    torch.manual_seed(seed)
    return cls(**BASE_ARGS, options=TransformerOptions(dropout=0.1, controls=CONTROLS))


def _write_flat(path: Path, control_layers: str | None = None) -> Path:
    """A copy of the checkpoint at ``path`` whose generator spec is recorded flat."""
    ckpt = load_checkpoint(path)
    ckpt["hyper_parameters"]["generator"] = flat_spec(ckpt["hyper_parameters"]["generator"], control_layers)
    out = path.with_name(f"flat_{control_layers or 'input'}.ckpt")
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints (2 steps) of a steerable student with dropout and of the FiLM model, and their flat
    copies."""
    out = {}
    for name, cls in (("input", AudioTokenTransformer), ("every", ControlFiLMTransformer)):
        tmp = tmp_path_factory.mktemp(name)
        _fit(tmp, 2, CFGRLModule(_student(cls), **SETTINGS))
        out[name] = tmp / "last.ckpt"
        out[f"flat_{name}"] = _write_flat(tmp / "last.ckpt", None if name == "input" else "every")
    return out


def _tokens(model: torch.nn.Module) -> torch.Tensor:
    controls = {"guidance_scale": 2.0, "diversity_weight": 1.0}
    return sample(model, PROMPTS, 8, num_samples=2, seed=3, controls=controls)


def test_a_flat_checkpoint_loads_and_samples_as_the_grouped_one(runs: dict[str, Path]) -> None:
    grouped, flat = load_generator(runs["input"]), load_generator(runs["flat_input"])
    assert flat.spec() == grouped.spec()
    assert flat.spec()["init_args"]["options"] == {
        "dropout": 0.1,
        "delays": None,
        "gradient_checkpointing": False,
        "controls": CONTROLS,
    }
    assert torch.equal(_tokens(flat), _tokens(grouped))
    module = CFGRLModule.load_from_checkpoint(runs["flat_input"])  # the spec rebuilt by instantiate_spec
    assert dict(module.hparams) == dict(CFGRLModule.load_from_checkpoint(runs["input"]).hparams)


def test_a_flat_checkpoint_resumes(runs: dict[str, Path], tmp_path: Path) -> None:
    """The resume check compares the checkpoint's (upgraded) generator spec with today's: no difference."""
    trainer = _fit(tmp_path, 3, CFGRLModule(_student(seed=5), **SETTINGS), runs["flat_input"])
    assert trainer.global_step == 3


def test_a_flat_checkpoint_still_refuses_a_changed_option_by_its_grouped_name(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    other = AudioTokenTransformer(**BASE_ARGS, options=TransformerOptions(dropout=0.2, controls=CONTROLS))
    with pytest.raises(ValueError, match="resume refused") as err:
        _fit(tmp_path, 3, CFGRLModule(other, **SETTINGS), runs["flat_input"])
    assert "generator.init_args.options.dropout: 0.1 (checkpoint) vs 0.2 (now)" in str(err.value)


def test_an_every_layer_checkpoint_is_refused_by_name_and_loads_through_experimental(
    runs: dict[str, Path],
) -> None:
    with pytest.raises(ValueError, match="control_layers='every'") as err:
        load_generator(runs["flat_every"])
    assert FILM_PATH in str(err.value) and "load_control_film_generator(path)" in str(err.value)
    with pytest.raises(ValueError, match=FILM_PATH):
        CFGRLModule.load_from_checkpoint(runs["flat_every"])
    loaded = load_control_film_generator(runs["flat_every"])
    assert type(loaded) is ControlFiLMTransformer
    assert torch.equal(_tokens(loaded), _tokens(load_generator(runs["every"])))
    recorded = load_checkpoint(runs["flat_every"])["hyper_parameters"]["generator"]
    assert upgrade_control_film_spec(recorded) == load_generator(runs["every"]).spec()


def test_upgrade_moves_only_the_flat_options_of_transformer_specs() -> None:
    flat = {
        "class_path": "lightning_cfgrl.models.AudioTokenTransformer",
        "init_args": {**BASE_ARGS, "dropout": 0.0, "delays": [0, 2], "gradient_checkpointing": True},
    }
    flat["init_args"]["control_layers"] = "input"  # the old default, recorded by no release but harmless
    upgraded = upgrade_spec(flat)
    assert upgraded["init_args"] == {
        **BASE_ARGS,
        "options": {"dropout": 0.0, "delays": [0, 2], "gradient_checkpointing": True},
    }
    assert upgrade_spec(upgraded) == upgraded  # today's layout is left as it is
    other = {"class_path": "lightning_cfgrl.core.module_adapter.ModuleAdapter", "init_args": {"delays": None}}
    assert upgrade_spec(other) == other  # another class's "delays" is its own
    hparams = upgrade_hparams({"generator": flat, "rollout": {"num_frames": 8}})
    assert hparams["generator"] == upgraded and hparams["rollout"] == {"num_frames": 8}
    assert isinstance(instantiate_spec(flat), AudioTokenTransformer)
    assert set(FLAT_TO_OPTIONS) == {f.name for f in dataclasses.fields(TransformerOptions)}


def test_merging_compares_old_and_new_specs_in_one_layout_and_options_field_by_field() -> None:
    new = _student().spec()
    check_specs_agree({"old": flat_spec(new), "new": new})  # the same generator, recorded two ways
    dropout = {
        **new,
        "init_args": {**new["init_args"], "options": {**new["init_args"]["options"], "dropout": 0}},
    }
    assert spec_differences(new, dropout) == []  # dropout changes training, not the merged function
    delays = {
        **new,
        "init_args": {**new["init_args"], "options": {**new["init_args"]["options"], "delays": [0, 0]}},
    }
    assert spec_differences(new, delays) == ["init_args.options.delays: None vs [0, 0]"]


def test_options_are_a_typed_documented_dataclass_checked_by_name() -> None:
    documented = {p.arg_name for p in docstring_parser.parse(TransformerOptions.__doc__).params}
    for field in dataclasses.fields(TransformerOptions):
        assert field.type and field.name in documented, field.name
    # a dict (YAML, a checkpoint's spec) and the object build the same model
    torch.manual_seed(0)
    a = AudioTokenTransformer(**BASE_ARGS, options={"delays": [0, 1], "controls": ["guidance_scale"]})
    torch.manual_seed(0)
    b = AudioTokenTransformer(
        **BASE_ARGS, options=TransformerOptions(delays=(0, 1), controls=("guidance_scale",))
    )
    assert a.spec() == b.spec()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(ValueError, match=r"options.dropout must be in \[0, 1\] \(a probability\), got 1.5"):
        AudioTokenTransformer(options={"dropout": 1.5})
    with pytest.raises(ValueError, match=r"options has no setting\(s\) \['dropuot'\]"):
        AudioTokenTransformer(options={"dropuot": 0.1})
    with pytest.raises(TypeError, match=r"options.controls must be a list of control names"):
        TransformerOptions(controls="guidance_scale")


def test_cli_help_documents_the_options_and_yaml_nests_them() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(AudioTokenTransformer, "generator")
    help_text = " ".join(parser.format_help().split())
    assert "--generator.options.gradient_checkpointing {true,false}" in help_text
    assert "recompute the block in backward" in help_text  # the field's doc
    config = parser.parse_object({"generator": {**BASE_ARGS, "options": {"controls": CONTROLS}}})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    model = instantiate(config).generator
    assert isinstance(model, AudioTokenTransformer) and model.control_names == tuple(CONTROLS)
