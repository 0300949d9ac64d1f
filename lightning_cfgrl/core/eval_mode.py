"""A context manager that runs a module in eval mode and restores its train/eval flag afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module.eval()`` inside the block; the previous ``training`` flag is restored even on error.

    Sampling and frozen scorers must not use dropout or update batch statistics, but the caller's
    module may be mid-training."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
