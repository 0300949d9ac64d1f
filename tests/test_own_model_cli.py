"""An own model (examples/own_model: ConditionalGRU wrapped by ModuleAdapter) through ``cfgrl`` and YAML
alone: pretrain, embedder, distill, diversity, merge, validate, evaluate (with the base's sweeps and the
merged models), generate; the model's module trusted with ``--import``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_cfgrl.cli.main import main
from tests.helpers.configs import allow_weak_embedder

REPO = Path(__file__).resolve().parents[1]
OWN = REPO / "examples" / "own_model"
IMPORT = ["--import", str(OWN / "gru_lm.py")]
SHORT = ["--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]
SHORT += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.slow
def test_own_gru_through_every_cfgrl_command(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    fits = [
        (OWN / "pretrain.yaml", ["--trainer.max_steps=4", "--data.init_args.num_train=256"]),
        (
            REPO / "examples" / "configs" / "embedder.yaml",
            ["--trainer.max_steps=2", "--data.init_args.num_train=256"],
        ),
        (OWN / "distill.yaml", ["--trainer.max_steps=2"]),
        # the 2-step embedder is near chance: the reward gate's override (the test is about the CLI)
        (allow_weak_embedder(OWN / "diversity.yaml", tmp_path / "configs"), ["--trainer.max_steps=2"]),
    ]
    for config, extra in fits:
        assert main(["fit", *IMPORT, "--config", str(config), *SHORT, *extra]) == 0, config.name
    runs = tmp_path / "runs"
    spec = torch.load(runs / "gru_distill/checkpoints/last.ckpt", weights_only=True)["hyper_parameters"][
        "generator"
    ]
    assert spec["class_path"] == "lightning_cfgrl.ModuleAdapter" or spec["class_path"].endswith(
        "ModuleAdapter"
    )
    assert spec["init_args"]["module"]["class_path"] == "gru_lm.ConditionalGRU"

    quality, diverse = (str(runs / f"gru_{n}/checkpoints/last.ckpt") for n in ("distill", "diversity"))
    args = ["merge", *IMPORT, "--quality", quality, "--diversity", diverse, "--lambdas", "0.5"]
    assert main([*args, "--out", "runs/gru_merged"]) == 0
    args = ["validate", *IMPORT, "--config", str(OWN / "distill.yaml"), "--ckpt_path", quality]
    assert main([*args, "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]) == 0

    capsys.readouterr()
    args = [
        "evaluate",
        *IMPORT,
        "--config",
        str(OWN / "evaluate.yaml"),
        "--protocol.num_samples",
        "2",
        "--protocol.num_seeds",
        "2",
    ]
    args += [
        "--protocol.num_selection_seeds",
        "2",
        "--candidates.merged_dir",
        "runs/gru_merged",
        "--output.progress",
        "false",
    ]
    assert main(args) == 0
    results = json.loads((runs / "gru_eval" / "results.json").read_text())
    names = [r["name"] for r in results["results"]]
    assert names[:4] == ["CFG g=1", "CFG g=2", "CFG g=3", "CFG g=5"]
    assert {"distilled beta=0", "distilled beta=15", "merged lambda=0.5"} <= set(names)
    assert "| CFG g=3 |" in capsys.readouterr().out

    args = [
        "generate",
        *IMPORT,
        "--checkpoint",
        str(runs / "gru_merged"),
        "--prompts",
        "[[1, 1, 1], [4, 3, 2]]",
    ]
    merged = next((runs / "gru_merged").glob("*.ckpt"), None) or next((runs / "gru_merged").glob("*"))
    args[args.index(str(runs / "gru_merged"))] = str(merged)
    assert main([*args, "--num_frames", "8", "--num_samples", "2", "--decoder", "synth", "--out", "gen"]) == 0
    meta = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert meta["num_frames"] == 8 and len(meta["audio"]) == 4
