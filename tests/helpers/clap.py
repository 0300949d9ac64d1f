"""A tiny randomly initialised CLAP (``ClapModel`` + tokenizer + feature extractor) saved like a local copy of
``laion/clap-htsat-unfused``, built in the tests (nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.musicgen import tiny_text_tokenizer

CLAP_RATE = 8000


def save_tiny_clap(folder: Path, seed: int = 0) -> Path:
    """~10k parameters: a 1-layer text tower over the tiny word vocabulary, a 2-stage HTSAT audio tower on
    16 mel bins of 1 s clips at 8 kHz, 8-dim joint space."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    torch.manual_seed(seed)
    text = ClapTextConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        projection_dim=8,
    )
    audio = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=16,
        patch_size=4,
        patch_stride=[4, 4],
        hidden_size=16,  # = patch_embeds_hidden_size * 2 ** (len(depths) - 1)
        patch_embeds_hidden_size=8,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        projection_dim=8,
        enable_fusion=False,
        num_classes=4,
    )
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)
    ClapModel(config).eval().save_pretrained(folder)
    tiny_text_tokenizer().save_pretrained(folder)
    ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=CLAP_RATE,
        hop_length=160,
        max_length_s=1,
        fft_window_size=256,
        frequency_max=CLAP_RATE // 2,
        truncation="rand_trunc",
        padding="repeatpad",
    ).save_pretrained(folder)
    return folder
