"""How a PEFT (LoRA) student is checkpointed: only its adapter weights plus a SHA-256 fingerprint of the
frozen base are saved (:func:`lightning_cfgrl.io.generators.load_peft_generator` rebuilds the base and
checks the fingerprint)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_cfgrl.io.checkpoints import tensors_sha256

ADAPTERS_KEY = (
    "cfgrl_adapters"  # checkpoint entry: {"base_sha256", "num_tensors"} of an adapter-only checkpoint
)


@dataclass(frozen=True)
class AdapterLayout:
    """Which state-dict entries of a PEFT student are its adapter (trained and checkpointed) and the
    fingerprint of the rest (the frozen base, rebuilt rather than saved)."""

    keys: frozenset[str]
    base_sha256: str


def adapter_layout(model: nn.Module) -> AdapterLayout:
    """The trainable entries of ``model`` (the adapters peft left trainable) and the base's SHA-256."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    if not trainable:
        raise ValueError(
            "the PEFT student has no trainable parameters; check the peft config's target_modules"
        )
    base = {k: v for k, v in state.items() if k not in trainable}
    return AdapterLayout(frozenset(trainable), tensors_sha256(base))


def adapter_checkpoint(checkpoint: dict[str, Any], layout: AdapterLayout, prefix: str) -> None:
    """Drop the frozen base from a Lightning checkpoint (in place): keep the adapter entries under
    ``prefix`` and every entry outside it, and record the base fingerprint under ``ADAPTERS_KEY``."""
    state = checkpoint["state_dict"]
    checkpoint["state_dict"] = {
        k: v for k, v in state.items() if not k.startswith(prefix) or k[len(prefix) :] in layout.keys
    }
    checkpoint[ADAPTERS_KEY] = {"base_sha256": layout.base_sha256, "num_tensors": len(layout.keys)}


def check_adapter_state(
    saved_keys: set[str], layout: AdapterLayout, recorded: Mapping[str, Any] | None, source: str
) -> None:
    """Raise ValueError unless ``saved_keys`` (generator keys of a checkpoint) fit this PEFT student:
    all adapter entries present, nothing unknown, and (for an adapter-only checkpoint) the same base."""
    missing = sorted(layout.keys - saved_keys)
    if missing:
        raise ValueError(
            f"{source} lacks {len(missing)} adapter tensor(s) of this PEFT student, e.g. {missing[:3]}; it was "
            "saved from another model or another peft_config"
        )
    if recorded is None:
        return  # a full state dict: the base comes from the checkpoint itself
    extra = sorted(saved_keys - layout.keys)
    if extra:
        raise ValueError(f"{source} holds tensors that are not adapters of this PEFT student: {extra[:3]}")
    if recorded.get("base_sha256") != layout.base_sha256:
        raise ValueError(
            f"{source} holds adapters trained on another base model: base sha256 "
            f"{str(recorded.get('base_sha256'))[:16]}... there, {layout.base_sha256[:16]}... here. The base is "
            "rebuilt from the generator spec and init_checkpoint: point them at the weights the adapters were "
            "trained on (a randomly initialised generator never matches)"
        )


__all__ = [
    "ADAPTERS_KEY",
    "AdapterLayout",
    "adapter_checkpoint",
    "adapter_layout",
    "check_adapter_state",
]
