"""A transformers ``EncodecModel`` (MusicGen's own codec: 32 kHz, 4 codebooks) behind the interface of
``encodec.EncodecModel`` that :class:`~lightning_cfgrl.audio.EncodecTokenizer` and
:class:`~lightning_cfgrl.embedders.EncodecAudioEmbedder` use.

The two libraries differ in names, not in the model: transformers' quantizer has ``num_quantizers`` and
``codebook_size`` (encodec: ``n_q``, ``bins``), its encoder has no ``hop_length``, the sample rate and
channels live in ``config``, and ``encode``/``decode`` take and return other containers. Nothing here is
downloaded: pass a constructed model (``musicgen.audio_encoder``) or a local folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn


def is_transformers_encodec(codec: Any) -> bool:
    """True for a transformers ``EncodecModel`` (recognised by its config, without importing transformers)."""
    config = getattr(codec, "config", None)
    return isinstance(codec, nn.Module) and getattr(config, "model_type", None) == "encodec"


def as_encodec(codec: Any) -> Any:
    """``codec`` wrapped in :class:`TransformersEncodec` if it is a transformers ``EncodecModel``, else as is."""
    return TransformersEncodec(codec) if is_transformers_encodec(codec) else codec


class _Quantizer(nn.Module):
    """transformers' residual VQ under encodec's names (``n_q``, ``bins``, ``decode(codes [K, B, T])``)."""

    def __init__(self, quantizer: nn.Module) -> None:
        super().__init__()
        self.inner = quantizer

    @property
    def n_q(self) -> int:
        return int(self.inner.num_quantizers)

    @property
    def bins(self) -> int:
        return int(self.inner.codebook_size)

    def get_num_quantizers_for_bandwidth(self, frame_rate: float, bandwidth: float | None = None) -> int:
        return int(self.inner.get_num_quantizers_for_bandwidth(bandwidth))

    def decode(self, codes: Tensor) -> Tensor:
        """``[K, B, T]`` codes -> quantized latents ``[B, D, T]`` (the sum of the K codebook vectors)."""
        return self.inner.decode(codes)


class _Encoder(nn.Module):
    def __init__(self, encoder: nn.Module, hop_length: int) -> None:
        super().__init__()
        self.inner = encoder
        self.hop_length = hop_length

    def forward(self, wav: Tensor) -> Tensor:
        """``[B, C, L]`` -> latents ``[B, D, ceil(L / hop_length)]``."""
        return self.inner(wav)


class TransformersEncodec(nn.Module):
    """``transformers.EncodecModel`` with the attributes and methods of ``encodec.EncodecModel`` that
    this package uses: ``encoder`` (with ``hop_length``), ``decoder``, ``quantizer`` (``n_q``, ``bins``),
    ``sample_rate``, ``channels``, ``frame_rate``, ``target_bandwidths``, ``segment``,
    ``set_target_bandwidth``, ``encode(wav) -> [(codes [B, K, T], scale)]`` and ``decode(frames)``.
    Shares the wrapped model's weights (no copy)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not is_transformers_encodec(model):
            raise TypeError(
                f"TransformersEncodec wraps a transformers EncodecModel, got {type(model).__name__}"
            )
        config = model.config
        self.encoder = _Encoder(model.encoder, int(config.hop_length))
        self.decoder = model.decoder
        self.quantizer = _Quantizer(model.quantizer)
        self._model = (model,)  # its modules are registered above, once
        self.sample_rate = int(config.sampling_rate)
        self.channels = int(config.audio_channels)
        self.frame_rate = int(config.frame_rate)
        self.target_bandwidths = [float(b) for b in config.target_bandwidths]
        self.segment = config.chunk_length_s  # None for MusicGen's codec: one segment per clip
        self.normalize = bool(config.normalize)
        self.bandwidth = min(self.target_bandwidths)
        self.name = f"transformers_encodec_{self.sample_rate // 1000}khz"

    @property
    def model(self) -> nn.Module:
        return self._model[0]

    def set_target_bandwidth(self, bandwidth: float) -> None:
        if float(bandwidth) not in self.target_bandwidths:
            raise ValueError(f"bandwidth {bandwidth} kbps is not one of the codec's {self.target_bandwidths}")
        self.bandwidth = float(bandwidth)

    def encode(self, wav: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """Waveform ``[B, C, L]`` at ``sample_rate`` -> ``[(codes [B, K, T], scale [B, 1] or None)]``."""
        out = self.model.encode(wav, bandwidth=self.bandwidth, return_dict=True)
        return [(codes, scale) for codes, scale in zip(out.audio_codes, out.audio_scales, strict=True)]

    def decode(self, frames: list[tuple[Tensor, Tensor | None]]) -> Tensor:
        """``[(codes [B, K, T], scale or None)]`` (one segment) -> waveform ``[B, C, T * hop_length]``."""
        if len(frames) != 1:
            raise ValueError(f"expected one segment of codes, got {len(frames)}")
        codes, scale = frames[0]
        return self.model.decode(codes[None], [scale], return_dict=True).audio_values


def load_transformers_codec(path: str, local_files_only: bool = True) -> nn.Module:
    """The transformers ``EncodecModel`` of a local folder: an EnCodec checkpoint
    (``facebook/encodec_32khz``) or a MusicGen one (its ``audio_encoder``), in eval mode."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path!r} has no config.json; expected a local transformers EnCodec or MusicGen folder"
        )
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type == "encodec":
        from lightning_cfgrl.adapters.musicgen import import_musicgen

        return import_musicgen().EncodecModel.from_pretrained(path, local_files_only=local_files_only).eval()
    if model_type in ("musicgen", "musicgen_melody"):
        from lightning_cfgrl.adapters.musicgen import import_musicgen

        hf = import_musicgen()
        return hf.MusicgenForConditionalGeneration.from_pretrained(
            path, local_files_only=local_files_only
        ).audio_encoder.eval()
    raise ValueError(f"{path!r} holds a {model_type!r} model; expected 'encodec' or 'musicgen'")


__all__ = ["TransformersEncodec", "as_encodec", "is_transformers_encodec", "load_transformers_codec"]
