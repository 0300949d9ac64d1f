"""Tunes as audio-like token streams: one frame per sixteenth note and two codebooks, like a codec's
frames at a fixed rate.

* codebook 0, pitch: ``END`` (0) after the tune, ``REST`` (1), or ``2 + midi - low_note`` (notes outside
  the range are moved by octaves into it);
* codebook 1, articulation: ``HOLD`` (0), ``ONSET`` (1: a note or rest starts here), ``END`` (2).

Both codebooks share the vocabulary ``[0, vocab_size)`` (the generator has one V); codebook 1 uses 3 ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_cfgrl.experiments.folk.corpus import Tune

END, REST = 0, 1  # codebook 0
HOLD, ONSET, END_ARTIC = 0, 1, 2  # codebook 1


@dataclass(frozen=True)
class FolkTokenizer:
    """``num_frames`` sixteenths per sequence (64 = four 4/4 bars); pitches ``low_note ..
    low_note + vocab_size - 3`` (MIDI)."""

    num_frames: int = 64
    vocab_size: int = 40
    low_note: int = 48

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.vocab_size < 15:
            raise ValueError(
                f"vocab_size must be >= 15 (an octave of pitches, rest and end), got {self.vocab_size}"
            )

    @property
    def high_note(self) -> int:
        return self.low_note + self.vocab_size - 3

    def fold(self, midi: int) -> int:
        """A MIDI note moved by octaves into ``[low_note, high_note]``."""
        while midi < self.low_note:
            midi += 12
        while midi > self.high_note:
            midi -= 12
        return midi

    def encode(self, notes: Sequence[tuple[int, int, int]]) -> Tensor:
        """``(onset, duration, midi)`` notes (sixteenths, midi -1 = rest) -> frames ``[2, T]`` int64. Silence
        between notes becomes a rest; everything after the last note (or after T) is ``END``."""
        T = self.num_frames
        frames = torch.zeros(2, T, dtype=torch.long)
        frames[1] = END_ARTIC
        cursor = 0
        for onset, duration, midi in notes:
            if onset >= T:
                break
            if onset > cursor:  # a gap: a rest
                frames[0, cursor:onset], frames[1, cursor:onset] = REST, HOLD
                frames[1, cursor] = ONSET
            end = min(onset + duration, T)
            if end <= onset:
                continue
            frames[0, onset:end] = REST if midi < 0 else 2 + self.fold(midi) - self.low_note
            frames[1, onset:end] = HOLD
            frames[1, onset] = ONSET
            cursor = max(cursor, end)
        return frames

    def encode_tunes(self, tunes: Sequence[Tune]) -> Tensor:
        """``[N, 2, T]`` frames of ``tunes``."""
        if not tunes:
            return torch.zeros(0, 2, self.num_frames, dtype=torch.long)
        return torch.stack([self.encode(t.notes) for t in tunes])

    def decode(self, frames: Tensor) -> list[tuple[int, int, int]]:
        """Frames ``[2, T]`` -> notes ``(onset, duration, midi)`` (midi -1 = rest). A note starts at an
        ``ONSET`` or wherever the pitch changes (a model may write a pitch change without an onset) and
        ends at the next start or ``END``; a frame with an invalid id ends the tune, like ``END``."""
        pitch, artic = frames[0].tolist(), frames[1].tolist()
        notes: list[tuple[int, int, int]] = []
        current = None  # [onset, duration, midi]
        for t, (p, a) in enumerate(zip(pitch, artic, strict=True)):
            if p == END or a == END_ARTIC or p >= self.vocab_size or a > END_ARTIC:
                break
            midi = -1 if p == REST else self.low_note + p - 2
            if current is None or a == ONSET or midi != current[2]:
                if current is not None:
                    notes.append(tuple(current))
                current = [t, 1, midi]
            else:
                current[1] += 1
        if current is not None:
            notes.append(tuple(current))
        return notes

    def onsets(self, frames: Tensor) -> Tensor:
        """``[B, 2, T]`` -> ``[B, T]`` bool: where a note or rest starts (pitch changes count)."""
        pitch, artic = frames[:, 0], frames[:, 1]
        changed = torch.ones_like(pitch, dtype=torch.bool)
        changed[:, 1:] = pitch[:, 1:] != pitch[:, :-1]
        return ((artic == ONSET) | changed) & self.live(frames)

    def live(self, frames: Tensor) -> Tensor:
        """``[B, 2, T]`` -> ``[B, T]`` bool: frames inside the tune (before ``END``, valid ids)."""
        pitch, artic = frames[:, 0], frames[:, 1]
        ok = (pitch != END) & (pitch < self.vocab_size) & (artic < END_ARTIC) & (artic >= 0)
        return ok.long().cumprod(1).bool()  # the first END ends the tune

    def sounding(self, frames: Tensor) -> Tensor:
        """``[B, 2, T]`` -> ``[B, T]`` MIDI note per frame, -1 at rests and after the end."""
        pitch = frames[:, 0]
        live = self.live(frames) & (pitch >= 2)
        return torch.where(live, pitch - 2 + self.low_note, torch.full_like(pitch, -1))


__all__ = ["END", "END_ARTIC", "HOLD", "ONSET", "REST", "FolkTokenizer"]
