"""Whether a module's parameters are sharded across processes (FSDP2 / ``ModelParallelStrategy``)."""

from __future__ import annotations

from torch import nn


def is_sharded(module: nn.Module) -> bool:
    """True when any parameter of ``module`` is a ``DTensor`` (sharded by ``fully_shard``): its full
    state dict must then be gathered collectively, and per-parameter gradients bypass FSDP's reduction."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())
