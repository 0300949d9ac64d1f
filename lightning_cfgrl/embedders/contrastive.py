"""``ContrastiveTokenEmbedder``: a small conv encoder over audio tokens, trained contrastively (the
paper's diversity embedder; training lives in :mod:`.contrastive_training`).

Summed per-codebook token embeddings ``[B, T, D]`` -> residual dilated 1-d convolutions -> mean over
time -> MLP projection ``[B, E]``. Mean pooling makes it length-agnostic: it is trained on short chunks
and applied to whole sequences.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from lightning_cfgrl.core.generator import class_spec
from lightning_cfgrl.io.checkpoints import (
    is_safetensors_file,
    load_checkpoint,
    load_safetensors,
    strip_prefix,
)
from lightning_cfgrl.io.provenance import file_source

QUALITY_KEY = "embedder_quality"  # checkpoint entry: {"heldout_triplet_accuracy", "global_step"}


class _ConvBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, dim)  # LayerNorm over channels and time; no batch statistics
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding="same", dilation=dilation)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.act(self.norm(x)))


class ContrastiveTokenEmbedder(nn.Module):
    """``tokens [B, K, T]`` int64 frames -> ``[B, embed_dim]`` (compare with cosine similarity).

    Args:
        num_codebooks: K.
        vocab_size: V ids per codebook (tokens must lie in ``[0, V)``).
        dim: channels of the conv stack.
        embed_dim: output size E.
        num_layers: residual conv blocks; block l has dilation ``2**l``.
        kernel_size: odd conv kernel size.
        checkpoint: trained weights to load: a Lightning checkpoint of
            :class:`~lightning_cfgrl.embedders.ContrastiveEmbedderModule` (``embedder.*`` keys), or a
            ``.safetensors``/``torch.save`` state dict of this module. When the checkpoint records the
            embedder's architecture, that architecture is used, so YAML needs only ``checkpoint``.
    """

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        dim: int = 96,
        embed_dim: int = 64,
        num_layers: int = 2,
        kernel_size: int = 5,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        state: dict[str, Tensor] | None = None
        # {"path", "sha256"} when every weight comes from a file: a DiversityRewardCallback then saves this
        # record instead of the weights (hashed before reading, so it never describes newer bytes)
        self.checkpoint_source: dict[str, str] | None = None
        # what the checkpoint recorded (chance 0.5); DiversityRewardCallback's gate reads it
        self.heldout_triplet_accuracy: float | None = None
        if checkpoint is not None:
            source = file_source(checkpoint) if os.path.isfile(checkpoint) else None
            state, spec = load_embedder_checkpoint(checkpoint)
            if spec is not None:
                given = dict(
                    num_codebooks=num_codebooks,
                    vocab_size=vocab_size,
                    dim=dim,
                    embed_dim=embed_dim,
                    num_layers=num_layers,
                    kernel_size=kernel_size,
                )
                arch = _architecture_from(spec, given, checkpoint)
                num_codebooks, vocab_size, dim = arch["num_codebooks"], arch["vocab_size"], arch["dim"]
                embed_dim, num_layers, kernel_size = (
                    arch["embed_dim"],
                    arch["num_layers"],
                    arch["kernel_size"],
                )
        for name, value in (
            ("num_codebooks", num_codebooks),
            ("vocab_size", vocab_size),
            ("dim", dim),
            ("embed_dim", embed_dim),
            ("num_layers", num_layers),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        self._init_args = dict(
            num_codebooks=num_codebooks,
            vocab_size=vocab_size,
            dim=dim,
            embed_dim=embed_dim,
            num_layers=num_layers,
            kernel_size=kernel_size,
        )
        self.num_codebooks, self.vocab_size = num_codebooks, vocab_size
        self.token_emb = nn.ModuleList(nn.Embedding(vocab_size, dim) for _ in range(num_codebooks))
        self.blocks = nn.Sequential(*(_ConvBlock(dim, kernel_size, 2**i) for i in range(num_layers)))
        self.norm = nn.GroupNorm(1, dim)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, embed_dim))
        if state is not None:
            try:
                self.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(
                    f"checkpoint {checkpoint!r} does not fit ContrastiveTokenEmbedder"
                    f"({self._init_args}): {err}"
                ) from err
            self.checkpoint_source = source
            self.heldout_triplet_accuracy = recorded_triplet_accuracy(checkpoint)

    def spec(self) -> dict[str, Any]:
        """``class_path``/``init_args`` that rebuild this architecture (recorded in checkpoints)."""
        return class_spec(self, self._init_args)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> ContrastiveTokenEmbedder:
        """Rebuild a trained embedder (architecture and weights) from a checkpoint, in eval mode."""
        return cls(checkpoint=str(path)).eval()

    @staticmethod
    def recorded_architecture(checkpoint: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The sizes ``ContrastiveTokenEmbedder(checkpoint=...)`` builds from that file (its recorded spec's
        ``init_args``), or None when the file records none (a state dict: the given sizes are used)."""
        _, spec = load_embedder_checkpoint(checkpoint)
        if spec is None:
            return None
        given = {k: v.default for k, v in inspect.signature(ContrastiveTokenEmbedder).parameters.items()}
        given.pop("checkpoint")
        return _architecture_from(spec, given, str(checkpoint))

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, K, T]`` int64 -> ``[B, embed_dim]``."""
        if tokens.dim() != 3 or tokens.shape[1] != self.num_codebooks:
            raise ValueError(
                f"tokens must be [B, {self.num_codebooks}, T] frames, got shape {tuple(tokens.shape)}"
            )
        if tokens.dtype != torch.long:
            raise ValueError(f"tokens must be int64 token ids, got dtype {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        x = sum(emb(tokens[:, k]) for k, emb in enumerate(self.token_emb))  # [B, T, D]
        x = self.norm(self.blocks(rearrange(x, "b t d -> b d t")))
        return self.proj(x.mean(dim=-1))


def recorded_triplet_accuracy(path: str | os.PathLike[str]) -> float | None:
    """The held-out triplet accuracy a ``ContrastiveEmbedderModule`` checkpoint recorded (chance 0.5), or None
    (a state dict, a safetensors file, or a checkpoint written before any validation)."""
    from lightning_cfgrl.io.checkpoints import is_safetensors_file, load_checkpoint

    if is_safetensors_file(path):
        return None
    ckpt = load_checkpoint(path, require_state_dict=False, mmap=True)
    record = ckpt.get(QUALITY_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(record, dict) or record.get("heldout_triplet_accuracy") is None:
        return None
    return float(record["heldout_triplet_accuracy"])


def load_embedder_checkpoint(
    path: str | os.PathLike[str], prefix: str = "embedder."
) -> tuple[dict[str, Tensor], dict | None]:
    """(state dict, recorded ``class_path``/``init_args`` spec or None) of a trained embedder.

    Reads a Lightning checkpoint (its ``state_dict`` entries under ``prefix``, its
    ``hyper_parameters["embedder"]`` spec), a ``.safetensors`` file or a plain ``torch.save`` state
    dict; never unpickles code (``weights_only`` loading).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedder checkpoint {str(path)!r} does not exist")
    if is_safetensors_file(path):
        return dict(load_safetensors(path, mmap=False)), None
    ckpt = load_checkpoint(path, require_state_dict=False)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        state = strip_prefix(ckpt["state_dict"], prefix)
        if not state:
            raise ValueError(
                f"checkpoint {str(path)!r} has no '{prefix}*' weights in its state_dict; expected a "
                "checkpoint of ContrastiveEmbedderModule"
            )
        spec = (ckpt.get("hyper_parameters") or {}).get("embedder")
        return state, dict(spec) if isinstance(spec, dict) and "init_args" in spec else None
    if isinstance(ckpt, dict) and all(isinstance(v, Tensor) for v in ckpt.values()):
        return ckpt, None
    raise ValueError(f"{str(path)!r} is neither a Lightning checkpoint nor a state dict of tensors")


def _architecture_from(spec: dict, given: dict[str, int], path: str) -> dict[str, int]:
    """The checkpoint's architecture; an explicitly different (non-default) given value is an error."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(ContrastiveTokenEmbedder).parameters.items()
        if name in given
    }
    recorded = {k: int(spec["init_args"].get(k, defaults[k])) for k in defaults}
    for key, value in given.items():
        if value != defaults[key] and value != recorded[key]:
            raise ValueError(
                f"{key}={value} was given, but checkpoint {path!r} holds an embedder with "
                f"{key}={recorded[key]}; omit it or pass the checkpoint's value"
            )
    return recorded
