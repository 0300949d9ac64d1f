"""``SyntheticSynth``: render synthetic-domain tokens ``[B, K, T]`` as sound, so samples can be heard
without EnCodec weights.

Each frame is one short note: codebook 0 picks its pitch (token v -> MIDI note ``base_note + v``, one
semitone per id), codebook 1 its timbre (more and stronger harmonics for higher ids, and a little
louder). Every note has a raised-cosine attack and release, so frame boundaries do not click. Positions
that hold no token (``pad_id`` >= ``vocab_size``) are silent. Codebooks after the second are not heard.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor


class SyntheticSynth:
    """Tokens ``[B, K, T]`` int -> waveform ``[B, 1, T * samples_per_frame]`` float32 in [-1, 1].

    Args:
        vocab_size: V; ids ``>= V`` are silent frames.
        sample_rate: Hz.
        frame_seconds: duration of one frame (one note).
        base_note: MIDI note of token 0 of codebook 0 (48 = C3; V = 32 reaches G5).
        num_harmonics: partials per note (those above Nyquist are dropped).
        fade_seconds: attack and release of each note.
    """

    def __init__(
        self,
        vocab_size: int = 32,
        sample_rate: int = 16_000,
        frame_seconds: float = 0.125,
        base_note: int = 48,
        num_harmonics: int = 6,
        fade_seconds: float = 0.01,
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz, got {sample_rate}")
        self.samples_per_frame = round(frame_seconds * sample_rate)
        self.fade = round(fade_seconds * sample_rate)
        if self.samples_per_frame < 2 * self.fade + 1 or self.fade < 1:
            raise ValueError(
                f"frame_seconds ({frame_seconds}) must exceed 2 * fade_seconds ({fade_seconds}) "
                f"and fade_seconds must be >= 1 sample at {sample_rate} Hz"
            )
        if num_harmonics < 1:
            raise ValueError(f"num_harmonics must be >= 1, got {num_harmonics}")
        self.vocab_size, self.sample_rate = vocab_size, sample_rate
        self.base_note, self.num_harmonics = base_note, num_harmonics

    def pitch_hz(self, tokens: Tensor) -> Tensor:
        """Codebook-0 ids -> fundamental frequency in Hz (same shape)."""
        return 440.0 * 2.0 ** ((self.base_note + tokens.double() - 69.0) / 12.0)

    def harmonic_amplitudes(self, tokens: Tensor) -> Tensor:
        """Codebook-1 ids ``[...]`` -> partial amplitudes ``[..., H]``, summing to a loudness in [0.5, 0.9]:
        id 0 is nearly a pure tone, id V-1 a bright, buzzy one."""
        brightness = tokens.double().clamp(0, self.vocab_size - 1) / max(self.vocab_size - 1, 1)
        rolloff = 0.05 + 0.8 * brightness  # ratio of successive partials
        h = torch.arange(self.num_harmonics, dtype=torch.float64, device=tokens.device)
        weights = rolloff[..., None] ** h
        return weights / weights.sum(-1, keepdim=True) * (0.5 + 0.4 * brightness)[..., None]

    def envelope(self) -> Tensor:
        """``[samples_per_frame]``: raised-cosine fade in and out, 1 in between."""
        env = torch.ones(self.samples_per_frame, dtype=torch.float64)
        ramp = 0.5 - 0.5 * torch.cos(
            math.pi * (torch.arange(self.fade, dtype=torch.float64) + 0.5) / self.fade
        )
        env[: self.fade] = ramp
        env[-self.fade :] = ramp.flip(0)
        return env

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """``[B, K, T]`` (or ``[K, T]``) -> ``[B, 1, T * samples_per_frame]`` (or ``[1, L]``)."""
        if tokens.dim() not in (2, 3):
            raise ValueError(f"tokens must be [B, K, T] or [K, T], got shape {tuple(tokens.shape)}")
        single = tokens.dim() == 2
        tokens = tokens[None] if single else tokens
        if tokens.is_floating_point() or tokens.shape[1] < 1:
            raise ValueError(
                f"tokens must be integer ids [B, K >= 1, T], got dtype {tokens.dtype}, shape {tuple(tokens.shape)}"
            )
        pitch_ids = tokens[:, 0]
        timbre_ids = tokens[:, 1] if tokens.shape[1] > 1 else torch.zeros_like(pitch_ids)
        audible = (pitch_ids >= 0) & (pitch_ids < self.vocab_size)  # [B, T]
        f0 = self.pitch_hz(pitch_ids.clamp(0, self.vocab_size - 1))  # [B, T]
        amps = self.harmonic_amplitudes(timbre_ids) * audible[..., None]  # [B, T, H]
        h = torch.arange(1, self.num_harmonics + 1, dtype=torch.float64, device=tokens.device)
        freqs = f0[..., None] * h  # [B, T, H]
        amps = amps * (freqs < self.sample_rate / 2)  # drop partials that would alias
        t = torch.arange(self.samples_per_frame, dtype=torch.float64, device=tokens.device) / self.sample_rate
        # each note starts at phase 0; the envelope is 0 at both ends, so the joins are continuous
        partials = torch.sin(2 * math.pi * freqs[..., None] * t)  # [B, T, H, N]
        notes = (amps[..., None] * partials).sum(-2) * self.envelope().to(tokens.device)  # [B, T, N]
        wav = rearrange(notes, "b t n -> b 1 (t n)").float()
        return wav[0] if single else wav


__all__ = ["SyntheticSynth"]
