"""Are a module's weights finite? One fused norm (one host sync); the names of the bad tensors only on
failure. Plain torch, so loading code (``io``) and the training guard (``training.finite_guard``) share it."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def total_norm(tensors: list[Tensor]) -> Tensor:
    """One fused 2-norm of many tensors (``[]``); a DTensor norm (FSDP2) is gathered to a plain one."""
    if not tensors:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(tensors, error_if_nonfinite=False)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def nonfinite_tensors(named: Iterable[tuple[str, Tensor]]) -> list[tuple[str, int, int]]:
    """``(name, non-finite count, numel)`` of every tensor with a NaN or inf (diagnosis, on failure only)."""
    found = []
    for name, t in named:
        local = t.to_local() if hasattr(t, "to_local") else t
        bad = int((~torch.isfinite(local)).sum())
        if bad:
            found.append((name, bad, local.numel()))
    return found


def listing(found: list[tuple[str, int, int]]) -> str:
    shown = ", ".join(f"{name} ({bad} of {numel})" for name, bad, numel in found[:3])
    return shown + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def weights_finite(module: nn.Module) -> bool:
    """True when every parameter and buffer of ``module`` is finite (one fused norm, one host sync)."""
    tensors = [t.detach() for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
    return bool(torch.isfinite(total_norm(tensors)))


def check_finite_weights(module: nn.Module, when: str) -> None:
    """Raise ``FloatingPointError`` naming the non-finite parameters when ``module``'s weights are not
    finite; ``when`` says what was about to happen ("saving a checkpoint", ...)."""
    if weights_finite(module):
        return
    named = [(n, t.detach()) for n, t in [*module.named_parameters(), *module.named_buffers()]]
    found = nonfinite_tensors((n, t) for n, t in named if t.is_floating_point())
    if not found:  # the norm overflowed on finite values: nothing is garbage
        return
    raise FloatingPointError(
        f"non-finite weights {when}: {listing(found)}"
        + ("; refused, so no checkpoint holds them" if "saving" in when else "")
    )


__all__ = ["check_finite_weights", "listing", "nonfinite_tensors", "total_norm", "weights_finite"]
