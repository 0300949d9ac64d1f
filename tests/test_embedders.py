"""Embedders: the contrastive token embedder (training, triplet accuracy, checkpoints) and the EnCodec
audio embedder (torchaudio-free import, small codec with k-means-initialised codebooks)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lightning_cfgrl.embedders import (
    ContrastiveTokenEmbedder,
    EncodecAudioEmbedder,
)
from lightning_cfgrl.embedders.contrastive_training import info_nce, sample_chunk_pairs, triplet_accuracy
from lightning_cfgrl.embedders.encodec_audio import codebooks_initialised, init_codebooks, load_encodec
from lightning_cfgrl.experiments import SyntheticMusic

CHUNK_FRAMES = 12  # as the session fixture `contrastive_embedder` (conftest) was trained


def _heldout_frames(n: int = 2000) -> torch.Tensor:
    domain = SyntheticMusic()
    g = torch.Generator().manual_seed(12345)  # not the training data's seed
    return domain.sample(domain.prompts[torch.randint(domain.num_prompts, (n,), generator=g)], g)


# -- contrastive embedder -----------------------------------------------------------------------------


@pytest.mark.slow  # trains a model
def test_trained_embedder_puts_chunks_of_one_sequence_closer(contrastive_embedder) -> None:
    embedder, _ = contrastive_embedder
    frames = _heldout_frames()
    trained = triplet_accuracy(embedder, frames, 16, torch.Generator().manual_seed(0))
    assert float(trained) >= 0.90
    # the training is what did it: the same architecture untrained is far worse
    torch.manual_seed(0)
    untrained = triplet_accuracy(
        ContrastiveTokenEmbedder().eval(), frames, 16, torch.Generator().manual_seed(0)
    )
    assert float(untrained) < float(trained) - 0.1


@pytest.mark.slow  # trains a model
def test_checkpoint_loads_weights_only_and_rebuilds_the_embedder(contrastive_embedder) -> None:
    embedder, path = contrastive_embedder
    ckpt = torch.load(path, weights_only=True)  # nothing pickled but tensors and containers
    assert (
        ckpt["hyper_parameters"]["embedder"]["class_path"]
        == "lightning_cfgrl.embedders.contrastive.ContrastiveTokenEmbedder"
    )
    tokens = _heldout_frames(8)
    expected = embedder(tokens)
    assert not ContrastiveTokenEmbedder.from_checkpoint(path).training
    for loaded in (
        ContrastiveTokenEmbedder.from_checkpoint(path),
        ContrastiveTokenEmbedder(checkpoint=path).eval(),
    ):
        torch.testing.assert_close(loaded(tokens), expected, rtol=0, atol=0)


def test_checkpoint_architecture_wins_and_mismatches_are_named(tmp_path) -> None:
    torch.manual_seed(0)
    small = ContrastiveTokenEmbedder(dim=16, embed_dim=8, num_layers=1)
    path = tmp_path / "small.ckpt"
    torch.save(
        {
            "state_dict": {f"embedder.{k}": v for k, v in small.state_dict().items()},
            "hyper_parameters": {"embedder": small.spec()},
        },
        path,
    )
    tokens = torch.randint(32, (3, 2, 20))
    loaded = ContrastiveTokenEmbedder(checkpoint=str(path))  # defaults given: the checkpoint's architecture
    assert loaded(tokens).shape == (3, 8)
    torch.testing.assert_close(loaded(tokens), small(tokens))
    with pytest.raises(ValueError, match="embed_dim=48 was given.*embed_dim=8"):
        ContrastiveTokenEmbedder(embed_dim=48, checkpoint=str(path))
    # a bare state dict in safetensors has no recorded architecture: the given one must fit
    from safetensors.torch import save_file

    save_file(small.state_dict(), str(tmp_path / "small.safetensors"))
    fitted = ContrastiveTokenEmbedder(
        dim=16, embed_dim=8, num_layers=1, checkpoint=str(tmp_path / "small.safetensors")
    )
    torch.testing.assert_close(fitted(tokens), small(tokens))
    with pytest.raises(ValueError, match="does not fit ContrastiveTokenEmbedder"):
        ContrastiveTokenEmbedder(checkpoint=str(tmp_path / "small.safetensors"))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        ContrastiveTokenEmbedder(checkpoint=str(tmp_path / "missing.ckpt"))


def test_embedder_rejects_bad_tokens() -> None:
    embedder = ContrastiveTokenEmbedder()
    with pytest.raises(ValueError, match=r"\[B, 2, T\] frames, got shape \(4, 3, 10\)"):
        embedder(torch.zeros(4, 3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 32\), got \[0, 32\]"):
        embedder(torch.tensor([[[0] * 10, [32] * 10]]))


def test_chunk_pairs_are_non_overlapping_slices_of_the_same_sequence() -> None:
    frames = torch.arange(50 * 2 * 32).reshape(50, 2, 32)  # every value unique and increasing in time
    first, second = sample_chunk_pairs(frames, 10, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == (50, 2, 10)
    start_a, start_b = first[:, 0, 0] % 32, second[:, 0, 0] % 32
    assert bool(((start_a - start_b).abs() >= 10).all())  # no overlap
    assert bool((first[:, :, 1:] - first[:, :, :-1] == 1).all())  # contiguous
    assert bool((first // 64 == torch.arange(50)[:, None, None]).all())  # from its own sequence
    assert bool((start_a > start_b).any() and (start_a < start_b).any())  # either order
    with pytest.raises(ValueError, match=r"chunk_frames must be in \[1, T / 2\] = \[1, 16\].*got 17"):
        sample_chunk_pairs(frames, 17)


def test_info_nce_prefers_matching_pairs() -> None:
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    matched = info_nce(a, a + 0.01 * torch.randn(16, 8), 0.1)
    shuffled = info_nce(a, a[torch.randperm(16)], 0.1)
    assert float(matched) < 0.05 < float(shuffled)


# -- EnCodec audio embedder ---------------------------------------------------------------------------

SAMPLE_RATE = 4000


def _small_codec(num_codebooks: int = 2, bins: int = 32):
    """A tiny EnCodec (hop 16 samples) whose codebooks are k-means-initialised on 3 s of synthetic audio."""
    from lightning_cfgrl.adapters.encodec_import import import_encodec

    encodec = import_encodec()
    torch.manual_seed(0)
    seanet = dict(channels=1, dimension=16, n_filters=4, n_residual_layers=1, ratios=[4, 4], lstm=0)
    codec = encodec.EncodecModel(
        encodec.modules.SEANetEncoder(**seanet),
        encodec.modules.SEANetDecoder(**seanet),
        encodec.quantization.ResidualVectorQuantizer(
            dimension=16, n_q=num_codebooks, bins=bins, kmeans_iters=5
        ),
        target_bandwidths=[1.0],
        sample_rate=SAMPLE_RATE,
        channels=1,
    )
    assert not codebooks_initialised(codec)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    freqs = 100 + 900 * torch.rand(8, 1, 1, generator=g)
    audio = torch.rand(8, 1, 1, generator=g) * torch.sin(2 * torch.pi * freqs * t) + 0.05 * torch.randn(
        8, 1, t.numel(), generator=g
    )
    return init_codebooks(codec, audio).eval()


def test_encodec_imports_lazily_and_without_a_loadable_torchaudio() -> None:
    # one fresh interpreter (imports are process-wide): importing the package pulls in neither
    # encodec nor torchaudio; import_encodec() then works even if torchaudio is broken, leaves no
    # stub behind, and encodec's audio file helpers fail with an error that names torchaudio
    code = (
        "import sys\n"
        "import lightning_cfgrl, lightning_cfgrl.embedders, lightning_cfgrl.training.diversity\n"
        "early = [m for m in sys.modules if m.split('.')[0] in ('encodec', 'torchaudio')]\n"
        "assert not early, early\n"
        "try:\n    import torchaudio; broken = False\nexcept Exception:\n    broken = True\n"
        "from lightning_cfgrl.adapters.encodec_import import import_encodec\n"
        "enc = import_encodec()\n"
        "assert enc.EncodecModel.__name__ == 'EncodecModel'\n"
        "ta = sys.modules.get('torchaudio')\n"
        "assert ta is None or not type(ta).__name__.startswith('_Torchaudio'), 'stub left in sys.modules'\n"
        "if broken:\n"
        "    import torch\n"
        "    try:\n        enc.utils.save_audio(torch.zeros(1, 10), 'x.wav', 1)\n    except ImportError as err:\n"
        "        assert 'torchaudio' in str(err)\n    else:\n        raise AssertionError('no ImportError')\n"
        "print('broken' if broken else 'real')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in ("broken", "real")


def test_encodec_embedder_decodes_and_embeds_in_batches() -> None:
    codec = _small_codec()
    embedder = EncodecAudioEmbedder(codec, batch_size=3)
    assert not any(p.requires_grad for p in embedder.parameters())
    torch.manual_seed(1)
    tokens = torch.randint(32, (7, 2, 32))
    wav = embedder.decode(tokens)
    assert wav.shape == (7, 1, 32 * 16)  # hop length 4 * 4
    out = embedder(tokens)
    assert out.shape == (7, 32)  # mean and std of the 16-d encoder latents
    whole = EncodecAudioEmbedder(codec, batch_size=None)(tokens)
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)  # chunking changes nothing
    # the same tokens sound the same; different tokens sound different
    torch.testing.assert_close(embedder(tokens[:1].repeat(2, 1, 1))[0], out[0], rtol=1e-5, atol=1e-5)
    # (an untrained codec's latents are dominated by its biases: differences are small, yet far above
    # the rounding noise that batching leaves)
    apart = torch.cdist(out, out) + torch.eye(7) * 1e9
    noise = float((out - whole).abs().max())
    assert float(apart.min()) > max(100 * noise, 1e-6 * float(out.norm(dim=-1).mean()))
    # a single codebook (the coarse one) is accepted too
    assert EncodecAudioEmbedder(codec, pooling="mean")(tokens[:, :1]).shape == (7, 16)


def test_encodec_embedder_errors() -> None:
    codec = _small_codec()
    with pytest.raises(ValueError, match="exactly one of codec"):
        EncodecAudioEmbedder()
    with pytest.raises(ValueError, match=r"1 <= K <= 2"):
        EncodecAudioEmbedder(codec)(torch.zeros(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 32\)"):
        EncodecAudioEmbedder(codec)(torch.full((2, 2, 8), 40))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_encodec("/nonexistent/encodec_24khz.th")
    from lightning_cfgrl.adapters.encodec_import import import_encodec

    untrained = import_encodec().EncodecModel(
        codec.encoder,
        codec.decoder,
        import_encodec().quantization.ResidualVectorQuantizer(dimension=16, n_q=2, bins=32),
        target_bandwidths=[1.0],
        sample_rate=SAMPLE_RATE,
        channels=1,
    )
    with pytest.raises(ValueError, match="codebooks are uninitialised"):
        EncodecAudioEmbedder(untrained)(torch.zeros(1, 2, 8, dtype=torch.long))


def test_encodec_checkpoint_is_loaded_weights_only(tmp_path) -> None:
    from lightning_cfgrl.adapters.encodec_import import import_encodec

    reference = import_encodec().EncodecModel.encodec_model_24khz(pretrained=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for buffer in reference.quantizer.buffers():
            buffer.copy_(torch.randn_like(buffer.float()).abs().to(buffer.dtype) + 1)  # "trained", inited
    torch.save(reference.state_dict(), tmp_path / "encodec_24khz.th")
    embedder = EncodecAudioEmbedder(checkpoint=str(tmp_path / "encodec_24khz.th"))
    for key, value in reference.state_dict().items():
        assert torch.equal(embedder.codec.state_dict()[key], value), key
    tokens = torch.randint(1024, (2, 2, 8))
    assert embedder(tokens).shape == (2, 256)
    torch.save(_small_codec().state_dict(), tmp_path / "small.th")
    with pytest.raises(ValueError, match="does not fit encodec_24khz"):
        load_encodec(str(tmp_path / "small.th"))
