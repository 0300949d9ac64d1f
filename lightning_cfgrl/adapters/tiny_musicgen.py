"""A tiny randomly initialised MusicGen, saved like a local copy of ``facebook/musicgen-small`` (model,
text tokenizer and processor): for trying every MusicGen path of ``cfgrl`` on a CPU in seconds, and for
the tests. Nothing downloads. Its outputs are noise: it is a plumbing model, not a musical one.

    python -c "from lightning_cfgrl.adapters import tiny_random_musicgen; tiny_random_musicgen('models/tiny-musicgen')"
    cfgrl tiny-musicgen --out models/tiny-musicgen        # the same, from the command line

Its text tokenizer is word-level over :data:`WORDS` (other words map to ``<unk>``), so prompts such as
``"calm piano"`` or ``"loud rock guitar"`` give distinct conditions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_cfgrl.adapters.musicgen import import_musicgen

V, TEXT_VOCAB = 16, 50
WORDS = "lo-fi piano rock guitar calm dark drums bass jazz techno ambient slow fast loud soft".split()


def tiny_config(hf: Any, num_codebooks: int = 2, channels: int = 1, sample_rate: int = 800) -> Any:
    """A MusicgenConfig (T5 + EnCodec + decoder sub-configs) of a few thousand parameters.

    EnCodec: hop 4 (``upsampling_ratios`` [2, 2]), ``num_quantizers = bandwidth * 1000 // (frame_rate * 4
    bits)`` = the decoder's codebooks per channel; ``sample_rate=32000`` gives MusicGen's codec rate.
    """
    text = hf.T5Config(
        vocab_size=TEXT_VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2
    )
    codec_codebooks = num_codebooks // channels
    frame_rate = sample_rate // 4
    audio = hf.EncodecConfig(
        hidden_size=8,
        num_filters=4,
        upsampling_ratios=[2, 2],
        codebook_size=V,
        codebook_dim=8,
        num_residual_layers=1,
        compress=1,
        sampling_rate=sample_rate,
        target_bandwidths=[frame_rate * 4 * codec_codebooks / 1000],
        audio_channels=1,
    )
    decoder = hf.MusicgenDecoderConfig(
        vocab_size=V,
        num_codebooks=num_codebooks,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=V,
        decoder_start_token_id=V,
        bos_token_id=V,
        audio_channels=channels,
        initializer_factor=20.0,
    )  # peaky logits: greedy paths differ with CFG
    # sub-configs as dicts: what both transformers 4.x and 5.x accept
    return hf.MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict()
    )


@torch.no_grad()
def randomise_codebooks(codec: torch.nn.Module, seed: int = 0, seconds: float = 0.05) -> torch.nn.Module:
    """A freshly built transformers EnCodec has all-zero codebooks (every code sounds the same). Give each
    residual codebook the encoder latents of random frames of noise, as k-means initialisation would
    (without its iterations), so codes vary with the audio."""
    g = torch.Generator().manual_seed(seed)
    config = codec.config
    wav = torch.randn(4, config.audio_channels, int(seconds * config.sampling_rate), generator=g)
    residual = codec.encoder(wav).transpose(1, 2).reshape(-1, config.codebook_dim)  # [frames, D]
    for layer in codec.quantizer.layers:
        embed = layer.codebook.embed
        embed.copy_(residual[torch.randint(0, len(residual), (embed.shape[0],), generator=g)])
        residual = residual - layer.codebook.decode(layer.codebook.encode(residual[None]))[0]
    return codec


def tiny_text_tokenizer() -> Any:
    """A word-level tokenizer over ``WORDS`` (ids < TEXT_VOCAB) that appends ``</s>`` like T5's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    assert len(vocab) <= TEXT_VOCAB
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny_musicgen(hf: Any, folder: str | Path, seed: int = 0, **config: Any) -> Path:
    """A tiny random MusicGen plus its text tokenizer and processor (``AutoProcessor`` loads the folder),
    saved like a local ``facebook/musicgen-small``; ``config``: :func:`tiny_config`'s keywords."""
    folder = Path(folder)
    torch.manual_seed(seed)
    model = hf.MusicgenForConditionalGeneration(tiny_config(hf, **config)).eval()
    randomise_codebooks(model.audio_encoder, seed)
    model.save_pretrained(folder)
    tokenizer = tiny_text_tokenizer()
    tokenizer.save_pretrained(folder)
    features = hf.EncodecFeatureExtractor(
        feature_size=1, sampling_rate=model.config.audio_encoder.sampling_rate
    )
    try:  # transformers 4.x's processor insists on a T5 tokenizer class: then tokenizer files only
        hf.MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
    except (TypeError, ValueError):
        features.save_pretrained(folder)
    return folder


def tiny_random_musicgen(
    folder: str | Path, seed: int = 0, num_codebooks: int = 2, stereo: bool = False, sample_rate: int = 800
) -> Path:
    """Write a tiny random MusicGen (a few thousand parameters: T5 text encoder, EnCodec with hop 4 and
    ``V = 16`` codes, a 2-layer decoder of ``num_codebooks`` codebooks) to ``folder`` and return it.

    ``MusicgenGenerator(folder)``, ``TextPromptDataModule(tokenizer=folder)``, ``AutoProcessor`` and
    ``MusicgenForConditionalGeneration.from_pretrained(folder)`` then all load it, as they would
    ``facebook/musicgen-small``. ``stereo``: two channels (``num_codebooks`` must be even).
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{str(folder)!r} exists and is not empty; choose a new folder")
    channels = 2 if stereo else 1
    if num_codebooks < channels or num_codebooks % channels:
        raise ValueError(f"num_codebooks must be a positive multiple of {channels}, got {num_codebooks}")
    hf = import_musicgen()
    return save_tiny_musicgen(
        hf, folder, seed, num_codebooks=num_codebooks, channels=channels, sample_rate=sample_rate
    )


__all__ = ["TEXT_VOCAB", "V", "WORDS", "save_tiny_musicgen", "tiny_config", "tiny_random_musicgen"]
