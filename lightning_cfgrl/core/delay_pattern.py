"""Codebook delay pattern: how K parallel codebooks are laid out over decoding steps.

MusicGen-style: codebook ``k`` of frame ``t`` is decoded at step ``t + delays[k]``, so with
``delays = (0, 1, ..., K-1)`` codebook k of a frame is predicted *after* codebooks < k of the same
frame (the residual codebooks can see the coarse ones). Positions with no token (the ragged start and
end) hold ``pad_id`` and are masked out of every loss. ``delays = (0,) * K`` is the flat pattern.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class DelayPattern:
    """Maps frames ``[B, K, T]`` to steps ``[B, K, T + max(delays)]`` and back."""

    def __init__(self, delays: Sequence[int]) -> None:
        delays = tuple(int(d) for d in delays)
        if not delays or min(delays) < 0:
            raise ValueError(f"delays must be a non-empty sequence of ints >= 0, got {delays}")
        self.delays = delays

    @classmethod
    def flat(cls, num_codebooks: int) -> DelayPattern:
        return cls((0,) * num_codebooks)

    @classmethod
    def musicgen(cls, num_codebooks: int) -> DelayPattern:
        return cls(range(num_codebooks))

    @property
    def num_codebooks(self) -> int:
        return len(self.delays)

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    def num_steps(self, num_frames: int) -> int:
        return num_frames + self.max_delay

    def num_frames(self, num_steps: int) -> int:
        return num_steps - self.max_delay

    def valid_mask(self, num_steps: int, device: torch.device | str | None = None) -> Tensor:
        """``[K, S]`` bool: True where step s carries a real token of codebook k."""
        steps = torch.arange(num_steps, device=device)
        delays = torch.tensor(self.delays, device=device)[:, None]
        return (steps >= delays) & (steps < delays + self.num_frames(num_steps))

    def frames_to_steps(self, frames: Tensor, pad_id: int) -> Tensor:
        """``[B, K, T]`` -> ``[B, K, T + max_delay]``, ``pad_id`` where no token lives."""
        batch, k, t = frames.shape
        self._check_codebooks(k)
        steps = frames.new_full((batch, k, self.num_steps(t)), pad_id)
        for cb, d in enumerate(self.delays):
            steps[:, cb, d : d + t] = frames[:, cb]
        return steps

    def steps_to_frames(self, steps: Tensor) -> Tensor:
        """``[B, K, S]`` -> ``[B, K, S - max_delay]`` (inverse of ``frames_to_steps``)."""
        k, s = steps.shape[1], steps.shape[2]
        self._check_codebooks(k)
        t = self.num_frames(s)
        return torch.stack([steps[:, cb, d : d + t] for cb, d in enumerate(self.delays)], dim=1)

    def _check_codebooks(self, k: int) -> None:
        if k != self.num_codebooks:
            raise ValueError(f"tokens have {k} codebooks, the delay pattern expects {self.num_codebooks}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DelayPattern) and other.delays == self.delays

    def __repr__(self) -> str:
        return f"DelayPattern(delays={self.delays})"
