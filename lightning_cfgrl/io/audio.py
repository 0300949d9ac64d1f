"""Audio in and out without torchaudio: read/write files, resample, match channels.

torchaudio cannot be loaded everywhere (see ``encodec_import``), so this module needs none of it:

* WAV is parsed here (RIFF: PCM 8/16/24/32-bit and IEEE float 32/64, plain or WAVE_FORMAT_EXTENSIBLE)
  and written with the stdlib ``wave`` module (16-bit PCM);
* FLAC (and OGG, AIFF, ...) go through ``soundfile`` when it is installed, with an error saying how to
  install it when not;
* resampling is a windowed-sinc polyphase filter in torch (the method of ``julius.resample``), exact for
  rational ratios and band-limited, unlike ``F.interpolate`` (linear interpolation aliases).

Waveforms are float32 ``[C, L]`` in [-1, 1].
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from lightning_cfgrl.io.checkpoints import atomic_write

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


class AudioFileError(ValueError):
    """An audio file is missing, unreadable, or in a format that cannot be decoded here."""


def read_audio(path: str | os.PathLike[str]) -> tuple[Tensor, int]:
    """Read ``path`` -> (waveform ``[C, L]`` float32 in [-1, 1], sample rate).

    ``.wav`` is decoded here; anything else needs ``soundfile`` (``pip install soundfile``).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".wav":
            try:
                return _read_wav(path.read_bytes())
            except AudioFileError:
                if _soundfile() is None:
                    raise
                return _read_soundfile(path)  # exotic WAV codecs (ADPCM, RF64, ...)
        if _soundfile() is None:
            raise AudioFileError(
                f"reading {path.suffix or 'extensionless'} files such as {str(path)!r} needs the soundfile package "
                "(pip install soundfile); only .wav is read without it"
            )
        return _read_soundfile(path)
    except AudioFileError as err:
        if str(path) in str(err):
            raise
        raise AudioFileError(f"cannot read audio file {str(path)!r}: {err}") from err
    except Exception as err:  # soundfile's RuntimeError/LibsndfileError, struct.error, ...
        raise AudioFileError(f"cannot read audio file {str(path)!r}: {type(err).__name__}: {err}") from err


def write_audio(path: str | os.PathLike[str], wav: Tensor, sample_rate: int) -> None:
    """Write ``wav [C, L]`` (or ``[L]``) float in [-1, 1] as 16-bit PCM; ``.wav`` natively, else soundfile."""
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"wav must be [C, L] or [L], got shape {tuple(wav.shape)}")
    # x 32768 to match the reader's / 32768 (the usual convention); +1.0 saturates at 32767
    pcm = (wav.detach().float() * 32768).round().clamp(-32768, 32767).to(torch.int16).cpu().numpy()
    path = Path(path)
    if path.suffix.lower() == ".wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as f:
            f.setnchannels(pcm.shape[0])
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            f.writeframes(pcm.T.astype("<i2").tobytes())
        with atomic_write(path) as out:  # a crash never leaves a truncated WAV
            out.write(buffer.getvalue())
        return
    sf = _soundfile()
    if sf is None:
        raise AudioFileError(
            f"writing {str(path)!r} needs the soundfile package (pip install soundfile); "
            "only .wav is written without it"
        )
    sf.write(str(path), pcm.T, int(sample_rate), subtype="PCM_16")


