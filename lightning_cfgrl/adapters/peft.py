"""PEFT (LoRA) students: a ``TokenGenerator`` wrapped by ``peft``, whose own base is the CFG teacher.

TRL's pattern, for distillation: only a few adapter weights are trained; the reference model (here the
frozen CFG teacher) is the same network with its adapters disabled (``with model.disable_adapter():``),
so it costs no second copy of the weights and nothing in a checkpoint. A checkpoint holds the adapter
weights plus a SHA-256 fingerprint of the frozen base (:mod:`lightning_cfgrl.io.adapter_checkpoints`);
loading rebuilds the base from the generator's spec (and ``init_checkpoint``), checks the fingerprint
and adds the adapters (:func:`lightning_cfgrl.io.generators.load_peft_generator`).

The wrapped model (``peft.PeftModel``) is still a ``TokenGenerator``: peft forwards attribute lookups
(``num_codebooks``, ``pattern``, ``null_condition``, ``new_cache``, ``spec``...) to the wrapped generator.

peft is imported on use only (``pip install lightning-cfgrl[lora]``), with the torchaudio workaround
(peft imports transformers, which imports torchaudio).
"""

from __future__ import annotations

import enum
import importlib
import sys
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from lightning_cfgrl.adapters.encodec_import import torchaudio_stub_if_broken
from lightning_cfgrl.core.eval_mode import eval_mode

_INSTALL_HINT = "pip install lightning-cfgrl[lora]"


def import_peft() -> Any:
    """The ``peft`` package (coping with a torchaudio that cannot load); ImportError naming the extra."""
    try:
        with torchaudio_stub_if_broken():
            return importlib.import_module("peft")
    except ImportError as err:
        raise ImportError(
            f"LoRA/PEFT students need the peft package ({err}); install it with `{_INSTALL_HINT}`"
        ) from err


def is_peft_model(module: Any) -> bool:
    """True for a ``peft.PeftModel`` (without importing peft when nothing imported it yet)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


def build_peft_config(config: Any) -> Any:
    """A ``peft.PeftConfig`` from itself or from a dict such as ``{"r": 8, "lora_alpha": 16,
    "target_modules": ["qkv", "proj"]}`` (``peft_type`` defaults to ``"LORA"``)."""
    peft = import_peft()
    if isinstance(config, peft.PeftConfig):
        return config
    if not isinstance(config, Mapping):
        raise TypeError(f"peft_config must be a dict or a peft.PeftConfig, got {type(config).__name__}")
    values = dict(config)
    peft_type = str(values.pop("peft_type", "LORA")).upper()
    mapping = peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING
    if peft_type not in mapping:
        raise ValueError(f"peft_config peft_type must be one of {sorted(mapping)}, got {peft_type!r}")
    cls = mapping[peft_type]
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"peft_config has keys {cls.__name__} does not know: {unknown}")
    return cls(**values)


def peft_config_dict(config: Any) -> dict[str, Any]:
    """The entries of a PEFT config that differ from their defaults, as plain YAML/JSON values
    (what checkpoints record as ``peft_config``; :func:`build_peft_config` rebuilds the config)."""
    config = build_peft_config(config)
    defaults = type(config)().to_dict()
    values = {"peft_type": _plain(config.peft_type)}
    for key, value in config.to_dict().items():
        if key in ("peft_type", "peft_version", "base_model_name_or_path", "revision"):
            continue
        if _plain(value) != _plain(defaults.get(key)):
            values[key] = _plain(value)
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def wrap_peft(generator: nn.Module, config: Any) -> nn.Module:
    """``peft.get_peft_model(generator, config)``: adapters on the target modules, everything else frozen."""
    peft = import_peft()
    if is_peft_model(generator):
        raise ValueError(
            "the generator is already wrapped by peft; pass peft_config=None to train its adapters"
        )
    config = build_peft_config(config)
    try:
        return peft.get_peft_model(generator, config)
    except ValueError as err:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, m in generator.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ValueError(
            f"peft could not wrap {type(generator).__name__} ({err}); target_modules name modules of the "
            f"generator, e.g. among its nn.Linear layers: {linear[:20]}"
        ) from err


def peft_config_of(model: nn.Module) -> Any:
    """The active adapter's config of a ``PeftModel`` (one adapter per student)."""
    names = list(model.peft_config)
    if len(names) != 1:
        raise ValueError(f"a PEFT student must carry exactly one adapter, got {names}")
    return model.peft_config[names[0]]


# ---------------------------------------------------------------------------------------------- teacher


class AdapterDisabledTeacher(nn.Module):
    """The frozen base as the CFG teacher at no memory cost: the student itself, run in eval mode with
    its adapters disabled, which gives exactly the base model's logits.

    It registers no parameters (the student is held outside the module tree), so moving or casting it
    is a no-op, it never reaches an optimizer, and its state dict is empty: checkpoints carry no teacher.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        if not is_peft_model(student):
            raise TypeError(
                f"AdapterDisabledTeacher needs a peft.PeftModel student, got {type(student).__name__}"
            )
        self._student = (student,)  # a tuple: not registered as a submodule

    @property
    def student(self) -> nn.Module:
        return self._student[0]

    @property
    def num_codebooks(self) -> int:
        return self.student.num_codebooks

    @property
    def vocab_size(self) -> int:
        return self.student.vocab_size

    @property
    def pattern(self) -> Any:
        return self.student.pattern

    def null_condition(self, condition: Any) -> Any:
        return self.student.null_condition(condition)

    def forward(self, steps: Tensor, condition: Any) -> Tensor:
        """``steps [B, K, S]`` -> the base's logits ``[B, K, S, V]``."""
        with self.student.disable_adapter(), eval_mode(self.student):
            return self.student(steps, condition)


# ---------------------------------------------------------------------------------------------- loading


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold the adapters into dense weights and drop peft (``merge_and_unload``; changes ``model``):
    the returned plain generator computes what the PEFT student computed."""
    if not is_peft_model(model):
        return model
    return model.merge_and_unload()


__all__ = [
    "AdapterDisabledTeacher",
    "build_peft_config",
    "import_peft",
    "is_peft_model",
    "merge_adapters",
    "peft_config_dict",
    "peft_config_of",
    "wrap_peft",
]
