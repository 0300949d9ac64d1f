"""``EncodecTokenizer``: audio files and waveforms <-> EnCodec tokens ``[K, T]``, with an on-disk cache.

Files are read without torchaudio (:mod:`lightning_cfgrl.io.audio`), resampled to the codec's rate,
matched to its channels, and encoded in batches of equal-length clips (padding would change the codes
near the end of the shorter clips, and a cached result must not depend on what it was batched with).
Encoded files are cached as ``<cache_dir>/<model_id>/bw<bandwidth>/<sha256 of the file>.pt``, written
atomically (temporary file + ``os.replace``) and read back with ``torch.load(weights_only=True)``.

Nothing downloads unless ``weights.download=True``: weights come from a local checkpoint or a
constructed codec.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_cfgrl.adapters.hf_codec import as_encodec
from lightning_cfgrl.core.checks import check_settings
from lightning_cfgrl.io.audio import AudioFileError, convert_channels, read_audio, resample

_WEIGHTS_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
_CACHE_VERSION = 1


@dataclass(frozen=True)
class EncodecWeights:
    """Where :class:`EncodecTokenizer` gets its codec's weights when no constructed ``codec`` is given:
    set one of ``checkpoint``, ``pretrained`` or ``download``.

    Args:
        checkpoint: a local EnCodec state dict file (e.g. ``encodec_24khz-d7cc33bc.th``), loaded with
            ``weights_only=True``.
        model: the architecture ``checkpoint`` (or ``download``) holds. Only unsegmented models work
            (``encodec_24khz``); ``encodec_48khz`` encodes overlapping 1 s chunks with per-chunk scales,
            which a ``[K, T]`` tensor cannot hold.
        download: let encodec fetch the pretrained weights (needs internet; cached by torch hub).
        pretrained: a local transformers folder, EnCodec or MusicGen (its codec is used).
    """

    checkpoint: str | None = None
    model: Literal["encodec_24khz", "encodec_48khz"] = "encodec_24khz"
    download: bool = False
    pretrained: str | None = None


class EncodecTokenizer:
    """EnCodec at one bandwidth: ``encode`` waveforms/files to ``[K, T]`` int64 tokens, ``decode`` back.

    Args:
        codec: a constructed ``encodec.EncodecModel`` (trained, or with k-means-initialised codebooks), or a
            transformers ``EncodecModel`` such as MusicGen's own codec (``musicgen.audio_encoder``: 32 kHz,
            4 codebooks of 2048 at 2.2 kbps).
        weights: where to load the codec from instead (:class:`EncodecWeights`: a local checkpoint, a
            transformers folder, or a download).
        bandwidth: kbps, one of the codec's ``target_bandwidths``; sets K. Default: the smallest.
        cache_dir: where encoded files are cached; ``None`` disables the cache.
        batch_size: equal-length clips encoded per forward pass.
        device: where the codec runs.
        model_id: names the codec in cache keys; default: architecture + a hash of its weights.
    """

    # the flat arguments of earlier versions -> their place now (named when an old config gives them)
    moved_settings: ClassVar[dict[str, str]] = {
        key: f"weights.{key}" for key in ("checkpoint", "model", "download", "pretrained")
    }

    def __init__(
        self,
        codec: nn.Module | None = None,
        weights: EncodecWeights = EncodecWeights(),
        bandwidth: float | None = None,
        cache_dir: str | None = None,
        batch_size: int = 8,
        device: str = "cpu",
        model_id: str | None = None,
    ) -> None:
        weights = check_settings("weights", weights, EncodecWeights)
        sources = {
            "codec": codec is not None,
            "weights.checkpoint": weights.checkpoint is not None,
            "weights.download": weights.download,
            "weights.pretrained": weights.pretrained is not None,
        }
        given = [name for name, is_set in sources.items() if is_set]
        if len(given) > 1:
            raise ValueError(
                "give only one of codec, weights.checkpoint, weights.pretrained or weights.download=True, "
                f"got {given}"
            )
        if not given:
            raise ValueError(
                "EncodecTokenizer needs EnCodec weights and none were given (nothing is downloaded unless asked): "
                "pass weights=EncodecWeights(checkpoint='/path/to/encodec_24khz-d7cc33bc.th') (a local copy of "
                f"{_WEIGHTS_URL}), or weights=EncodecWeights(download=True) on a machine with internet access, "
                "or codec=<a constructed encodec.EncodecModel>"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if weights.pretrained is not None:
            from lightning_cfgrl.adapters.hf_codec import load_transformers_codec

            codec = load_transformers_codec(weights.pretrained)
        if codec is None:
            codec = _load_codec(weights.checkpoint, weights.model, weights.download)
        codec = as_encodec(codec)
        for part in ("encoder", "decoder", "quantizer", "sample_rate", "channels", "target_bandwidths"):
            if not hasattr(codec, part):
                raise TypeError(
                    f"codec must be an encodec.EncodecModel; {type(codec).__name__} has no .{part}"
                )
        if getattr(codec, "segment", None) is not None:
            raise ValueError(
                f"codec {getattr(codec, 'name', type(codec).__name__)!r} encodes in overlapping segments of "
                f"{codec.segment} s with per-segment scales, which a [K, T] token tensor cannot hold; "
                "use an unsegmented model such as encodec_24khz"
            )
        bandwidths = [float(b) for b in codec.target_bandwidths]
        bandwidth = min(bandwidths) if bandwidth is None else float(bandwidth)
        if bandwidth not in bandwidths:
            raise ValueError(
                f"bandwidth {bandwidth} kbps is not one of the codec's target_bandwidths {bandwidths}"
            )
        self.codec = codec.to(device).eval().requires_grad_(False)
        self.codec.set_target_bandwidth(bandwidth)
        self.bandwidth = bandwidth
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self._model_id = model_id

    # -- properties --------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.codec.channels)

    @property
    def frame_rate(self) -> float:
        """Token frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def hop_length(self) -> int:
        """Samples per token frame."""
        return int(self.codec.encoder.hop_length)

    @property
    def num_codebooks(self) -> int:
        """K at this bandwidth."""
        q = self.codec.quantizer
        return min(int(q.n_q), q.get_num_quantizers_for_bandwidth(self.codec.frame_rate, self.bandwidth))

    @property
    def codebook_size(self) -> int:
        """V: token ids are in ``[0, V)``."""
        return int(self.codec.quantizer.bins)

    @property
    def model_id(self) -> str:
        """Cache key of the codec: ``<name>-<sha256 of its weights, 16 hex>`` unless given."""
        if self._model_id is None:
            from lightning_cfgrl.io.checkpoints import tensors_sha256

            name = getattr(self.codec, "name", None) or type(self.codec).__name__
            self._model_id = f"{name}-{tensors_sha256(self.codec.state_dict())[:16]}"
        return self._model_id

    # -- waveforms ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav: Tensor, sample_rate: int) -> Tensor:
        """Waveform ``[B, C, L]`` (or ``[C, L]``) at ``sample_rate`` -> tokens ``[B, K, T]`` (or ``[K, T]``),
        ``T = ceil(L' / hop_length)`` with ``L'`` the length at the codec's rate."""
        if wav.dim() not in (2, 3):
            raise ValueError(f"wav must be [B, C, L] or [C, L], got shape {tuple(wav.shape)}")
        single = wav.dim() == 2
        wav = self._prepare(wav if not single else wav[None], sample_rate)
        tokens = torch.cat([self._encode_batch(chunk) for chunk in wav.split(self.batch_size)])
        return tokens[0] if single else tokens

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens ``[B, K, T]`` (or ``[K, T]``) -> waveform ``[B, C, T * hop_length]`` (or ``[C, L]``) at
        ``sample_rate``. Without per-clip scales, audio of a normalising codec comes back at unit loudness."""
        if tokens.dim() not in (2, 3):
            raise ValueError(f"tokens must be [B, K, T] or [K, T], got shape {tuple(tokens.shape)}")
        single = tokens.dim() == 2
        tokens = tokens[None] if single else tokens
        self._check_tokens(tokens)
        self._check_initialised()
        device = next(self.codec.parameters()).device
        wav = torch.cat(
            [self.codec.decode([(chunk.to(device), None)]) for chunk in tokens.split(self.batch_size)]
        )
        return wav[0] if single else wav

    # -- files ---------------------------------------------------------------------------------------
    def encode_file(self, path: str | os.PathLike[str]) -> Tensor:
        """One audio file -> tokens ``[K, T]`` int64 (CPU), from the cache when possible."""
        return self.encode_files([path])[0]

    def encode_files(self, paths: Sequence[str | os.PathLike[str]]) -> list[Tensor]:
        """Audio files -> tokens ``[K, T_i]`` int64 (CPU) each, in order; cache misses are encoded in
        batches of equal-length clips and written to the cache."""
        keys = [self._cache_path(Path(p)) for p in paths]
        results: list[Tensor | None] = [self._load_cached(key) if key is not None else None for key in keys]
        pending: dict[int, list[tuple[int, Tensor]]] = {}  # length at the codec rate -> [(index, [C, L])]
        for i, path in enumerate(paths):
            if results[i] is None:
                wav, sr = read_audio(path)
                if wav.shape[-1] == 0:
                    raise ValueError(f"audio file {str(path)!r} has no samples")
                wav = self._prepare(wav[None], sr)[0]
                pending.setdefault(wav.shape[-1], []).append((i, wav))
        for group in pending.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                with torch.no_grad():
                    tokens = self._encode_batch(torch.stack([wav for _, wav in chunk])).cpu()
                for (i, _), codes in zip(chunk, tokens, strict=True):
                    results[i] = codes
                    if keys[i] is not None:
                        self._save_cached(keys[i], codes)
        return [r for r in results if r is not None]  # every entry is filled by now

    # -- internals -----------------------------------------------------------------------------------
    def _prepare(self, wav: Tensor, sample_rate: int) -> Tensor:
        """``[B, C, L]`` at ``sample_rate`` -> ``[B, codec channels, L']`` float32 at the codec's rate."""
        device = next(self.codec.parameters()).device
        wav = convert_channels(wav.to(device=device, dtype=torch.float32), self.channels)
        return resample(wav, int(sample_rate), self.sample_rate)

    def _encode_batch(self, wav: Tensor) -> Tensor:
        self._check_initialised()
        frames = self.codec.encode(wav)
        if len(frames) != 1:  # only possible if someone set codec.segment after construction
            raise ValueError(f"codec returned {len(frames)} segments, expected 1 (an unsegmented model)")
        return frames[0][0].long()  # [B, K, T]

    def _check_initialised(self) -> None:
        from lightning_cfgrl.embedders.encodec_audio import codebooks_initialised

        if not codebooks_initialised(self.codec):
            raise ValueError(
                "the codec's codebooks are uninitialised (all zeros: every clip would encode to token 0): load "
                "trained EnCodec weights (weights=EncodecWeights(checkpoint=...)) or run "
                "lightning_cfgrl.embedders.encodec_audio.init_codebooks(codec, audio) first"
            )

    def _check_tokens(self, tokens: Tensor) -> None:
        n_q = int(self.codec.quantizer.n_q)
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16) or not 1 <= tokens.shape[1] <= n_q:
            raise ValueError(
                f"tokens must be integer [B, K, T] with 1 <= K <= {n_q} (the codec's codebooks), "
                f"got dtype {tokens.dtype} and shape {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must be in [0, {self.codebook_size}) (the codebook size), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )

    def _cache_path(self, path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        from lightning_cfgrl.io.checkpoints import file_sha256

        if not path.is_file():
            raise AudioFileError(f"audio file {str(path)!r} does not exist")
        return self.cache_dir / self.model_id / f"bw{self.bandwidth:g}" / f"{file_sha256(path)}.pt"

    def _load_cached(self, key: Path) -> Tensor | None:
        if not key.is_file():
            return None
        try:
            entry = torch.load(key, map_location="cpu", weights_only=True)
            codes = entry["codes"]
            if (
                entry.get("version") != _CACHE_VERSION
                or codes.dim() != 2
                or codes.shape[0] != self.num_codebooks
            ):
                raise ValueError(
                    f"unexpected entry (version {entry.get('version')}, shape {tuple(codes.shape)})"
                )
        except Exception as err:  # a corrupt or stale entry is re-encoded, not fatal
            warnings.warn(
                f"ignoring unreadable token cache entry {str(key)!r} ({err}); re-encoding", stacklevel=3
            )
            return None
        return codes.long()

    def _save_cached(self, key: Path, codes: Tensor) -> None:
        from lightning_cfgrl.io.checkpoints import atomic_save

        small = codes.to(torch.int16) if self.codebook_size <= 2**15 else codes  # a quarter of the disk
        atomic_save({"codes": small.contiguous(), "version": _CACHE_VERSION}, key)


def _load_codec(checkpoint: str | None, model: str, download: bool) -> nn.Module:
    if checkpoint is not None:
        from lightning_cfgrl.embedders.encodec_audio import load_encodec

        return load_encodec(checkpoint, model)
    from lightning_cfgrl.adapters.encodec_import import ENCODEC_MODELS, build_encodec

    if model not in ENCODEC_MODELS:
        raise ValueError(f"model must be one of {sorted(ENCODEC_MODELS)}, got {model!r}")
    try:
        return build_encodec(model, pretrained=True).eval()
    except Exception as err:
        raise RuntimeError(
            f"downloading the {model} weights failed ({type(err).__name__}: {err}); without internet access, fetch "
            f"{_WEIGHTS_URL} elsewhere and pass weights=EncodecWeights(checkpoint='/path/to/encodec_24khz-d7cc33bc.th')"
        ) from err


__all__ = ["EncodecTokenizer", "EncodecWeights"]
