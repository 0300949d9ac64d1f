"""``EncodecAudioEmbedder``: embed audio tokens by listening to them.

tokens ``[B, K, T]`` -> EnCodec quantizer + decoder -> waveform ``[B, C, L]`` -> frozen audio encoder
(default: the same EnCodec's encoder) -> latents ``[B, D, T']`` pooled over time -> ``[B, D]`` (or
``[B, 2D]`` with mean and std). Unlike a token-level embedder it compares what the tokens *sound like*.

encodec is imported lazily through :func:`lightning_cfgrl.adapters.encodec_import.import_encodec` (which copes
with a broken torchaudio), only when an embedder is built from a checkpoint or codebooks are initialised.
Nothing is downloaded: pass a constructed EnCodec model or a local checkpoint file.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from lightning_cfgrl.core.eval_mode import eval_mode


class EncodecAudioEmbedder(nn.Module):
    """``tokens [B, K, T]`` int64 EnCodec codes -> ``[B, D]`` pooled audio-encoder latents.

    Args:
        codec: an ``encodec.EncodecModel``, a transformers ``EncodecModel`` (e.g. MusicGen's own 32 kHz
            codec, ``musicgen.audio_encoder``), or any module with ``quantizer.decode(codes [K, B, T])``,
            ``decoder`` and ``encoder`` like them. Give exactly one of ``codec``, ``checkpoint``, ``pretrained``.
        checkpoint: a local EnCodec state dict file (e.g. ``encodec_24khz-d7cc33bc.th``), loaded with
            ``weights_only=True`` into ``EncodecModel.<model>(pretrained=False)``.
        model: which EnCodec architecture ``checkpoint`` holds.
        pretrained: a local transformers folder, EnCodec or MusicGen (its codec is used): how a YAML
            config gives MusicGen's codec to the diversity reward.
        audio_encoder: a frozen module ``wav [B, C, L] -> [B, D]`` or ``[B, D, T']`` (pooled over time);
            default the codec's own encoder.
        pooling: ``"mean"`` over time, or ``"mean_std"`` (concatenated mean and std: also captures how
            the sound changes over time).
        batch_size: decode/encode at most this many sequences at once (waveforms are long).
    """

    def __init__(
        self,
        codec: nn.Module | None = None,
        checkpoint: str | None = None,
        model: Literal["encodec_24khz", "encodec_48khz"] = "encodec_24khz",
        audio_encoder: nn.Module | None = None,
        pooling: Literal["mean", "mean_std"] = "mean_std",
        batch_size: int | None = 16,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if sum(x is not None for x in (codec, checkpoint, pretrained)) != 1:
            raise ValueError(
                "EncodecAudioEmbedder needs exactly one of codec (a constructed EnCodec model), checkpoint "
                "(a local EnCodec state dict file) or pretrained (a local transformers EnCodec/MusicGen folder); "
                f"nothing is downloaded. Got codec={type(codec).__name__}, checkpoint={checkpoint!r}, "
                f"pretrained={pretrained!r}"
            )
        if pooling not in ("mean", "mean_std"):
            raise ValueError(f"pooling must be 'mean' or 'mean_std', got {pooling!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if pretrained is not None:
            from lightning_cfgrl.adapters.hf_codec import load_transformers_codec

            codec = load_transformers_codec(pretrained)
        from lightning_cfgrl.adapters.hf_codec import as_encodec

        self.codec = as_encodec(codec) if codec is not None else load_encodec(checkpoint, model)
        for part in ("quantizer", "decoder"):
            if not hasattr(self.codec, part):
                raise TypeError(
                    f"codec must have .quantizer and .decoder like encodec.EncodecModel; "
                    f"{type(self.codec).__name__} has no .{part}"
                )
        if audio_encoder is None and not hasattr(self.codec, "encoder"):
            raise TypeError(f"codec {type(self.codec).__name__} has no .encoder; pass audio_encoder")
        self.audio_encoder = audio_encoder  # None: the codec's encoder, not registered twice
        self.pooling = pooling
        self.batch_size = batch_size
        self.requires_grad_(False)
        self.eval()

    @property
    def num_codebooks(self) -> int:
        return int(self.codec.quantizer.n_q)

    @property
    def codebook_size(self) -> int:
        return int(self.codec.quantizer.bins)

    def decode(self, tokens: Tensor) -> Tensor:
        """``[B, K, T]`` codes -> waveform ``[B, C, L]`` (K may be fewer than the codec's codebooks)."""
        self._check_tokens(tokens)
        if not codebooks_initialised(self.codec):
            raise ValueError(
                "the codec's codebooks are uninitialised (all zeros, every code sounds the same): "
                "load trained EnCodec weights or call init_codebooks(codec, audio) first"
            )
        latents = self.codec.quantizer.decode(rearrange(tokens, "b k t -> k b t"))  # [B, D, T]
        return self.codec.decoder(latents)

    def embed_audio(self, wav: Tensor) -> Tensor:
        """Waveform ``[B, C, L]`` -> ``[B, D]`` (or ``[B, 2D]`` with ``pooling="mean_std"``)."""
        encoder = self.audio_encoder if self.audio_encoder is not None else self.codec.encoder
        latents = encoder(wav).float()
        if latents.dim() == 2:
            return latents
        if latents.dim() != 3:
            raise ValueError(
                f"audio encoder must return [B, D] or [B, D, T'], got shape {tuple(latents.shape)}"
            )
        if self.pooling == "mean":
            return latents.mean(-1)
        return torch.cat([latents.mean(-1), latents.std(-1, correction=0)], dim=-1)

    @torch.no_grad()
    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, K, T]`` int64 -> ``[B, D]``, in chunks of ``batch_size`` sequences."""
        size = self.batch_size or max(tokens.shape[0], 1)
        return torch.cat([self.embed_audio(self.decode(chunk)) for chunk in tokens.split(size)])

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 3 or not 1 <= tokens.shape[1] <= self.num_codebooks:
            raise ValueError(
                f"tokens must be [B, K, T] codes with 1 <= K <= {self.num_codebooks} (the codec's "
                f"codebooks), got shape {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must be in [0, {self.codebook_size}) (the codec's codebook size), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )


def load_encodec(checkpoint: str | os.PathLike[str], model: str = "encodec_24khz") -> nn.Module:
    """``EncodecModel.<model>(pretrained=False)`` with weights from a local state dict file (eval mode)."""
    from lightning_cfgrl.adapters.encodec_import import ENCODEC_MODELS, build_encodec
    from lightning_cfgrl.io.checkpoints import load_checkpoint

    if model not in ENCODEC_MODELS:
        raise ValueError(f"model must be one of {sorted(ENCODEC_MODELS)}, got {model!r}")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"EnCodec checkpoint {str(checkpoint)!r} does not exist (nothing is downloaded)"
        )
    codec = build_encodec(model, pretrained=False)
    state = load_checkpoint(checkpoint, require_state_dict=False)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        codec.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"EnCodec checkpoint {str(checkpoint)!r} does not fit {model}: {err}") from err
    return codec.eval()


def codebooks_initialised(codec: nn.Module) -> bool:
    """False while any EnCodec codebook still waits for its k-means initialisation (``inited == 0``)."""
    return all(
        bool(m.inited.item()) for m in codec.modules() if isinstance(getattr(m, "inited", None), Tensor)
    )


@torch.no_grad()
def init_codebooks(codec: nn.Module, audio: Tensor) -> nn.Module:
    """Run k-means initialisation of an untrained EnCodec's codebooks on ``audio [B, C, L]``.

    ``EncodecModel(pretrained=False)`` starts with all-zero codebooks, and only the quantizer's own
    forward runs their k-means initialisation (``EncodecModel.forward`` uses ``encode``, which does
    not), so every code would decode to the same sound. Runs in eval mode (no EMA updates); returns
    ``codec``.
    """
    with eval_mode(codec):
        codec.quantizer(codec.encoder(audio), codec.frame_rate)
    return codec
