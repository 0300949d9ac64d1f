"""The folk YAMLs (examples/configs/folk/) are the shipped YAMLs (examples/configs/) with only the model,
the data and the files they read swapped: the real-music claims are claims about the shipped recipe.
Reads YAML only (no music21 needed)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
STAGES = ["pretrain", "embedder", "distill_beta0", "distill_beta15", "distill_placebo", "steerable"]
# what a domain swap may change: the model's architecture and the files / lengths that follow from the
# data, the data module, the scorers of the domain's validation, the audio decoder and the run's name
MODEL_KEYS = ("generator", "embedder", "chunk_frames", "init_checkpoint")
SWAPPED_SETTINGS = {"rollout": "num_frames", "validation": "scorers"}  # per group: the field a domain sets


def without_swap(config: dict) -> dict:
    """``config`` with the model, data and paths removed; what is left is the recipe."""
    config = copy.deepcopy(config)
    config.pop("data")
    model = config["model"]["init_args"]
    for key in MODEL_KEYS:
        model.pop(key, None)
    for group, field in SWAPPED_SETTINGS.items():
        if group in model:
            model[group].pop(field, None)
            if not model[group]:
                del model[group]
    trainer = config["trainer"]
    trainer["logger"]["init_args"].pop("name")
    for callback in trainer.get("callbacks", []):
        args = callback.get("init_args", {})
        if callback["class_path"].endswith("AudioSampleLogger"):
            args.pop("decoder", None)
            args.get("clips", {}).pop("num_frames", None)
        if isinstance(args.get("embedder"), dict):  # the reward's embedder: a checkpoint of this domain
            args["embedder"].get("init_args", {}).pop("checkpoint", None)
        args.pop("anchor_checkpoint", None)
        args.get("teacher", {}).pop("checkpoint", None)
    return config


@pytest.mark.parametrize("stage", STAGES)
def test_folk_yaml_is_the_shipped_yaml_with_model_and_data_swapped(stage):
    shipped = yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text())
    folk = yaml.safe_load((CONFIGS / "folk" / f"{stage}.yaml").read_text())
    assert without_swap(folk) == without_swap(shipped), (
        f"examples/configs/folk/{stage}.yaml differs from examples/configs/{stage}.yaml in more than the "
        "model, data and paths; copy the shipped recipe (trainer, callbacks, learning rate) into it"
    )
    assert folk["data"]["class_path"].startswith("lightning_cfgrl.experiments.folk.")
    assert folk["trainer"]["logger"]["init_args"]["name"].startswith("folk_")


def test_every_folk_yaml_has_a_shipped_counterpart():
    assert sorted(p.stem for p in (CONFIGS / "folk").glob("*.yaml")) == sorted(STAGES)


def test_folk_yamls_are_what_folk_configs_writes():
    """One source: the folk YAMLs are generated from the shipped ones (``examples/folk_configs.py``)."""
    sys.path.insert(0, str(CONFIGS.parent))
    try:
        import folk_configs
    finally:
        sys.path.pop(0)
    for stage in folk_configs.STAGES:
        assert (CONFIGS / "folk" / f"{stage}.yaml").read_text() == folk_configs.render(stage), (
            f"examples/configs/folk/{stage}.yaml is stale: run python examples/folk_configs.py"
        )
