"""Rebuild a generator from a checkpoint: its recorded ``class_path`` spec plus its weights."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lightning_cfgrl.io.checkpoints import is_safetensors_file, load_checkpoint, load_generator_state
from lightning_cfgrl.io.specs import instantiate_spec

__all__ = ["load_generator", "load_generator_spec", "load_generator_state"]


def load_generator_spec(path: str | Path) -> dict | None:
    """The ``class_path``/``init_args`` spec a Lightning checkpoint recorded for its generator, if any."""
    if is_safetensors_file(path):
        return None
    spec = load_checkpoint(path).get("hyper_parameters", {}).get("generator")
    return dict(spec) if isinstance(spec, dict) and "class_path" in spec else None


def load_generator(path: str | Path) -> nn.Module:
    """A ready generator (eval mode) from a ``CFGRLModule``/``PretrainModule`` checkpoint (weights_only)."""
    spec = load_generator_spec(path)
    if spec is None:
        raise ValueError(
            f"{path} records no generator spec; build the model yourself and load_generator_state({path!r})"
        )
    generator = instantiate_spec(spec, f"the generator spec of checkpoint {path}")
    generator.load_state_dict(load_generator_state(path))
    return generator.eval()
