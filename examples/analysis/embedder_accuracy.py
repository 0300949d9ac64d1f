"""Held-out triplet accuracy of the shipped reward embedders, trained exactly as a user would.

    OMP_NUM_THREADS=1 python examples/analysis/embedder_accuracy.py

Trains ``examples/configs/embedder.yaml`` (SyntheticMusic) and ``examples/configs/hmm/embedder.yaml``
(HMMMusic) with ``cfgrl fit`` (logs and checkpoints under a temporary folder), then reports, per
domain, the validation triplet accuracy the run ended with (what its checkpoint records and the
diversity reward's gate reads) and the accuracy on 2,048 fresh sequences of the true process (seed
4242, never seen in training or validation). Chance is 0.5. Saves
``benchmarks/results/embedder_accuracy.json`` with the machine and commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
from lightning_cfgrl.embedders.contrastive import QUALITY_KEY
from lightning_cfgrl.embedders.contrastive_training import triplet_accuracy
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.experiments import HMMMusic, SyntheticMusic
from lightning_cfgrl.io.checkpoints import atomic_save_json, load_checkpoint

RUNS = {  # domain -> (config, its logger name, its chunk_frames, the domain)
    "SyntheticMusic": ("examples/configs/embedder.yaml", "embedder", 12, SyntheticMusic),
    "HMMMusic": ("examples/configs/hmm/embedder.yaml", "hmm_embedder", 24, HMMMusic),
}


def fresh_accuracy(embedder: torch.nn.Module, domain, chunk_frames: int, n: int = 2048) -> float:
    g = torch.Generator().manual_seed(4242)
    frames = domain.sample(domain.prompts[torch.randint(domain.num_prompts, (n,), generator=g)], g)
    return float(triplet_accuracy(embedder.eval(), frames, chunk_frames, torch.Generator().manual_seed(0)))


def main() -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for domain_name, (config, run_name, chunk, make_domain) in RUNS.items():
            command = [sys.executable, "-m", "lightning_cfgrl.cli.main", "fit", "--config", config]
            command += ["--trainer.logger.init_args.save_dir", tmp]
            start = time.perf_counter()
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            seconds = time.perf_counter() - start
            ckpt = Path(tmp) / run_name / "checkpoints" / "last.ckpt"
            quality = load_checkpoint(ckpt).get(QUALITY_KEY, {})
            embedder = ContrastiveTokenEmbedder(checkpoint=str(ckpt))
            rows[domain_name] = {
                "config": config,
                "command": f"cfgrl fit --config {config}",
                "steps": quality.get("global_step"),
                "validation_triplet_accuracy": quality.get("heldout_triplet_accuracy"),
                "fresh_triplet_accuracy": fresh_accuracy(embedder, make_domain(), chunk),
                "fresh_sequences": 2048,
                "wall_seconds": seconds,
            }
            print(domain_name, rows[domain_name], flush=True)
    out = Path("benchmarks/results/embedder_accuracy.json")
    atomic_save_json(
        {
            "command": "OMP_NUM_THREADS=1 python examples/analysis/embedder_accuracy.py",
            "chance": 0.5,
            "rows": rows,
            "machine": describe_machine(),
        },
        out,
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
