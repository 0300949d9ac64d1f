"""What a number was measured on and with: CPU, threads, device and load, and the code (commit, dirty
flag, library versions), saved beside every result."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


LIBRARIES = ("lightning-cfgrl", "torch", "lightning", "torchmetrics", "numpy", "transformers", "peft")


def source_sha256() -> str:
    """sha256 over the package's own source files (relative path and bytes, sorted): the same value
    exactly when the code is the same, committed or not, so a cache keyed by it is never reused by
    other code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_version() -> dict[str, Any]:
    """``commit`` and ``dirty`` of the git checkout this package runs from (``None`` for an installed
    wheel, where there is no checkout to ask), the package's :func:`source_sha256`, and the installed
    ``versions`` of the libraries a number depends on. A dirty tree means the number came from
    uncommitted code: the commit alone does not reproduce it, the source hash identifies it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD") if (root / ".git").exists() else None
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    dirty = None if status is None else bool(status)
    return {"commit": commit, "dirty": dirty, "source_sha256": source_sha256(), "versions": versions}


def describe_machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU, threads, torch version, device (with the GPU's name on CUDA), the current load, and the code
    it ran (:func:`code_version`: commit, dirty flag, library versions)."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["device"] = f"{device} ({torch.cuda.get_device_name(index)})"
        info["gpu_name"] = torch.cuda.get_device_name(index)
        info["cuda_version"] = torch.version.cuda
    env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")
        if k in os.environ
    }
    if env:
        info["env"] = env
    try:
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    info.update(code_version())
    return info


__all__ = ["code_version", "cpu_model", "describe_machine", "source_sha256"]
