"""The lifecycle of a frozen model an objective holds beside the student (the CFG teacher, the reward
embedder): frozen (eval mode, no gradients), placed on the module's device and converted by the precision
plugin at fit start, and saved in the callback's state either as the file it came from (a ``{"path",
"sha256"}`` record, checked again on resume) or as its weights (gathered whole when FSDP-sharded).

:class:`FrozenModelConfig` holds the settings both share: how many sequences one forward takes and
whether the weights are stored even when a file can rebuild them (the teacher's
:class:`~lightning_cfgrl.training.distill.TeacherConfig` adds its file and dtype)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_cfgrl.core.checks import check_int
from lightning_cfgrl.io.provenance import check_same_source
from lightning_cfgrl.training.sharding import is_sharded


@dataclass(frozen=True, kw_only=True)
class FrozenModelConfig:
    """How a frozen model beside the student runs and is saved (``DiversityRewardCallback(embedding=...)``
    for the reward embedder).

    Args:
        chunk_size: sequences per forward of the frozen model (None: the whole batch at once); it caps
            the frozen model's share of peak memory.
        embed_in_checkpoint: store the model's weights in the callback's checkpoint state even when a
            file can rebuild them. By default a model loaded from a file is recorded as that file's path
            and sha256 only, and a resumed run refuses a file that changed.
    """

    group: ClassVar[str] = "embedding"  # the argument it is given as, named in its errors

    chunk_size: int | None = None
    embed_in_checkpoint: bool = False

    def __post_init__(self) -> None:
        size = check_int(f"{self.group}.chunk_size", self.chunk_size, allow_none=True)
        if size is not None and size < 1:
            raise ValueError(f"{self.group}.chunk_size must be >= 1 or None (the whole batch), got {size}")
        if not isinstance(self.embed_in_checkpoint, bool):
            raise TypeError(
                f"{self.group}.embed_in_checkpoint must be True or False, got {self.embed_in_checkpoint!r}"
            )


def freeze(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with ``requires_grad=False`` (in place; returned for chaining)."""
    return module.eval().requires_grad_(False)


def place_frozen(
    module: nn.Module, trainer: pl.Trainer, device: torch.device, dtype: torch.dtype | None = None
) -> nn.Module:
    """``module`` on ``device``, converted by the trainer's precision plugin like the student ("bf16-true"
    halves its memory; a no-op for "32-true" and the AMP precisions), cast to ``dtype`` if given, frozen."""
    module = trainer.precision_plugin.convert_module(module.to(device))
    if dtype is not None:
        module.to(dtype)
    return freeze(module)


def frozen_state(
    module: nn.Module | None, key: str, source: Mapping[str, str] | None, embed: bool
) -> dict[str, Any]:
    """``{key: None, key_source: source}`` when the model is exactly a file's weights (and not ``embed``),
    else ``{key: weights}`` (``{key: None}`` for no model). Sharded weights are gathered on every rank."""
    if module is None:
        return {key: None}
    if source is not None and not embed:
        return {key: None, f"{key}_source": dict(source)}
    if not is_sharded(module):
        return {key: module.state_dict()}
    # FSDP2-sharded (ModelParallelStrategy): Lightning torch.saves callback state on rank 0 only,
    # so gather whole tensors there (every rank must call this: it is a collective)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {key: get_model_state_dict(module, options=options)}


def load_frozen_state(
    module: nn.Module | None,
    state: Mapping[str, Any],
    key: str,
    source: Mapping[str, str] | None,
    what: str,
) -> None:
    """Restore what :func:`frozen_state` saved: a recorded file must be the one this run loaded
    (``source``; ValueError naming ``what`` else), saved weights are loaded into ``module``."""
    if state.get(f"{key}_source") is not None:
        check_same_source(state[f"{key}_source"], source, what)
    if state.get(key) is None or module is None:
        return
    if not is_sharded(module):
        module.load_state_dict(state[key])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # every rank read the whole checkpoint file; each keeps its own shard
    set_model_state_dict(module, state[key], options=StateDictOptions(full_state_dict=True))


__all__ = ["FrozenModelConfig", "freeze", "frozen_state", "load_frozen_state", "place_frozen"]
