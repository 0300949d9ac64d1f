"""Bit-identity of CFGRLModule's grouped settings (``training/configs.py``) against the flat layout.

With the code of ``--before`` (a commit from before the grouping, exported with ``git archive``) a tiny
``pretrain.yaml`` run (5 steps) and ``distill.yaml`` run (3 steps) make a checkpoint of the flat
layout, and ``cfgrl generate`` samples it (fixed seed; plain, and CFG 3 with top-k 8). Then with this
tree's code: the same checkpoint is sampled again, and ``distill.yaml`` (the grouped, default-stripped
config) trains 3 steps from the same base. Compared bit for bit: the token files and the trained weights.

    python benchmarks/configs_bit_identity.py --before dae02e5 --work /tmp/configs_bitid
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PROMPTS = "[[1, 1, 1], [4, 3, 2]]"
GENERATIONS = {"plain": [], "cfg3_top_k8": ["--guidance", "3", "--top_k", "8"]}


def cfgrl(code: Path, work: Path, *args: str) -> None:
    """``cfgrl ARGS`` with the package of ``code``, in ``work`` (importable too: a test domain's module)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(work), str(code)]), OMP_NUM_THREADS="1")
    subprocess.run([PY, "-m", "lightning_cfgrl.cli.main", *args], cwd=work, env=env, check=True)


def export(commit: str, into: Path) -> Path:
    """The tree of ``commit`` (``git archive``) extracted into ``into``: the code to compare against."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
    with tempfile.TemporaryFile() as f:
        f.write(archive.stdout)
        f.seek(0)
        tarfile.open(fileobj=f).extractall(into, filter="data")
    return into


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SHORT = ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]


def train_and_sample(before: str, work: Path) -> tuple[Path, dict[str, str]]:
    """With the code of ``before`` (exported to ``work/before_src``): ``pretrain.yaml`` 5 steps
    (``runs/base``) and ``distill.yaml`` 3 steps (``runs/distill``); that checkpoint sampled by ``cfgrl
    generate`` with both codes; ``distill.yaml`` 3 steps again with this tree's code and config
    (``runs/distill_after``). Returns the old code's folder and ``{"<side>_<generation>": tokens sha256}``."""
    work.mkdir(parents=True, exist_ok=True)
    old = export(before, work / "before_src")
    cfgrl(old, work, "fit", "--config", str(old / "examples/configs/pretrain.yaml"), "--trainer.max_steps", "5",
          "--trainer.val_check_interval", "5", "--data.init_args.num_train", "512", "--data.init_args.num_val", "64",
          *SHORT)  # fmt: skip
    distill = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", *SHORT]
    cfgrl(old, work, "fit", "--config", str(old / "examples/configs/distill.yaml"), *distill)
    checkpoint = work / "runs/distill/checkpoints/last.ckpt"
    tokens = {}
    for name, extra in GENERATIONS.items():
        for side, code in (("before", old), ("after", ROOT)):
            out = work / f"{side}_{name}"
            cfgrl(code, work, "generate", "--checkpoint", str(checkpoint), "--prompts", PROMPTS,
                  "--num_samples", "4", "--seed", "123", "--out", str(out), *extra)  # fmt: skip
            tokens[f"{side}_{name}"] = sha256(out / "tokens.safetensors")
    cfgrl(ROOT, work, "fit", "--config", str(ROOT / "examples/configs/distill.yaml"), *distill,
          "--trainer.logger.init_args.name", "distill_after")  # fmt: skip
    return old, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a commit with the flat CFGRLModule arguments")
    parser.add_argument("--work", type=Path, required=True, help="an empty folder for the runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/configs_bit_identity.json")
    args = parser.parse_args()
    work = args.work
    old, tokens = train_and_sample(args.before, work)
    checkpoint = work / "runs/distill/checkpoints/last.ckpt"

    sys.path.insert(0, str(ROOT))
    import torch

    from lightning_cfgrl.eval.machine import code_version, describe_machine

    a = torch.load(checkpoint, weights_only=True, map_location="cpu")
    b = torch.load(work / "runs/distill_after/checkpoints/last.ckpt", weights_only=True, map_location="cpu")
    same_weights = a["state_dict"].keys() == b["state_dict"].keys() and all(
        torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items()
    )
    result = {
        "what": "grouped CFGRLModule settings vs the flat layout: tokens of one checkpoint, weights of one run",
        "before_commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", args.before], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "checkpoint_hparams_layout": sorted(a["hyper_parameters"]),
        "tokens_sha256": tokens,
        "tokens_identical": {
            name: tokens[f"before_{name}"] == tokens[f"after_{name}"] for name in GENERATIONS
        },
        "trained_weights_identical": same_weights,
        "num_tensors": len(a["state_dict"]),
        "optimizer_record_identical": a.get("cfgrl_optimizers") == b.get("cfgrl_optimizers"),
        "objectives_record_identical": a.get("cfgrl_objectives") == b.get("cfgrl_objectives"),
        "runs": "pretrain.yaml 5 steps (512 items), distill.yaml 3 steps; cfgrl generate seed 123, 2 prompts x 4",
        **code_version(),
        "machine": describe_machine(),
    }
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: result[k] for k in ("tokens_identical", "trained_weights_identical")}))


if __name__ == "__main__":
    main()
