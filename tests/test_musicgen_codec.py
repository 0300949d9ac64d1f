"""MusicGen's own codec (a transformers EncodecModel: 32 kHz, 4 codebooks) in ``EncodecTokenizer`` and
``EncodecAudioEmbedder``, so the diversity reward can embed decoded MusicGen audio."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lightning_cfgrl.adapters import MusicgenGenerator  # noqa: E402
from lightning_cfgrl.adapters.hf_codec import TransformersEncodec  # noqa: E402
from lightning_cfgrl.adapters.musicgen import import_musicgen  # noqa: E402
from lightning_cfgrl.audio import EncodecTokenizer, EncodecWeights  # noqa: E402
from lightning_cfgrl.embedders import EncodecAudioEmbedder  # noqa: E402
from tests.helpers.musicgen import V, randomise_codebooks, save_tiny_musicgen, tiny_config  # noqa: E402

SR = 32_000


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny convolutions: a second intra-op thread only adds waiting on a busy 2-core machine."""


@pytest.fixture(scope="module")
def musicgen():
    hf = import_musicgen()
    hf.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = hf.MusicgenForConditionalGeneration(tiny_config(hf, num_codebooks=4, sample_rate=SR)).eval()
    randomise_codebooks(model.audio_encoder)
    return model


def _wave(n: int = 2, samples: int = 1600, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    freq = 200 + 600 * torch.rand(n, 1, 1, generator=g)
    return 0.5 * torch.sin(2 * torch.pi * freq * t) + 0.05 * torch.randn(n, 1, samples, generator=g)


def test_tokenizer_takes_musicgens_codec(musicgen):
    codec = musicgen.audio_encoder
    tok = EncodecTokenizer(codec=codec)
    assert (tok.sample_rate, tok.channels, tok.num_codebooks, tok.codebook_size) == (SR, 1, 4, V)
    assert tok.hop_length == 4 and tok.frame_rate == SR / 4
    wav = _wave()
    codes = tok.encode(wav, SR)
    want = codec.encode(wav, bandwidth=codec.config.target_bandwidths[0]).audio_codes[0]
    assert codes.shape == (2, 4, 400) and torch.equal(codes, want)
    assert len(codes.unique()) > V // 2  # randomised codebooks: the codes vary
    # resampled input: 16 kHz in, the codec's 32 kHz inside
    assert tok.encode(_wave(samples=800)[:, :, :], 16_000).shape == (2, 4, 400)
    audio = tok.decode(codes)
    with torch.no_grad():
        ref = codec.decode(want[None], [None]).audio_values
    torch.testing.assert_close(
        audio, ref, rtol=0, atol=16 * torch.finfo(torch.float32).eps * float(ref.abs().max())
    )
    assert tok.model_id.startswith("transformers_encodec_32khz-")


def test_embedder_takes_musicgens_codec_and_tells_sounds_apart(musicgen):
    embedder = EncodecAudioEmbedder(codec=musicgen.audio_encoder, pooling="mean_std")
    assert isinstance(embedder.codec, TransformersEncodec)
    assert (embedder.num_codebooks, embedder.codebook_size) == (4, V)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (3, 4, 50), generator=g)
    tokens[1] = tokens[0]  # a duplicate sample
    emb = embedder(tokens)
    latent = musicgen.config.audio_encoder.hidden_size
    assert emb.shape == (3, 2 * latent) and emb.dtype == torch.float32
    assert torch.equal(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])
    # what it decodes is MusicGen's own decode of those codes
    with torch.no_grad():
        ref = musicgen.audio_encoder.decode(tokens[None], [None]).audio_values
    torch.testing.assert_close(embedder.decode(tokens), ref, rtol=0, atol=1e-6 * float(ref.abs().max()))
    # the generator's decode (AudioSampleLogger) and the embedder hear the same audio
    torch.testing.assert_close(MusicgenGenerator(musicgen).decode(tokens), ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"1 <= K <= 4"):
        embedder(torch.zeros(1, 5, 8, dtype=torch.long))


def test_codec_from_a_local_musicgen_folder(tmp_path):
    hf = import_musicgen()
    folder = save_tiny_musicgen(hf, tmp_path / "mg", num_codebooks=4, sample_rate=SR)
    embedder = EncodecAudioEmbedder(pretrained=str(folder))
    tok = EncodecTokenizer(weights=EncodecWeights(pretrained=str(folder)))
    assert embedder.num_codebooks == tok.num_codebooks == 4 and tok.sample_rate == SR
    codes = tok.encode(_wave(1), SR)
    assert embedder(codes).shape[0] == 1
    with pytest.raises(ValueError, match="exactly one of codec"):
        EncodecAudioEmbedder(codec=tok.codec, pretrained=str(folder))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        EncodecTokenizer(weights=EncodecWeights(pretrained=str(tmp_path)))
