"""What a number was measured on: CPU, threads, torch version, device and load, saved beside results."""

from __future__ import annotations

import os
import platform
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


def describe_machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU, threads, torch version, device (with the GPU's name on CUDA) and the current load."""
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
    return info


__all__ = ["cpu_model", "describe_machine"]
