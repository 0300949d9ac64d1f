"""PEFT (LoRA) students: a ``TokenGenerator`` wrapped by ``peft``, whose own base is the CFG teacher.

TRL's pattern, for distillation: only a few adapter weights are trained; the reference model (here the
frozen CFG teacher) is the same network with its adapters disabled (``with model.disable_adapter():``),
so it costs no second copy of the weights and nothing in a checkpoint. A checkpoint holds the adapter
weights plus a SHA-256 fingerprint of the frozen base; loading rebuilds the base from the generator's
spec (and ``init_checkpoint``), checks the fingerprint and adds the adapters.

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
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_cfgrl.audio.encodec_import import torchaudio_stub_if_broken
from lightning_cfgrl.core.eval_mode import eval_mode

_INSTALL_HINT = "pip install lightning-cfgrl[lora]"
ADAPTERS_KEY = (
    "cfgrl_adapters"  # checkpoint entry: {"base_sha256", "num_tensors"} of an adapter-only checkpoint
)


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


# ------------------------------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class AdapterLayout:
    """Which state-dict entries of a PEFT student are its adapter (trained and checkpointed) and the
    fingerprint of the rest (the frozen base, rebuilt rather than saved)."""

    keys: frozenset[str]
    base_sha256: str


def adapter_layout(model: nn.Module) -> AdapterLayout:
    """The trainable entries of ``model`` (the adapters peft left trainable) and the base's SHA-256."""
    from lightning_cfgrl.io.checkpoints import tensors_sha256

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
    from lightning_cfgrl.io.generators import load_init_checkpoint
    from lightning_cfgrl.io.specs import instantiate_spec

    generator = instantiate_spec(spec, f"the generator spec of {source}")
    if init_checkpoint is not None:
        load_init_checkpoint(generator, init_checkpoint)
    model = wrap_peft(generator, peft_config)
    layout = adapter_layout(model)
    check_adapter_state(set(state), layout, recorded, source)
    model.load_state_dict(dict(state), strict=recorded is None)
    return model.eval()


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold the adapters into dense weights and drop peft (``merge_and_unload``; changes ``model``):
    the returned plain generator computes what the PEFT student computed."""
    if not is_peft_model(model):
        return model
    return model.merge_and_unload()


__all__ = [
    "ADAPTERS_KEY",
    "AdapterDisabledTeacher",
    "AdapterLayout",
    "adapter_checkpoint",
    "adapter_layout",
    "build_peft_config",
    "check_adapter_state",
    "import_peft",
    "is_peft_model",
    "load_peft_generator",
    "merge_adapters",
    "peft_config_dict",
    "peft_config_of",
    "wrap_peft",
]
