"""How far the FSDP2 (``ModelParallelStrategy``, 2 CPU processes) run resumed from its one-file checkpoint
lands from the single-process run resumed the same way: the run of ``tests/test_model_parallel.py``,
written to ``benchmarks/results/fsdp_resume.json`` (max abs weight difference after 3 steps and after
resuming to step 4, and whether each rank trained on the reference's prompts at the resumed step)::

    OMP_NUM_THREADS=1 python benchmarks/fsdp_resume.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe_machine, git_state  # noqa: E402
from tests.helpers.tiny_fit import launch, single_process_reference  # noqa: E402


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fsdp_resume.json"))
    args = parser.parse_args()
    version = git_state()  # before the run: the code that runs
    single, single_resumed = single_process_reference()
    work = Path(tempfile.mkdtemp(prefix="cfgrl_fsdp_resume_"))
    done = launch("tests.helpers.tiny_fit", "--strategy", "fsdp", "--out", str(work), "--resume-to", "4")
    if done.returncode != 0:
        raise SystemExit(done.stderr[-4000:])
    ranks = []
    for rank in (0, 1):
        first = torch.load(work / f"rank{rank}.pt", weights_only=True)
        resumed = torch.load(work / f"rank{rank}_resumed.pt", weights_only=True)
        # the resumed step's prompts: this rank's half of the reference's global batch
        ref_batch = {tuple(p) for p in single_resumed["prompts"][-1].tolist()}
        ranks.append(
            {
                "rank": rank,
                "max_abs_diff_after_3_steps": _max_diff(first["generator"], single["generator"]),
                "max_abs_diff_after_resume_to_4": _max_diff(
                    resumed["generator"], single_resumed["generator"]
                ),
                "resumed_prompts_in_reference_batch": all(
                    tuple(p) in ref_batch for p in resumed["prompts"][-1].tolist()
                ),
                "running_baseline": list(resumed["running"]),
            }
        )
    result = {
        "what": "FSDP2 (ModelParallelStrategy, 2 CPU processes, gloo) vs 1 process, same global batch of 8 "
        "prompts, SGD momentum 0.9, lr 0.05; 3 steps, then a resume from the consolidated last.ckpt to step 4",
        "command": "OMP_NUM_THREADS=1 python benchmarks/fsdp_resume.py",
        "ranks": ranks,
        "reference_running_baseline": list(single_resumed["running"]),
        **version,
        "machine": describe_machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ranks, indent=2))


if __name__ == "__main__":
    main()
