"""CLAP (contrastive language-audio pretraining) from a local transformers ``ClapModel`` folder: text and
audio embeddings in one space, a text-adherence reward, and the prompt texts of a batch.

Nothing is downloaded: ``model`` is a folder such as a local copy of ``laion/clap-htsat-unfused``
(``ClapModel`` weights, tokenizer files and ``preprocessor_config.json``). Audio is resampled to the
feature extractor's rate, averaged to mono and cut to its first ``max_length_s`` seconds here, so the
feature extractor never crops at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_cfgrl.core.condition import Condition


class ClapEncoder:
    """A frozen ``ClapModel`` with its tokenizer and feature extractor.

    Args:
        model: a local folder with ``ClapModel`` weights, tokenizer and feature-extractor files.
        device: where the model runs (``RewardCallback`` moves it with the module via :meth:`to`).
        batch_size: audio clips embedded per forward pass.
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"CLAP model folder {model!r} has no config.json; expected a local transformers ClapModel folder "
                "(e.g. `hf download laion/clap-htsat-unfused --local-dir clap`), nothing is downloaded here"
            )
        try:
            from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel
        except ImportError as err:
            raise ImportError(
                f"CLAP needs the transformers package ({err}); install it with `pip install lightning-cfgrl[musicgen]`"
            ) from err

        self.model = (
            ClapModel.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.features = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        self.source = str(folder)
        self.batch_size = batch_size
        self.to(device)

    @property
    def sample_rate(self) -> int:
        return int(self.features.sampling_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> ClapEncoder:
        self.model.to(device)
        return self

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """``P`` strings -> ``[P, D]`` unit-norm float32 embeddings."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        return _unit(self.model.get_text_features(**batch))

    @torch.no_grad()
    def embed_audio(self, wav: Tensor, sample_rate: int) -> Tensor:
        """Waveforms ``[N, C, L]`` at ``sample_rate`` -> ``[N, D]`` unit-norm float32 embeddings."""
        from lightning_cfgrl.io.audio import resample

        if wav.dim() != 3:
            raise ValueError(f"wav must be [N, C, L], got shape {tuple(wav.shape)}")
        mono = resample(wav.float().mean(1).cpu(), int(sample_rate), self.sample_rate)
        mono = mono[:, : int(self.features.nb_max_samples)]  # the extractor would crop at random
        out = []
        for chunk in mono.split(self.batch_size):
            batch = self.features(list(chunk.numpy()), sampling_rate=self.sample_rate, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out.append(_unit(self.model.get_audio_features(**batch)))
        return torch.cat(out)


def _unit(output: Any) -> Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x a tensor
    features = output if isinstance(output, Tensor) else output.pooler_output
    return F.normalize(features.float(), dim=-1)


def prompt_texts(condition: Condition, tokenizer: Any = None) -> list[str]:
    """The text of each prompt of a text condition ``{"input_ids": [N, L], ...}``, decoded with the
    generator's own text ``tokenizer`` (an object or a local folder, e.g. the MusicGen folder)."""
    if not isinstance(condition, dict) or "input_ids" not in condition:
        raise ValueError(
            "the prompt texts are unknown: the condition is not tokenised text ({'input_ids': ...}); give the "
            "datamodule a describe_prompt(condition) method, or use text prompts"
        )
    if tokenizer is None:
        raise ValueError(
            "decoding the prompts' input_ids needs the generator's text tokenizer: pass prompt_tokenizer= the "
            "model folder it was tokenised with (e.g. the MusicGen folder)"
        )
    if isinstance(tokenizer, (str, Path)):
        from lightning_cfgrl.audio.text_prompts import load_text_tokenizer

        tokenizer = load_text_tokenizer(str(tokenizer))
    ids = condition["input_ids"].reshape(-1, condition["input_ids"].shape[-1])
    mask = condition.get("attention_mask")
    if mask is not None:  # the null prompt is an all-zero mask, whatever its ids
        ids = ids.masked_fill(mask.reshape(ids.shape) == 0, tokenizer.pad_token_id or 0)
    return [t.strip() for t in tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)]


class ClapTextReward:
    """Per-sample reward ``cos(CLAP text embedding of the prompt, CLAP audio embedding of the sample)``
    in [-1, 1]: how well the decoded sample matches its text prompt. For ``RewardCallback``::

        rewards:
          - function: lightning_cfgrl.audio.clap.ClapTextReward
            args: {model: /models/clap-htsat-unfused, prompt_tokenizer: /models/musicgen-small}

    The prompt text comes from the datamodule's ``describe_prompt`` when it has one, else from the
    condition's ``input_ids`` decoded with ``prompt_tokenizer``.

    Args:
        model: a local ``ClapModel`` folder (:class:`ClapEncoder`).
        prompt_tokenizer: the generator's text tokenizer (folder) for text conditions.
        batch_size: audio clips embedded per forward pass.
    """

    needs_audio = True
    needs_texts = True
    name = "clap_text"

    def __init__(self, model: str, prompt_tokenizer: str | None = None, batch_size: int = 16) -> None:
        self.encoder = ClapEncoder(model, batch_size=batch_size)
        self.prompt_tokenizer = None if prompt_tokenizer is None else _load_tokenizer(prompt_tokenizer)

    def to(self, device: torch.device | str) -> ClapTextReward:
        self.encoder.to(device)
        return self

    def __call__(self, inputs: Any) -> Tensor:
        """``RewardInputs`` (per sample, with audio) -> ``[N]`` cosine similarities."""
        if inputs.audio is None:
            raise ValueError("ClapTextReward needs decoded audio: RewardCallback decodes it with its decoder")
        texts = (
            inputs.texts
            if inputs.texts is not None
            else prompt_texts(inputs.condition, self.prompt_tokenizer)
        )
        return text_audio_similarity(self.encoder, texts, inputs.audio, inputs.sample_rate)


def text_audio_similarity(
    encoder: ClapEncoder, texts: Sequence[str], audio: Tensor, sample_rate: int
) -> Tensor:
    """``[N]`` cosine of each clip ``[N, C, L]`` with its text; each distinct text is embedded once."""
    unique = list(dict.fromkeys(texts))
    text = encoder.embed_text(unique)[[unique.index(t) for t in texts]]
    return (text * encoder.embed_audio(audio, sample_rate).to(text.device)).sum(-1).cpu()


def _load_tokenizer(source: str) -> Any:
    from lightning_cfgrl.audio.text_prompts import load_text_tokenizer

    return load_text_tokenizer(source)


__all__ = ["ClapEncoder", "ClapTextReward", "prompt_texts", "text_audio_similarity"]
