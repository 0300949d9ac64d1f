"""The options of :class:`~lightning_cfgrl.models.transformer.AudioTokenTransformer` beyond its size, and
the conversion of the specs that recorded them flat.

The size (``num_codebooks``, ``vocab_size``, ``condition_sizes``, ``dim``, ``num_layers``, ``num_heads``,
``max_frames``) stays flat, since every config sets it; what a config sets only sometimes is grouped in
:class:`TransformerOptions`, so YAML nests it and ``--help`` documents each field::

    generator:
      class_path: lightning_cfgrl.models.AudioTokenTransformer
      init_args:
        {num_codebooks: 2, vocab_size: 32, condition_sizes: [4, 4, 3], dim: 64, num_layers: 2, num_heads: 4,
         max_frames: 32, options: {controls: [guidance_scale, diversity_weight]}}

Checkpoints written before the grouping recorded ``dropout``, ``delays``, ``gradient_checkpointing``,
``controls`` (and ``control_layers``) flat in the generator's ``init_args``; :func:`upgrade_init_args`
moves them into ``options`` wherever a generator spec is read (``lightning_cfgrl.io.specs.upgrade_spec``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Where control FiLM in every layer (the old ``control_layers="every"``) lives now: it did not help
# (docs/_results/steerable.md), so it left the library. A string, never imported from here.
CONTROL_FILM_CLASS = "lightning_cfgrl.experimental.control_film.ControlFiLMTransformer"


@dataclass(frozen=True)
class TransformerOptions:
    """What the reference transformer's size does not fix. The defaults build the plain MusicGen-style
    model.

    Args:
        dropout: residual dropout in every block (0: none; sampling runs in eval mode either way).
        delays: per-codebook delays; None: ``(0, 1, ..., K-1)`` (MusicGen's delay pattern).
        gradient_checkpointing: in training forwards with grad, keep only each block's input and
            recompute the block in backward (less activation memory for one extra forward).
        controls: control inputs the model accepts, e.g. ``["guidance_scale", "diversity_weight"]``: a
            zero-initialised :class:`~lightning_cfgrl.core.controls.ControlEmbedding` added to every input
            position (the condition prefix and the tokens), so a base checkpoint loaded with
            :func:`~lightning_cfgrl.core.controls.load_base_weights` computes exactly the base's logits.
            The other parameters are initialised exactly as without controls (same seed, same weights).
    """

    dropout: float = 0.0
    delays: Sequence[int] | None = None
    gradient_checkpointing: bool = False
    controls: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"options.dropout must be a number in [0, 1], got {self.dropout!r}")
        if not (math.isfinite(self.dropout) and 0.0 <= self.dropout <= 1.0):
            raise ValueError(f"options.dropout must be in [0, 1] (a probability), got {self.dropout}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise TypeError(
                f"options.gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}"
            )
        if isinstance(self.controls, str):
            raise TypeError(
                f"options.controls must be a list of control names, got the string {self.controls!r} "
                f"(write [{self.controls}])"
            )

    def record(self) -> dict[str, Any]:
        """The plain dict a checkpoint's spec records: ``controls`` only when set, so a base model's spec
        is the same with or without the control-aware code."""
        out: dict[str, Any] = {
            "dropout": self.dropout,
            "delays": list(self.delays) if self.delays is not None else None,
            "gradient_checkpointing": self.gradient_checkpointing,
        }
        if self.controls:
            out["controls"] = list(self.controls)
        return out


# the flat AudioTokenTransformer arguments (before the grouping) that moved into ``options``
FLAT_TO_OPTIONS = ("dropout", "delays", "gradient_checkpointing", "controls")


def upgrade_init_args(init_args: Mapping[str, Any], accepted: Sequence[str]) -> dict[str, Any]:
    """A transformer spec's ``init_args`` in today's layout: flat ``dropout``, ``delays``,
    ``gradient_checkpointing``, ``controls`` (a checkpoint from before the grouping) moved into
    ``options``, unless the class takes them itself (``accepted``: its constructor's parameter names);
    ``control_layers="input"`` (the old default) dropped. ``control_layers="every"`` raises: that model is
    :data:`CONTROL_FILM_CLASS` now, and the library does not import it."""
    out = dict(init_args)
    layers = out.get("control_layers") if "control_layers" not in accepted else None
    if layers == "every":
        raise ValueError(
            "this generator spec records control_layers='every' (control FiLM in every layer), which "
            f"left the library for the experimental {CONTROL_FILM_CLASS}; rebuild the checkpoint's "
            "generator with it: lightning_cfgrl.experimental.load_control_film_generator(path)"
        )
    if "control_layers" not in accepted:
        out.pop("control_layers", None)  # "input" (the old default) or absent: nothing to carry
    flat = {key: out.pop(key) for key in FLAT_TO_OPTIONS if key in out and key not in accepted}
    if flat:
        options = dict(out.get("options") or {})
        out["options"] = {**TransformerOptions(**flat).record(), **options}
    return out


__all__ = ["FLAT_TO_OPTIONS", "TransformerOptions", "upgrade_init_args"]
