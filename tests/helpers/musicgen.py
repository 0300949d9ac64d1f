"""Tiny randomly initialised MusicGen models for the tests (nothing downloads): the library's builder,
:mod:`lightning_cfgrl.adapters.tiny_musicgen`, under the names the tests import."""

from lightning_cfgrl.adapters.tiny_musicgen import (  # noqa: F401
    TEXT_VOCAB,
    WORDS,
    V,
    randomise_codebooks,
    save_tiny_musicgen,
    tiny_config,
    tiny_random_musicgen,
    tiny_text_tokenizer,
)
