"""Write ``examples/configs/folk/*.yaml`` from the shipped stage configs, swapping only the model, the data
and the files they read, so the real-music runs are the shipped recipe and the recipe is written once.

    python examples/folk_configs.py          # rewrites examples/configs/folk/*.yaml
    python examples/folk_configs.py --check  # exit 1 if a folk config differs from what it would write

The shipped files carry the comments that explain each setting; ``tests/test_folk_configs.py`` checks
that what is left after removing the swap is the same.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parent / "configs"
STAGES = ["pretrain", "embedder", "distill_beta0", "distill_beta15", "distill_placebo", "steerable"]

# the Essen folk tunes of music21's corpus (lightning_cfgrl.experiments.folk): 48 sixteenth-note frames,
# 2 codebooks (pitch-or-rest and onset/hold, V = 40), prompts (collection, meter, mode)
CORPUS = {
    "class_path": "lightning_cfgrl.experiments.folk.FolkCorpus",
    "init_args": {
        "collections": ["han1", "han2", "lux", "lot", "zuccal0"],
        "num_frames": 48,
        "min_tunes": 40,
    },
}
NUM_FRAMES = 48
GENERATOR = {
    "class_path": "lightning_cfgrl.models.AudioTokenTransformer",
    "init_args": {
        "num_codebooks": 2,
        "vocab_size": 40,
        "condition_sizes": [4, 6, 3],
        "dim": 64,
        "num_layers": 3,
        "num_heads": 4,
        "max_frames": NUM_FRAMES,
    },
}
EMBEDDER = {
    "class_path": "lightning_cfgrl.embedders.ContrastiveTokenEmbedder",
    "init_args": {
        "num_codebooks": 2,
        "vocab_size": 40,
        "dim": 96,
        "embed_dim": 64,
        "num_layers": 2,
        "kernel_size": 5,
    },
}
CHUNK_FRAMES = 24  # half a tune, as the shipped 16 of 32 frames
# validation: the learned judge (trained on tunes the generator never saw, by `folk_study.py prepare`)
# and the two rules no model wrote
SCORERS = [
    {
        "class_path": "lightning_cfgrl.experiments.folk.FolkJudgeAdherence",
        "init_args": {"corpus": CORPUS, "checkpoint": "runs/folk_study/judge.safetensors"},
    },
    {"class_path": "lightning_cfgrl.experiments.folk.MeterAlignment", "init_args": {"corpus": CORPUS}},
    {"class_path": "lightning_cfgrl.experiments.folk.KeyProfileMode", "init_args": {"corpus": CORPUS}},
]
TUNES = {
    "class_path": "lightning_cfgrl.experiments.folk.FolkTuneDataModule",
    "init_args": {"corpus": CORPUS, "batch_size": 64},
}
PROMPTS = {
    "class_path": "lightning_cfgrl.experiments.folk.FolkPromptDataModule",
    "init_args": {"corpus": CORPUS},
}
DECODER = {"class_path": "lightning_cfgrl.experiments.folk.FolkRenderer"}


def _runs(value):
    """``runs/<name>/...`` -> ``runs/folk_<name>/...``: the folk runs sit beside the built-in domain's."""
    if isinstance(value, str) and value.startswith("runs/") and not value.startswith("runs/folk_"):
        return "runs/folk_" + value[len("runs/") :]
    return value


def swap(stage: str, shipped: dict) -> dict:
    """The shipped config of ``stage`` with the folk model, data and paths."""
    config = copy.deepcopy(shipped)
    model = config["model"]["init_args"]
    if "generator" in model:
        generator = copy.deepcopy(GENERATOR)
        options = shipped["model"]["init_args"]["generator"]["init_args"].get("options")
        if options:  # the steerable student's control inputs
            generator["init_args"]["options"] = options
        model["generator"] = generator
    if "embedder" in model:  # the reward embedder's own training run
        model["embedder"] = copy.deepcopy(EMBEDDER)
        model["chunk_frames"] = CHUNK_FRAMES
    if "init_checkpoint" in model:
        model["init_checkpoint"] = _runs(model["init_checkpoint"])
    if config["model"]["class_path"].endswith("CFGRLModule"):
        model.setdefault("rollout", {})["num_frames"] = NUM_FRAMES
        model.setdefault("validation", {})["scorers"] = copy.deepcopy(SCORERS)
    data = copy.deepcopy(TUNES if stage in ("pretrain", "embedder") else PROMPTS)
    if stage not in ("pretrain", "embedder"):
        data["init_args"]["batch_size"] = shipped["data"]["init_args"]["batch_size"]
    config["data"] = data
    logger = config["trainer"]["logger"]["init_args"]
    logger["name"] = "folk_" + logger["name"]
    for callback in config["trainer"].get("callbacks", []):
        args = callback.get("init_args")
        if not args:
            continue
        if callback["class_path"].endswith("AudioSampleLogger"):
            args["decoder"] = copy.deepcopy(DECODER)
            args.setdefault("clips", {})["num_frames"] = NUM_FRAMES
        if isinstance(args.get("embedder"), dict):
            embedder_args = args["embedder"].get("init_args", {})
            if "checkpoint" in embedder_args:
                embedder_args["checkpoint"] = _runs(embedder_args["checkpoint"])
        if isinstance(args.get("teacher"), dict) and args["teacher"].get("checkpoint"):
            args["teacher"]["checkpoint"] = _runs(args["teacher"]["checkpoint"])
        if "anchor_checkpoint" in args:
            args["anchor_checkpoint"] = _runs(args["anchor_checkpoint"])
    return config


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # write the corpus out at every use, no &id001 anchors
        return True


def render(stage: str) -> str:
    shipped = yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text())
    header = (
        f"# Written by examples/folk_configs.py from examples/configs/{stage}.yaml (whose comments explain\n"
        "# each setting): the same stage with only the model, the data and the paths swapped to the Essen\n"
        '# folk tunes (pip install -e ".[music]"). Edit the shipped file, then rerun the script.\n'
    )
    return header + yaml.dump(
        swap(stage, shipped), Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=None
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences instead of writing")
    args = parser.parse_args()
    stale = []
    for stage in STAGES:
        path = CONFIGS / "folk" / f"{stage}.yaml"
        text = render(stage)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("stale (rerun python examples/folk_configs.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
