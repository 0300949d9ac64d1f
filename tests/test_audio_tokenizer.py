"""Audio I/O without torchaudio, the sinc resampler, and EncodecTokenizer (round trip, cache, errors).

Codecs are tiny ``encodec.EncodecModel``s whose codebooks are k-means-initialised on a few seconds of
generated audio; nothing downloads.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from lightning_cfgrl.audio import EncodecTokenizer, EncodecWeights, read_audio, resample, write_audio
from lightning_cfgrl.io import audio as audio_io
from tests.helpers.audio import HOP, SR, invertible_codec, small_codec, tones

pytestmark = pytest.mark.usefixtures("one_thread")


# -- resampling and file I/O ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orig, new, freq", [(44100, 16000, 440.0), (16000, 24000, 1000.0), (48000, 24000, 3000.0)]
)
def test_resample_matches_the_analytic_sine(orig, new, freq):
    x = torch.sin(2 * math.pi * freq * torch.arange(orig) / orig + 0.3)
    y = resample(x, orig, new)
    assert y.shape == (new,)
    reference = torch.sin(2 * math.pi * freq * torch.arange(new) / new + 0.3)
    interior = slice(new // 10, -new // 10)  # the edges see the replicate padding
    assert float((y[interior] - reference[interior]).abs().max()) < 3e-3


def test_resample_removes_what_the_new_rate_cannot_hold():
    x = torch.sin(2 * math.pi * 10_000 * torch.arange(44100) / 44100)  # above the 8 kHz Nyquist of 16 kHz
    y = resample(x, 44100, 16000)
    assert float(y[1000:-1000].pow(2).mean().sqrt()) < 1e-3  # vs 0.71 in: at least -57 dB
    linear = torch.nn.functional.interpolate(x[None, None], size=16000, mode="linear")[0, 0]
    assert float(linear[1000:-1000].pow(2).mean().sqrt()) > 0.1  # what F.interpolate would let through
    stereo = torch.stack([x, -x])[None]  # [1, 2, L]: leading dims are kept
    assert resample(stereo, 44100, 16000).shape == (1, 2, 16000)
    assert resample(x, 16000, 16000) is x


def _wav_bytes(samples: np.ndarray, sample_rate: int, code: int, bits: int) -> bytes:
    data = samples.tobytes()
    fmt = struct.pack(
        "<HHIIHH",
        code,
        samples.shape[1],
        sample_rate,
        sample_rate * samples.shape[1] * bits // 8,
        samples.shape[1] * bits // 8,
        bits,
    )
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\0"
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_wav_read_write_without_torchaudio(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_io, "_soundfile", lambda: None)  # the built-in parser alone
    wav = torch.rand(2, 500) * 2 - 1
    write_audio(tmp_path / "pcm16.wav", wav, 8000)
    back, sr = read_audio(tmp_path / "pcm16.wav")
    assert sr == 8000 and back.shape == (2, 500)
    assert float((back - wav).abs().max()) <= 0.5 / 32768
    samples = np.ascontiguousarray(wav.numpy().T)  # [L, C] interleaved
    (tmp_path / "f32.wav").write_bytes(
        _wav_bytes(samples.astype("<f4"), 22050, 3, 32)
    )  # odd-sized LIST chunk too
    back, sr = read_audio(tmp_path / "f32.wav")
    assert sr == 22050 and torch.equal(back, wav)
    ints = np.round(samples * (2**23 - 1)).astype(np.int32)
    packed = np.stack([(ints >> s) & 0xFF for s in (0, 8, 16)], -1).astype(np.uint8)  # little-endian 24-bit
    (tmp_path / "i24.wav").write_bytes(_wav_bytes(packed, 16000, 1, 24))
    back, _ = read_audio(tmp_path / "i24.wav")
    assert float((back - wav).abs().max()) < 2e-7


def test_flac_needs_soundfile_and_errors_name_the_file(tmp_path, monkeypatch):
    (tmp_path / "broken.wav").write_bytes(b"RIFX....WAVEjunk")
    with pytest.raises(ValueError, match="cannot read audio file .*broken.wav"):
        read_audio(tmp_path / "broken.wav")  # (soundfile, when installed, gets a second try)
    with pytest.raises(ValueError, match="missing.wav.*does not exist"):
        read_audio(tmp_path / "missing.wav")
    if audio_io._soundfile() is not None:
        write_audio(tmp_path / "a.flac", torch.full((1, 100), 0.5), 16000)
        back, sr = read_audio(tmp_path / "a.flac")
        assert sr == 16000 and float((back - 0.5).abs().max()) < 1e-4
    else:
        (tmp_path / "a.flac").write_bytes(b"fLaC")
    monkeypatch.setattr(audio_io, "_soundfile", lambda: None)
    with pytest.raises(ValueError, match=r"a\.flac.*pip install soundfile"):
        read_audio(tmp_path / "a.flac")
    with pytest.raises(ValueError, match="broken.wav.*not a RIFF/WAVE"):
        read_audio(tmp_path / "broken.wav")


# -- tokenizer -----------------------------------------------------------------------------------------


def test_encode_decode_encode_reproduces_tokens():
    tok = EncodecTokenizer(invertible_codec(), bandwidth=2.5)
    assert (tok.num_codebooks, tok.codebook_size, tok.frame_rate) == (2, 32, 250.0)
    audio = tones(4, 1.0, seed=7)
    codes = tok.encode(audio, SR)
    assert codes.shape == (4, 2, 250) and codes.dtype == torch.long
    assert codes[:, 0].unique().numel() > 8, "the clips use many codes, so agreement is not trivial"
    again = tok.encode(tok.decode(codes), SR)
    agreement = (again == codes).float().mean(dim=(0, 2))  # per codebook
    assert float(agreement[0]) > 0.95 and float(agreement[1]) > 0.8, agreement
    assert EncodecTokenizer(invertible_codec(), bandwidth=1.25).encode(audio, SR).shape == (4, 1, 250)


def test_resampling_and_channels_are_applied_before_encoding():
    tok = EncodecTokenizer(small_codec())
    mono = tones(1, 0.5, sample_rate=8000, seed=3)[0]  # [1, L] at twice the codec rate
    stereo = torch.cat([mono + 0.1, mono - 0.1])  # averages back to `mono`
    expected = tok.encode(resample(mono, 8000, SR), SR)
    torch.testing.assert_close(tok.encode(stereo, 8000), expected, rtol=0, atol=0)
    assert expected.shape == (1, math.ceil(2000 / HOP))
    assert tok.decode(expected).shape == (1, expected.shape[-1] * HOP)


def test_cache_hit_returns_identical_tokens_without_encoding(tmp_path):
    for i, seconds in enumerate([0.5, 0.5, 0.5, 0.3]):
        write_audio(tmp_path / f"clip{i}.wav", tones(1, seconds, sample_rate=8000, seed=i)[0], 8000)
    paths = sorted(tmp_path.glob("clip*.wav"))
    tok = EncodecTokenizer(small_codec(), bandwidth=2.5, cache_dir=str(tmp_path / "cache"), batch_size=2)
    calls = []
    tok.codec.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    first = tok.encode_files(paths)
    assert calls == [2, 1, 1], "equal-length clips share a batch of at most 2; the short one goes alone"
    assert [c.shape for c in first] == [(2, 125)] * 3 + [(2, 75)]
    one_by_one = [EncodecTokenizer(small_codec(), bandwidth=2.5).encode_file(p) for p in paths]
    assert all(torch.equal(a, b) for a, b in zip(first, one_by_one, strict=True))

    calls.clear()
    second = tok.encode_files(paths)
    assert calls == [] and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    entries = sorted((tmp_path / "cache").rglob("*.pt"))
    assert len(entries) == 4 and all(e.parent.name == "bw2.5" for e in entries)
    assert entries[0].parent.parent.name == tok.model_id and not list((tmp_path / "cache").rglob("*.tmp"))

    entries[0].write_bytes(b"not a torch file")  # a damaged entry is re-encoded, with a warning
    with pytest.warns(UserWarning, match="ignoring unreadable token cache entry"):
        third = tok.encode_files(paths)
    assert calls == [1] and all(torch.equal(a, b) for a, b in zip(first, third, strict=True))

    calls.clear()  # another bandwidth is another key
    other = EncodecTokenizer(tok.codec, bandwidth=1.25, cache_dir=str(tmp_path / "cache"))
    other.codec.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    assert other.encode_file(paths[0]).shape == (1, 125) and calls


def test_tokenizer_errors(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"weights=EncodecWeights\(checkpoint='/path/to/encodec_24khz-d7cc33bc.th'\).*EncodecWeights\(download=True\)",
    ):
        EncodecTokenizer()
    with pytest.raises(ValueError, match=r"give only one of codec, .*got \['codec', 'weights.download'\]"):
        EncodecTokenizer(small_codec(), weights=EncodecWeights(download=True))
    with pytest.raises(FileNotFoundError, match="nope.th"):
        EncodecTokenizer(weights=EncodecWeights(checkpoint=str(tmp_path / "nope.th")))
    with pytest.raises(ValueError, match=r"bandwidth 6.0 kbps is not one of .*\[1.25, 2.5\]"):
        EncodecTokenizer(small_codec(), bandwidth=6.0)
    tok = EncodecTokenizer(small_codec())
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 32\).*got \[40, 40\]"):
        tok.decode(torch.full((1, 1, 4), 40))
    with pytest.raises(ValueError, match="does not exist"):
        tok.encode_file(tmp_path / "missing.wav")
    codec = small_codec()
    codec.quantizer.vq.layers[0]._codebook.inited.fill_(0)
    with pytest.raises(ValueError, match="codebooks are uninitialised"):
        EncodecTokenizer(codec).encode(torch.zeros(1, 1, 64), SR)
