"""Audio metrics with local weights, as scorers for ``cfgrl evaluate``: Fréchet Audio Distance (FAD) to a
reference set, and CLAP text adherence.

Both decode the sampled tokens ``[N, K, T]`` with a ``decoder`` (``decode`` and ``sample_rate``: an
``EncodecTokenizer(weights=EncodecWeights(pretrained=<MusicGen folder>))``, a ``SyntheticSynth``, ...) and embed the audio with a
local model; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from lightning_cfgrl.core.condition import Condition
from lightning_cfgrl.eval.frechet import frechet_distance, gaussian_stats
from lightning_cfgrl.eval.scorers import Scorer

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@runtime_checkable
class AudioFeatures(Protocol):
    """Waveforms ``[N, C, L]`` at ``sample_rate`` -> ``[N, D]`` embeddings (``ClapEncoder``, ``EncodecFeatures``)."""

    def embed_audio(self, wav: Tensor, sample_rate: int) -> Tensor: ...


class EncodecFeatures:
    """EnCodec's encoder latents, pooled over time (``EncodecAudioEmbedder``), as FAD embeddings of audio
    at any sample rate (resampled to the codec's rate and channels).

    Args:
        pretrained: a local transformers EnCodec or MusicGen folder (its codec is used).
        pooling: ``"mean"`` or ``"mean_std"`` over time.
    """

    def __init__(self, pretrained: str, pooling: str = "mean") -> None:
        from lightning_cfgrl.embedders.encodec_audio import EncodecAudioEmbedder

        self.embedder = EncodecAudioEmbedder(pretrained=pretrained, pooling=pooling)

    @torch.no_grad()
    def embed_audio(self, wav: Tensor, sample_rate: int) -> Tensor:
        from lightning_cfgrl.io.audio import convert_channels, resample

        codec = self.embedder.codec
        wav = convert_channels(
            resample(wav.float(), int(sample_rate), int(codec.sample_rate)), codec.channels
        )
        return self.embedder.embed_audio(wav).float()


def _decode(decoder: Any, frames: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([decoder.decode(chunk).float().cpu() for chunk in frames.split(batch_size)])


def _check_decoder(decoder: Any) -> None:
    if not (callable(getattr(decoder, "decode", None)) and hasattr(decoder, "sample_rate")):
        raise TypeError(
            f"decoder must have .decode(tokens) and .sample_rate (e.g. EncodecTokenizer(weights=EncodecWeights(pretrained=<MusicGen "
            f"folder>)), got {type(decoder).__name__}"
        )


def reference_files(reference: str | list[str]) -> list[Path]:
    """A folder (its audio files, sorted, recursively) or a list of audio files."""
    if isinstance(reference, str):
        folder = Path(reference)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"FAD reference {reference!r} is not a folder; expected a folder of audio files "
                f"({', '.join(AUDIO_SUFFIXES)}) or a list of files"
            )
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    else:
        files = [Path(f) for f in reference]
    if len(files) < 2:
        raise ValueError(
            f"FAD reference {reference!r} holds {len(files)} audio file(s); a covariance needs >= 2 "
            "(FAD is only meaningful with hundreds)"
        )
    return files


class FrechetAudioDistance(Scorer):
    """FAD of each seed's generated set to a reference set: ``d^2`` of Gaussians fitted to the embeddings
    (:func:`~lightning_cfgrl.eval.frechet.frechet_distance`). Lower is better.

    FAD is a property of a set, not of a sample: every sample of a call gets the set's value, so
    ``cfgrl evaluate`` reports its mean over seeds with a standard error across seeds. FAD is biased
    upwards for small sets (it falls as N grows), so compare candidates at equal prompts x samples.

    Args:
        reference: a folder of audio files (or a list of files): the real audio to compare with.
        embedder: audio -> embeddings (``ClapEncoder`` of a local CLAP folder, or ``EncodecFeatures``).
        decoder: tokens -> audio (``decode`` and ``sample_rate``).
        name: the metric's name.
        batch_size: sequences decoded at once.
    """

    higher_is_better = False
    chance = None

    def __init__(
        self,
        reference: str | list[str],
        embedder: AudioFeatures,
        decoder: Any,
        name: str = "fad",
        batch_size: int = 16,
    ) -> None:
        if not callable(getattr(embedder, "embed_audio", None)):
            raise TypeError(
                f"embedder must have .embed_audio(wav, sample_rate) (ClapEncoder, EncodecFeatures), got "
                f"{type(embedder).__name__}"
            )
        _check_decoder(decoder)
        self.files = reference_files(reference)
        self.embedder, self.decoder, self.name, self.batch_size = embedder, decoder, name, batch_size
        self._reference: tuple[Tensor, Tensor] | None = None

    def reference_stats(self) -> tuple[Tensor, Tensor]:
        """(mean, covariance) of the reference embeddings, computed once."""
        if self._reference is None:
            from lightning_cfgrl.io.audio import read_audio

            embeddings = []
            for path in self.files:  # one at a time: reference clips differ in length and rate
                wav, rate = read_audio(path)
                embeddings.append(self.embedder.embed_audio(wav[None], rate).double().cpu())
            self._reference = gaussian_stats(torch.cat(embeddings))
        return self._reference

    def __call__(self, frames: Tensor, condition: Condition) -> Tensor:
        if frames.shape[0] < 2:
            raise ValueError(f"FAD needs >= 2 generated samples, got {frames.shape[0]}")
        audio = _decode(self.decoder, frames, self.batch_size)
        mu, sigma = gaussian_stats(self.embedder.embed_audio(audio, int(self.decoder.sample_rate)).cpu())
        distance = frechet_distance(mu, sigma, *self.reference_stats())
        return distance.expand(frames.shape[0]).float()


class ClapTextAdherence(Scorer):
    """Per sample ``cos(CLAP text embedding of the prompt, CLAP audio embedding of the sample)``.

    The prompts are text conditions (``{"input_ids", "attention_mask"}``), decoded with
    ``prompt_tokenizer`` (the generator's own, e.g. the MusicGen folder) before CLAP's tokenizer reads them.
    No chance level is known (unrelated text and audio need not score 0): give ``cfgrl evaluate`` a
    ``reference`` when this is its quality axis.

    Args:
        model: a local ``ClapModel`` folder.
        decoder: tokens -> audio (``decode`` and ``sample_rate``).
        prompt_tokenizer: the folder of the generator's text tokenizer.
        name: the metric's name.
        batch_size: sequences decoded and embedded at once.
    """

    higher_is_better = True
    chance = None

    def __init__(
        self, model: str, decoder: Any, prompt_tokenizer: str, name: str = "clap_text", batch_size: int = 16
    ) -> None:
        from lightning_cfgrl.audio.clap import ClapEncoder
        from lightning_cfgrl.audio.text_prompts import load_text_tokenizer

        _check_decoder(decoder)
        self.encoder = ClapEncoder(model, batch_size=batch_size)
        self.tokenizer = load_text_tokenizer(prompt_tokenizer)
        self.decoder, self.name, self.batch_size = decoder, name, batch_size

    def __call__(self, frames: Tensor, condition: Condition) -> Tensor:
        from lightning_cfgrl.audio.clap import prompt_texts, text_audio_similarity

        texts = prompt_texts(condition, self.tokenizer)
        audio = _decode(self.decoder, frames, self.batch_size)
        return text_audio_similarity(self.encoder, texts, audio, int(self.decoder.sample_rate)).float()


__all__ = ["AudioFeatures", "ClapTextAdherence", "EncodecFeatures", "FrechetAudioDistance"]
