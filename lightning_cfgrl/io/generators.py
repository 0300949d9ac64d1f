"""Rebuild a generator from a checkpoint: its recorded ``class_path`` spec plus its weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lightning_cfgrl.adapters.peft import merge_adapters as merge
from lightning_cfgrl.adapters.peft import wrap_peft
from lightning_cfgrl.core.controls import load_base_weights
from lightning_cfgrl.io.adapter_checkpoints import ADAPTERS_KEY, adapter_layout, check_adapter_state
from lightning_cfgrl.io.checkpoints import (
    is_safetensors_file,
    load_checkpoint,
    load_generator_state,
    resolve_stored_path,
    strip_prefix,
)
from lightning_cfgrl.io.specs import check_hparam_specs, instantiate_spec

__all__ = [
    "is_pretrained_folder",
    "load_generator",
    "load_generator_spec",
    "load_generator_state",
    "load_init_checkpoint",
    "load_peft_generator",
    "load_pretrained_folder",
]

# transformers model types a pretrained folder may hold (config.json "model_type") -> their adapter
PRETRAINED_TYPES = {"musicgen": "MusicgenGenerator"}


def is_pretrained_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a transformers ``config.json`` (a ``save_pretrained`` folder)."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_pretrained_folder(path: str | Path) -> nn.Module:
    """The generator of a local transformers folder (``save_pretrained``, e.g. ``facebook/musicgen-small``
    or a ``cfgrl export`` output), eval mode. Its ``config.json`` is read as data; no code runs from it."""
    import json

    folder = Path(path)
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{str(folder)!r}: cannot read config.json as a transformers config ({err})"
        ) from err
    if model_type not in PRETRAINED_TYPES:
        raise ValueError(
            f"{str(folder)!r} holds a transformers model of type {model_type!r}; the folders a candidate or a "
            f"checkpoint may be are {sorted(PRETRAINED_TYPES)} (else give a Lightning .ckpt)"
        )
    from lightning_cfgrl.adapters.musicgen import MusicgenGenerator

    return MusicgenGenerator(str(folder)).eval()


def load_generator_spec(path: str | Path, role: str = "checkpoint") -> dict | None:
    """The ``class_path``/``init_args`` spec a Lightning checkpoint recorded for its generator, if any;
    ``role`` names the file in refusals (``"teacher.checkpoint"``)."""
    if is_safetensors_file(path):
        return None
    hparams = load_checkpoint(path).get("hyper_parameters", {})
    if isinstance(hparams, dict):  # every entry point that rebuilds from a file comes through here
        check_hparam_specs(hparams, f"{role} {path}")
    spec = hparams.get("generator") if isinstance(hparams, dict) else None
    return dict(spec) if isinstance(spec, dict) and "class_path" in spec else None


def load_init_checkpoint(generator: nn.Module, path: str | Path) -> None:
    """Load a checkpoint's (or safetensors file's) generator weights into ``generator``; a mismatch is a
    ValueError naming the file."""
    try:  # a base checkpoint also loads into a control-aware model (its control embedding stays zero)
        load_base_weights(generator, load_generator_state(path))
    except RuntimeError as err:  # torch's size-mismatch report, with the file named
        raise ValueError(f"init_checkpoint {str(path)!r} does not fit the generator: {err}") from err


def load_generator(path: str | Path, merge_adapters: bool = False) -> nn.Module:
    """A ready generator (eval mode) from a ``CFGRLModule``/``PretrainModule`` checkpoint (weights_only).

    A LoRA/PEFT checkpoint (``peft_config`` in its hyperparameters) holds only adapters: the base is
    rebuilt from the spec and ``init_checkpoint`` and checked against the recorded fingerprint; the result
    is the ``peft.PeftModel``, or with ``merge_adapters`` a plain generator with the adapters folded in.
    """
    spec = load_generator_spec(path)
    if spec is None:
        raise ValueError(
            f"{path} records no generator spec; build the model yourself and load_generator_state({path!r})"
        )
    ckpt = load_checkpoint(path, mmap=True)
    hparams = ckpt.get("hyper_parameters", {})
    if hparams.get("peft_config") is not None:
        model = load_peft_generator(
            spec,
            hparams["peft_config"],
            strip_prefix(ckpt["state_dict"], "generator."),
            ckpt.get(ADAPTERS_KEY),
            # a stored path is data: resolved beside the checkpoint, a regular file only
            resolve_stored_path(hparams["init_checkpoint"], path, "init_checkpoint")
            if isinstance(hparams.get("init_checkpoint"), str)
            else None,
            source=str(path),
        )
        _check_finite(model, path)
        return merge(model).eval() if merge_adapters else model
    generator = instantiate_spec(spec, f"the generator spec of checkpoint {path}")
    generator.load_state_dict(load_generator_state(path))
    _check_finite(generator, path)
    return generator.eval()


def load_peft_generator(
    spec: Mapping[str, Any],
    peft_config: Any,
    state: Mapping[str, Tensor],
    recorded: Mapping[str, Any] | None,
    init_checkpoint: str | None = None,
    source: str = "the checkpoint",
) -> nn.Module:
    """Rebuild a PEFT student: base from ``spec`` (+ ``init_checkpoint``), adapters from ``state``.

    ``state`` holds the generator's entries (keys without the ``generator.`` prefix); ``recorded`` is the
    checkpoint's ``ADAPTERS_KEY`` entry (None for a checkpoint that saved the whole model).
    """
    generator = instantiate_spec(spec, f"the generator spec of {source}")
    if init_checkpoint is not None:
        load_init_checkpoint(generator, init_checkpoint)
    model = wrap_peft(generator, peft_config)
    layout = adapter_layout(model)
    check_adapter_state(set(state), layout, recorded, source)
    model.load_state_dict(dict(state), strict=recorded is None)
    return model.eval()


def _check_finite(generator: nn.Module, path: str | Path) -> None:
    """NaN in is an error out: generate, evaluate and export refuse a checkpoint with non-finite weights."""
    from lightning_cfgrl.core.finite import check_finite_weights

    try:
        check_finite_weights(generator, f"in checkpoint {path}")
    except FloatingPointError as err:
        raise ValueError(f"{err}; it cannot be sampled (resume from an earlier checkpoint)") from None
