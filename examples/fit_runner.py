"""``cfgrl fit`` as a timed subprocess, and what its checkpoint says: the one launcher the study drivers
(``folk_study.py``, ``budget_selection.py``, ``recurrent/confirm.py``) share."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNS = Path("runs")


def last(name: str) -> Path:
    """``runs/<name>/checkpoints/last.ckpt``: where a run named ``name`` keeps its last checkpoint."""
    return RUNS / name / "checkpoints" / "last.ckpt"


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process of this one."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_fit(
    args: list[str], label: str, log: Path | None = None
) -> tuple[subprocess.CompletedProcess, float, float]:
    """``python -m lightning_cfgrl.cli.main fit *args`` without a progress bar; returns the finished
    process, its wall and CPU seconds. ``log``: where its stdout and stderr are written. A failed run
    stops the driver with the end of its stderr."""
    cmd = [
        sys.executable,
        "-m",
        "lightning_cfgrl.cli.main",
        "fit",
        *args,
        "--trainer.enable_progress_bar=false",
    ]
    wall, cpu = time.perf_counter(), children_cpu()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
    if result.returncode:
        print(result.stderr[-3000:], file=sys.stderr)
        where = f"; log: {log}" if log is not None else ""
        raise SystemExit(f"[{label}] failed with exit code {result.returncode}{where}")
    return result, wall, cpu


def budget_readout(saved: dict[str, Any]) -> dict[str, Any]:
    """A quality budget's end state from a checkpoint's ``DiversityRewardCallback`` state: the beta it
    settled at, the reference and base KLs and the last smoothed KL; ``{}`` for a run without a budget."""
    budget = next(
        (v.get("budget") for k, v in saved.get("callbacks", {}).items() if k.startswith("DiversityReward")),
        None,
    )
    if not budget:
        return {}
    return {
        "beta_final": budget["beta"],
        "kl_reference": budget["reference"],
        "kl_base": budget.get("base"),  # the gain budget's base KL (None for other budgets)
        "kl_smoothed_final": budget["smoothed"],
    }
