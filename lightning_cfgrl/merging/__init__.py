"""Weight-space merging: LERP/SLERP of tensors and state dicts, and streamed, atomic file merging."""

from lightning_cfgrl.merging.streaming import (
    METHODS,
    MergeError,
    MergeOutput,
    lerp,
    merge_state_dicts,
    merge_tensor,
    slerp,
    write_merged,
)

__all__ = [
    "METHODS",
    "MergeError",
    "MergeOutput",
    "lerp",
    "merge_state_dicts",
    "merge_tensor",
    "slerp",
    "write_merged",
]
