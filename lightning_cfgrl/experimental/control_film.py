"""Control FiLM in every layer: the reference transformer whose controls also scale and shift the
normalised inputs of every block and of the final norm (the ``control_layers="every"`` option of
earlier versions of ``AudioTokenTransformer``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_cfgrl.core.controls import ControlEmbedding, Controls
from lightning_cfgrl.io.generators import load_generator_spec, load_generator_state
from lightning_cfgrl.io.specs import class_path_of, instantiate_spec
from lightning_cfgrl.models.kv_cache import KVCache, StaticStep
from lightning_cfgrl.models.options import FLAT_TO_OPTIONS, TransformerOptions
from lightning_cfgrl.models.transformer import AudioTokenTransformer, Block


class ControlFiLMTransformer(AudioTokenTransformer):
    """:class:`~lightning_cfgrl.models.AudioTokenTransformer` whose controls enter every layer.

    Besides the input :class:`~lightning_cfgrl.core.controls.ControlEmbedding`, a zero-initialised
    ``ControlEmbedding`` per block gives a per-sequence scale and shift of both of its normalised inputs
    (``norm(x) * (1 + s) + b``), and one more does so for the final norm, so a base checkpoint loaded with
    :func:`~lightning_cfgrl.core.controls.load_base_weights` still computes exactly the base's logits. On
    the built-in domains it did not beat controls at the input only (docs: the steerable student).

    Args: those of :class:`~lightning_cfgrl.models.AudioTokenTransformer`; ``options.controls`` must name
    at least one control.
    """

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        condition_sizes: Sequence[int] = (4, 4, 3),
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        max_frames: int = 64,
        options: TransformerOptions = TransformerOptions(),
    ) -> None:
        super().__init__(
            num_codebooks, vocab_size, condition_sizes, dim, num_layers, num_heads, max_frames, options
        )
        if not self.control_names:
            raise ValueError(
                "ControlFiLMTransformer needs options.controls=[...] (e.g. ['guidance_scale']): its FiLM "
                "is computed from the controls; without any, build an AudioTokenTransformer"
            )
        # built after the base and its input control embedding: the same random draws as before the move.
        # 4 D per block (scale and shift of norm1 and norm2), 2 D for the final norm.
        self.control_film = nn.ModuleList(
            [ControlEmbedding(self.control_names, 4 * dim) for _ in range(num_layers)]
            + [ControlEmbedding(self.control_names, 2 * dim)]
        )

    def _blocks(
        self, x: Tensor, cache: KVCache | StaticStep | None, controls: Controls | None, recompute: bool
    ) -> Tensor:
        if not controls:  # no controls: the base path
            return super()._blocks(x, cache, controls, recompute)
        for layer, block in enumerate(self.blocks):
            film = self.control_film[layer](controls)[:, None]  # [B, 1, 4 D]
            x = (
                checkpoint(film_block, block, x, None, layer, film, use_reentrant=False)
                if recompute
                else film_block(block, x, cache, layer, film)
            )
        return x

    def _final_norm(self, x: Tensor, controls: Controls | None) -> Tensor:
        if not controls:
            return self.norm(x)
        return modulate(self.norm(x), self.control_film[-1](controls)[:, None], 0)


def film_block(
    block: Block, x: Tensor, cache: KVCache | StaticStep | None, layer: int, film: Tensor
) -> Tensor:
    """``block(x, cache, layer)`` with ``film [B, 1, 4 D]``, per-sequence ``(scale1, shift1, scale2,
    shift2)``, applied to its two normalised inputs (zeros: exactly the block without)."""
    if block.training and block.dropout.p > 0:  # as Block.forward: no dropout call at p = 0 or in eval
        x = x + block.dropout(block.attn(modulate(block.norm1(x), film, 0), cache, layer))
        return x + block.dropout(block.mlp(modulate(block.norm2(x), film, 1)))
    x = x + block.attn(modulate(block.norm1(x), film, 0), cache, layer)
    return x + block.mlp(modulate(block.norm2(x), film, 1))


def modulate(h: Tensor, film: Tensor, index: int) -> Tensor:
    """FiLM: ``h * (1 + scale) + shift`` with the ``index``-th (scale, shift) pair of ``film [..., 2 n D]``."""
    dim = h.shape[-1]
    scale = film[..., 2 * index * dim : (2 * index + 1) * dim]
    shift = film[..., (2 * index + 1) * dim : (2 * index + 2) * dim]
    return torch.addcmul(shift, h, 1 + scale)


def upgrade_control_film_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of an ``AudioTokenTransformer`` recorded with ``control_layers="every"`` (before the
    option moved here) as a :class:`ControlFiLMTransformer` spec; the weights load unchanged."""
    init_args = dict(spec.get("init_args") or {})
    if init_args.pop("control_layers", None) != "every":
        raise ValueError(
            f"upgrade_control_film_spec expects a spec with control_layers='every', got {dict(spec)!r:.200}"
        )
    options = {key: init_args.pop(key) for key in FLAT_TO_OPTIONS if key in init_args}
    return {
        "class_path": class_path_of(ControlFiLMTransformer),
        "init_args": {**init_args, "options": TransformerOptions(**options).record()},
    }


def load_control_film_generator(path: str | Path) -> ControlFiLMTransformer:
    """The generator (eval mode) of a checkpoint written with ``AudioTokenTransformer(...,
    control_layers="every")`` before that option moved here: the same weights, the same outputs."""
    spec = load_generator_spec(path)
    if spec is None:
        raise ValueError(
            f"{path} records no generator spec; build the model and load_generator_state({path!r})"
        )
    generator = instantiate_spec(upgrade_control_film_spec(spec), f"the generator spec of checkpoint {path}")
    generator.load_state_dict(load_generator_state(path))
    return generator.eval()


__all__ = ["ControlFiLMTransformer", "load_control_film_generator", "upgrade_control_film_spec"]
