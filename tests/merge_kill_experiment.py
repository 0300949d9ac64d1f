"""SIGKILL ``cfgrl merge`` at random moments of its writing phase, the way issue 14 did (not run by pytest)::

    python -m tests.merge_kill_experiment --dir /tmp/killmerge --rounds 10 [--params 57] [--seed 1]

Builds two pairs of checkpoints (``--params`` million float32 parameters each), writes a complete merge of
one pair into ``DIR/out``, then per round: starts ``cfgrl merge`` of the other pair (LERP over SLERP or the
reverse, 3 lambdas), waits until it has created its first temporary file, SIGKILLs it after a uniform
random delay within the measured length of the writing phase, checks every set a reader trusts
(``tests.test_merge_sets.assert_consistent``), reruns the merge to completion and checks that no temporary
file is left. Prints one line per round and a summary; writes ``DIR/summary_<seed>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.test_merge_sets import _temps, assert_consistent


def _checkpoint(path: Path, seed: int, millions: int) -> Path:
    if not path.exists():
        g = torch.Generator().manual_seed(seed)
        state = {f"generator.layer{i}.weight": torch.randn(1000, 1000, generator=g) for i in range(millions)}
        torch.save({"state_dict": state, "hyper_parameters": {}}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--params", type=int, default=57, help="millions of parameters per checkpoint")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    pairs = [
        (
            _checkpoint(args.dir / f"q{i}.ckpt", 2 * i, args.params),
            _checkpoint(args.dir / f"d{i}.ckpt", 2 * i + 1, args.params),
        )
        for i in (0, 1)
    ]
    out = args.dir / "out"

    def command(i: int) -> list[str]:
        (q, d), method = pairs[i % 2], ("slerp", "lerp")[i % 2]
        merge = ["merge", "--quality", str(q), "--diversity", str(d), "--lambdas", "0.25,0.5,0.75"]
        return [
            sys.executable,
            "-m",
            "lightning_cfgrl.cli.main",
            *merge,
            "--method",
            method,
            "--out",
            str(out),
        ]

    subprocess.run(command(1), check=True, capture_output=True)  # a complete merge to overwrite
    proc = subprocess.Popen(command(0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not _temps(out):
        time.sleep(0.05)
    start = time.time()
    proc.wait()
    writing = time.time() - start
    print(f"writing phase: {writing:.1f} s", flush=True)

    rng, results = random.Random(args.seed), []
    for i in range(args.rounds):
        proc = subprocess.Popen(command(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not _temps(out):
            time.sleep(0.05)
        delay = rng.uniform(0.0, writing)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        temps = _temps(out)
        try:
            trusted, consistent = assert_consistent(out), True
        except Exception as err:  # noqa: BLE001 - recorded, that is the measurement
            trusted, consistent = -1, False
            print("INCONSISTENT:", err, flush=True)
        subprocess.run(command(i), check=True, capture_output=True)
        clean = _temps(out) == [] and assert_consistent(out) == 3
        results.append(
            dict(
                round=i,
                killed_after_s=round(delay, 1),
                returncode=code,
                trusted_sets=trusted,
                consistent=consistent,
                temp_files=len(temps),
                temp_mb=round(sum((out / n).stat().st_size for n in temps) / 1e6),
                rerun_clean=clean,
            )
        )
        print(results[-1], flush=True)
    summary = {
        "kills": sum(r["returncode"] == -signal.SIGKILL for r in results),
        "consistent": sum(r["consistent"] for r in results),
        "rerun_clean": sum(r["rerun_clean"] for r in results),
        "rounds": len(results),
    }
    print(json.dumps(summary))
    (args.dir / f"summary_{args.seed}.json").write_text(json.dumps({"results": results, **summary}, indent=1))


if __name__ == "__main__":
    main()
