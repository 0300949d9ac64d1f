"""What the benchmark numbers were measured on, and how peak memory is read.

Every benchmark saves :func:`describe_machine` beside its numbers: CPU model, cores, torch threads,
torch version, device (GPU name on CUDA) and the load average, since a busy machine slows CPU timings
(the 1-minute load above the core count means other processes competed for the cores) and the
thread-related environment (``OMP_WAIT_POLICY=PASSIVE`` stops torch's OpenMP threads from spinning,
which on an oversubscribed CPU can make 2-thread runs several times slower than 1-thread runs).

Peak memory (:class:`PeakMemory`): on CUDA ``torch.cuda.max_memory_allocated`` over the block, net of
what was allocated when it started. On CPU the peak resident set size (RSS) over the block, net of the
RSS when it started: the C heap's free pages are first returned to the OS (``malloc_trim``, so memory
an earlier block freed counts again when reused), and Linux lets a process reset its RSS high-water
mark (``/proc/self/clear_refs``), so a block's own peak is read from ``VmHWM``; where that fails, ``ru_maxrss`` (the process's peak so
far) is used, which is the block's peak only in a fresh process whose block allocates the most — run
each configuration in its own subprocess. ``tracemalloc`` does not see torch's allocations.
"""

from __future__ import annotations

import argparse
import resource
from typing import Any

import torch

from lightning_cfgrl.eval.machine import cpu_model, describe_machine  # noqa: F401  (one home)


def git_state() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout the benchmark runs from (``None`` outside a git checkout):
    dirty means tracked files differ from the commit, so the numbers may not be that commit's. Taken
    before the run (the code that runs); one home: :func:`lightning_cfgrl.eval.machine.code_version`."""
    from lightning_cfgrl.eval.machine import code_version

    version = code_version()
    return {"commit": version["commit"], "dirty": version["dirty"]}


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, as every benchmark takes them."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")


def add_model_shape_args(parser: argparse.ArgumentParser) -> None:
    """The GPT-style model shape shared by the decode benchmarks (``sampler.py``, ``vs_trl.py``)."""
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``...; a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False")
    return device


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None keeps torch's default); return the number in use."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def save_result(result: dict[str, Any], out: str, table: str) -> None:
    """Print the markdown table and write the result JSON (creating the results folder)."""
    import json
    from pathlib import Path

    print(table, flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}", flush=True)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so a timer reads the work's end, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``), so a block that reuses memory
    an earlier block freed shows it in its RSS again. Best effort: a no-op where libc has no malloc_trim."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb``: the block's peak memory in MiB, net of
    the memory in use when it started (see the module docstring for how it is read)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.mb = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
        else:
            _trim_heap()
            self._hwm = _reset_rss_peak() and _status_kb("VmHWM") is not None
            self._start = (_status_kb("VmRSS") or 0) * 1024
            self.method = "rss VmHWM (reset per block)" if self._hwm else "rss ru_maxrss (process peak)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._hwm:
            peak = (_status_kb("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        self.mb = max(0.0, peak - self._start) / 2**20


def rss_mb() -> float:
    """Current resident set size of this process in MiB (NaN where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")
