"""Merging LoRA/PEFT students: interpolate the weight *deltas*, in dense weight space, never the factors.

A LoRA layer computes ``W0 + s B A``. Two students of one base merged at lam must compute
``W0 + (1 - lam) s1 B1 A1 + lam s2 B2 A2``, the LERP of the two dense models; interpolating the factors,
``((1 - lam) B1 + lam B2)((1 - lam) A1 + lam A2)``, is a different (bilinear) weight. So each LoRA source is
seen as the dense state dict of its merged model (:class:`DenseWeights`: ``W0 + delta`` computed per key
on access, with peft's own ``get_delta_weight``) and merged by the ordinary streamed LERP/SLERP. Two LoRA
sources with the same base and config share one rebuilt base (a second adapter on the same model), so
memory stays about one model plus a tensor, and the output is a plain dense generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_cfgrl.io.checkpoints import (
    GENERATOR_PREFIX,
    is_safetensors_file,
    load_checkpoint,
    load_generator_state,
    strip_prefix,
)
from lightning_cfgrl.merging.streaming import MergeError

SECOND_ADAPTER = "merge_source"


class DenseWeights(Mapping[str, Tensor]):
    """A PEFT model seen as the state dict of the plain generator its adapter would merge into.

    ``weights[key]`` is computed on access (CPU, detached): ``W0 + delta`` for an adapted weight, the
    stored tensor otherwise (``modules_to_save`` copies of the adapter replace their originals). Keys and
    values equal what ``merge_and_unload()`` would leave, without changing the model.
    """

    def __init__(self, model: nn.Module, adapter: str = "default") -> None:
        self._entries = _dense_entries(model, adapter)

    def __getitem__(self, key: str) -> Tensor:
        entry = self._entries[key]
        value = entry() if callable(entry) else entry
        return value.detach().cpu()

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _dense_entries(model: nn.Module, adapter: str) -> dict[str, Tensor | Callable[[], Tensor]]:
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    entries: dict[str, Tensor | Callable[[], Tensor]] = {}

    def own(module: nn.Module, prefix: str) -> dict[str, Tensor]:
        found: dict[str, Tensor] = {}
        module._save_to_state_dict(found, prefix, keep_vars=False)  # own parameters + persistent buffers
        return found

    def visit(module: nn.Module, prefix: str) -> None:
        if isinstance(module, BaseTunerLayer):
            if not isinstance(module, LoraLayer):
                raise MergeError(
                    f"only LoRA adapters merge as weight deltas; {prefix[:-1]} is {type(module).__name__}"
                )
            if adapter in getattr(module, "use_dora", {}) and module.use_dora[adapter]:
                raise MergeError(
                    f"{prefix[:-1]} uses DoRA, whose merged weight is not W0 + delta; merge it densely"
                )
            if getattr(module, "lora_bias", {}).get(adapter, False):
                raise MergeError(f"{prefix[:-1]} has a LoRA bias; only weight deltas are merged")
            base = module.get_base_layer()
            for key, tensor in base.state_dict().items():
                if key == "weight" and adapter in module.lora_A.keys() | module.lora_embedding_A.keys():
                    entries[prefix + key] = _delta_adder(tensor, module, adapter)
                else:
                    entries[prefix + key] = tensor
            return
        if isinstance(module, ModulesToSaveWrapper):
            chosen = (
                module.modules_to_save[adapter]
                if adapter in module.modules_to_save
                else module.original_module
            )
            entries.update({prefix + k: v for k, v in chosen.state_dict().items()})
            return
        entries.update(own(module, prefix))
        for name, child in module._modules.items():
            if child is not None:
                visit(child, f"{prefix}{name}.")

    visit(model.get_base_model(), "")
    return entries


def _delta_adder(weight: Tensor, layer: nn.Module, adapter: str) -> Callable[[], Tensor]:
    def dense() -> Tensor:
        with torch.no_grad():
            return weight + layer.get_delta_weight(adapter)  # what merge_and_unload computes, out of place

    return dense


# ------------------------------------------------------------------------------------------- sources


def is_peft_checkpoint(path: str) -> bool:
    """Whether ``path`` is a Lightning checkpoint of a LoRA/PEFT student (adapters only); False for
    anything else, a missing file included (its loader reports that)."""
    if not Path(path).is_file() or is_safetensors_file(path):
        return False
    return load_checkpoint(path, mmap=True).get("hyper_parameters", {}).get("peft_config") is not None


def open_dense_sources(paths: Mapping[str, str]) -> dict[str, Mapping[str, Tensor]]:
    """Each checkpoint as a dense generator state dict: plain ones as stored (lazily mapped), LoRA ones
    as :class:`DenseWeights` of their rebuilt base + adapters. LoRA sources with the same peft config and
    base share one rebuilt model (each further one is a second adapter on it)."""
    from lightning_cfgrl.adapters.peft import build_peft_config, peft_config_of
    from lightning_cfgrl.io.adapter_checkpoints import ADAPTERS_KEY
    from lightning_cfgrl.io.generators import load_generator_spec, load_peft_generator

    out: dict[str, Mapping[str, Tensor]] = {}
    shared: tuple[nn.Module, dict, str] | None = None  # (model, peft config dict, base sha256)
    for name, path in paths.items():
        if not is_peft_checkpoint(path):
            out[name] = load_generator_state(path, GENERATOR_PREFIX)
            continue
        ckpt = load_checkpoint(path, mmap=True)
        hparams, recorded = ckpt["hyper_parameters"], ckpt.get(ADAPTERS_KEY) or {}
        state = strip_prefix(ckpt["state_dict"], GENERATOR_PREFIX)
        if (
            shared is not None
            and shared[1] == hparams["peft_config"]
            and shared[2] == recorded.get("base_sha256")
        ):
            model = shared[0]
            _add_adapter(model, build_peft_config(hparams["peft_config"]), state, path)
            out[name] = DenseWeights(model, SECOND_ADAPTER)
            continue
        spec = load_generator_spec(path)
        if spec is None:
            raise MergeError(
                f"{path} is a LoRA checkpoint without a generator spec; its base cannot be rebuilt"
            )
        model = load_peft_generator(
            spec, hparams["peft_config"], state, ckpt.get(ADAPTERS_KEY), hparams.get("init_checkpoint"), path
        )
        peft_config_of(model)  # exactly one adapter
        if shared is None:
            shared = (model, hparams["peft_config"], recorded.get("base_sha256"))
        out[name] = DenseWeights(model, "default")
    return out


def _add_adapter(model: nn.Module, config: Any, state: Mapping[str, Tensor], path: str) -> None:
    """Load ``state`` (keys of the ``default`` adapter) as a second adapter of ``model``."""
    if SECOND_ADAPTER in model.peft_config:
        raise MergeError("at most two LoRA sources share one base")
    before = set(model.state_dict())
    model.add_adapter(SECOND_ADAPTER, config)
    added = set(model.state_dict()) - before
    renamed = {_rename(key, "default", SECOND_ADAPTER): value for key, value in state.items()}
    if set(renamed) != added:
        diff = sorted(set(renamed).symmetric_difference(added))
        raise MergeError(
            f"{path}: its adapter tensors do not fit a second adapter of the same config: {diff[:3]}"
        )
    model.load_state_dict(renamed, strict=False)


def _rename(key: str, old: str, new: str) -> str:
    return ".".join(new if part == old else part for part in key.split("."))


def dense_template(checkpoint: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """A Lightning checkpoint template for a dense merge of LoRA students: ``checkpoint`` without its
    adapters, its peft config and its adapter record, with placeholders for the dense generator ``keys``
    (:func:`~lightning_cfgrl.merging.streaming.merged_checkpoint` fills them in)."""
    from lightning_cfgrl.io.adapter_checkpoints import ADAPTERS_KEY

    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(GENERATOR_PREFIX)}
    state.update({GENERATOR_PREFIX + key: None for key in keys})
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k != "peft_config"}
    template = {k: v for k, v in checkpoint.items() if k != ADAPTERS_KEY}
    return {**template, "state_dict": state, "hyper_parameters": hparams}


__all__ = ["DenseWeights", "dense_template", "is_peft_checkpoint", "open_dense_sources"]
