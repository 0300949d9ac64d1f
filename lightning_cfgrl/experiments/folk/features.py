"""An evaluation embedder for diversity that shares nothing with the reward's learned embedder and is not
an n-gram count of the tokens: musical profiles of the decoded melody."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_cfgrl.experiments.folk.tokens import FolkTokenizer

MAX_INTERVAL = 12  # semitones; larger leaps share the last bin
MAX_DURATION = 16  # sixteenths; longer notes share the last bin


class MelodyProfileEmbedder(nn.Module):
    """``frames [B, 2, T]`` -> ``[B, 25 + 16 + 16 + 12 + 1]`` profiles, each normalised to sum 1 (so each
    weighs alike in the cosine): melodic intervals between successive notes (-12..12 semitones), note
    durations (1..16 sixteenths), onset positions within a 16-frame window, pitch classes (duration
    weighted), and the share of rest frames. No parameters, nothing to train."""

    def __init__(self, num_frames: int = 64, vocab_size: int = 40, low_note: int = 48) -> None:
        super().__init__()
        self.tokenizer = FolkTokenizer(num_frames=num_frames, vocab_size=vocab_size, low_note=low_note)

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        rows = [self._profile(f) for f in frames.cpu()]
        return torch.stack(rows).to(frames.device)

    def _profile(self, frames: Tensor) -> Tensor:
        notes = self.tokenizer.decode(frames)
        intervals = torch.zeros(2 * MAX_INTERVAL + 1)
        durations = torch.zeros(MAX_DURATION)
        positions = torch.zeros(16)
        classes = torch.zeros(12)
        rest = torch.zeros(1)
        previous = None
        for onset, duration, midi in notes:
            durations[min(duration, MAX_DURATION) - 1] += 1
            positions[onset % 16] += 1
            if midi < 0:
                rest += duration
                continue
            classes[midi % 12] += duration
            if previous is not None:
                step = max(-MAX_INTERVAL, min(MAX_INTERVAL, midi - previous))
                intervals[step + MAX_INTERVAL] += 1
            previous = midi
        parts = [intervals, durations, positions, classes]
        total = max(sum(d for _, d, _ in notes), 1)
        return torch.cat([p / p.sum().clamp_min(1.0) for p in parts] + [rest / total])


__all__ = ["MelodyProfileEmbedder"]
