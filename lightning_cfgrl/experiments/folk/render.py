"""Listening: tokens -> WAV (a plucked additive tone per note) and -> MIDI (through music21)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from lightning_cfgrl.experiments.folk.corpus import require_music21
from lightning_cfgrl.experiments.folk.tokens import FolkTokenizer


class FolkRenderer:
    """Frames ``[B, 2, T]`` -> waveform ``[B, 1, samples]`` float32 in [-1, 1] (``decode``: an audio
    decoder for :class:`~lightning_cfgrl.callbacks.AudioSampleLogger` and ``cfgrl generate``) and MIDI files.

    Args:
        tokenizer: how frames map to notes.
        sample_rate: Hz.
        tempo: quarter notes per minute (a sixteenth lasts ``15 / tempo`` s).
    """

    def __init__(
        self, tokenizer: FolkTokenizer | None = None, sample_rate: int = 16_000, tempo: float = 100.0
    ) -> None:
        if sample_rate < 1000 or tempo <= 0:
            raise ValueError(f"sample_rate must be >= 1000 Hz and tempo > 0, got {sample_rate} and {tempo}")
        self.tokenizer = tokenizer or FolkTokenizer()
        self.sample_rate, self.tempo = sample_rate, tempo

    @property
    def frame_seconds(self) -> float:
        return 15.0 / self.tempo

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    num_codebooks = 2

    def decode(self, tokens: Tensor) -> Tensor:
        """Frames ``[B, 2, T]`` (any T) -> ``[B, 1, T * frame_seconds * sample_rate]``."""
        n = round(tokens.shape[-1] * self.frame_seconds * self.sample_rate)
        out = torch.zeros(tokens.shape[0], 1, n)
        for b, f in enumerate(tokens.cpu()):
            for onset, duration, midi in self.tokenizer.decode(f):
                if midi >= 0:
                    self._add_note(out[b, 0], onset, duration, midi)
        return out.clamp(-1.0, 1.0)

    def _add_note(self, wav: Tensor, onset: int, duration: int, midi: int) -> None:
        start = round(onset * self.frame_seconds * self.sample_rate)
        length = min(round(duration * self.frame_seconds * self.sample_rate), wav.shape[0] - start)
        t = torch.arange(length, dtype=torch.float64) / self.sample_rate
        hz = 440.0 * 2.0 ** ((midi - 69) / 12)
        tone = sum(
            math.pow(0.5, h) * torch.sin(2 * math.pi * hz * (h + 1) * t)
            for h in range(4)
            if hz * (h + 1) < self.sample_rate / 2
        )
        fade = min(80, length // 2)  # 5 ms attack and release at 16 kHz: no clicks
        envelope = torch.exp(-2.5 * t)
        envelope[:fade] *= torch.linspace(0, 1, fade, dtype=torch.float64)
        if fade:
            envelope[-fade:] *= torch.linspace(1, 0, fade, dtype=torch.float64)
        wav[start : start + length] += (0.35 * tone * envelope).float()

    def to_stream(self, frames: Tensor, meter: str | None = None):
        """Frames ``[2, T]`` -> a music21 stream of notes and rests (for MIDI, MusicXML, notation)."""
        music21 = require_music21()
        stream = music21.stream.Stream()
        stream.append(music21.tempo.MetronomeMark(number=self.tempo))
        if meter is not None:
            stream.append(music21.meter.TimeSignature(meter))
        for _, duration, midi in self.tokenizer.decode(frames.cpu()):
            element = music21.note.Rest() if midi < 0 else music21.note.Note(midi)
            element.duration.quarterLength = duration / 4
            stream.append(element)
        return stream

    def write_midi(self, frames: Tensor, path: str | Path, meter: str | None = None) -> Path:
        """Frames ``[2, T]`` -> a MIDI file at ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        self.to_stream(frames, meter).write("midi", fp=str(tmp))
        tmp.replace(path)  # never a half-written file under the final name
        return path


__all__ = ["FolkRenderer"]