def resample(wav: Tensor, orig_sr: int, new_sr: int, zeros: int = 24, rolloff: float = 0.945) -> Tensor:
    """Band-limited resampling of ``[..., L]`` from ``orig_sr`` to ``new_sr`` -> ``[..., ceil(L * new / orig)]``.

    The ratio is reduced to ``new/orig`` in lowest terms; each of the ``new`` output phases is one
    Hann-windowed sinc filter (``zeros`` zero crossings each side, cutoff ``rolloff`` x the lower Nyquist
    frequency) applied with stride ``orig``: a single ``conv1d``.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be > 0, got orig_sr={orig_sr}, new_sr={new_sr}")
    if orig_sr == new_sr:
        return wav
    gcd = math.gcd(int(orig_sr), int(new_sr))
    old, new = int(orig_sr) // gcd, int(new_sr) // gcd
    kernel, width = _sinc_kernels(old, new, zeros, rolloff)
    kernel = kernel.to(device=wav.device, dtype=wav.dtype if wav.is_floating_point() else torch.float32)
    length = wav.shape[-1]
    x = rearrange(wav.to(kernel.dtype), "... l -> (...) 1 l")
    x = F.pad(x, (width, width + old), mode="replicate")
    y = F.conv1d(x, kernel, stride=old)  # [N, new, L / old + 1]: phase p of output block j
    y = rearrange(y, "n phase blocks -> n (blocks phase)")[:, : math.ceil(length * new / old)]
    return y.reshape(*wav.shape[:-1], y.shape[-1])


@functools.lru_cache(maxsize=16)
def _sinc_kernels(old: int, new: int, zeros: int, rolloff: float) -> tuple[Tensor, int]:
    cutoff = min(old, new) * rolloff  # in units of the reduced sample rates
    width = math.ceil(zeros * old / cutoff)
    idx = torch.arange(-width, width + old, dtype=torch.float64)
    phases = torch.arange(new, dtype=torch.float64)[:, None]
    t = (idx[None] / old - phases / new) * cutoff  # [new, taps], in units of the cutoff period
    t = t.clamp(-zeros, zeros)
    window = torch.cos(math.pi * t / zeros / 2) ** 2
    kernel = torch.sinc(t) * window
    kernel = kernel / kernel.sum(-1, keepdim=True)  # unit DC gain per phase
    return kernel[:, None].float(), width


def convert_channels(wav: Tensor, channels: int) -> Tensor:
    """``[..., C, L]`` -> ``[..., channels, L]``: average to mono, or repeat mono to several channels."""
    have = wav.shape[-2]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(-2, keepdim=True)
    if have == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1])
    raise ValueError(f"cannot convert {have} channels to {channels} (only to/from mono)")


# ------------------------------------------------------------------------------------------- decoders


def _soundfile():  # noqa: ANN202
    try:
        import soundfile
    except (ImportError, OSError):  # OSError: the package is there but libsndfile is not
        return None
    return soundfile


def _read_soundfile(path: Path) -> tuple[Tensor, int]:
    data, sample_rate = _soundfile().read(str(path), dtype="float32", always_2d=True)  # [L, C]
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def _read_wav(data: bytes) -> tuple[Tensor, int]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFileError(f"not a RIFF/WAVE file (starts with {data[:12]!r})")
    fmt, payload, pos = None, None, 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk == b"fmt ":
            fmt = body
        elif chunk == b"data":
            payload = body
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    if fmt is None or payload is None or len(fmt) < 16:
        raise AudioFileError("WAV file has no 'fmt ' or 'data' chunk")
    code, channels, sample_rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if code == _EXTENSIBLE and len(fmt) >= 26:
        code = struct.unpack("<H", fmt[24:26])[0]  # first two bytes of the sub-format GUID
    width = bits // 8
    if channels < 1 or block != channels * width:
        raise AudioFileError(f"inconsistent WAV header: {channels} channels, {bits} bits, block size {block}")
    usable = len(payload) - len(payload) % block
    raw = payload[:usable]
    if code == _FLOAT and bits in (32, 64):
        samples = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif code == _PCM and bits == 8:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif code == _PCM and bits in (16, 32):
        samples = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float32) / float(2 ** (bits - 1))
    elif code == _PCM and bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)  # sign-extend
        samples = ints.astype(np.float32) / float(1 << 23)
    else:
        raise AudioFileError(
            f"unsupported WAV encoding (format code {code:#06x}, {bits} bits); "
            "PCM 8/16/24/32-bit and float 32/64 are read natively, others need soundfile"
        )
    wav = rearrange(torch.from_numpy(samples.copy()), "(l c) -> c l", c=channels)
    return wav, int(sample_rate)


__all__ = ["AudioFileError", "convert_channels", "read_audio", "resample", "write_audio"]
