"""No public entry point takes more than 8 parameters: settings are grouped in typed objects
(``RolloutConfig``, ``SamplingConfig``, ``QualityBudget``, ...), which LightningCLI YAML nests and
``--help`` documents field by field.

Walks every class and function exported by ``lightning_cfgrl`` and its subpackages' ``__init__`` (the
``cfgrl`` command's entry points are exported by ``lightning_cfgrl.cli``) and counts the parameters of
each function and of each class's own ``__init__`` (``self``, ``*args`` and ``**kwargs`` not counted).
Not counted: dataclasses (a settings or record object *is* the grouping: its fields are the settings,
as in TRL's ``*Config`` classes) and classes whose ``__init__`` is inherited from outside the package
(``CFGRLCLI`` takes LightningCLI's arguments).

``OVER_LIMIT`` lists the entry points not grouped yet, with their count: a new one, or one that grows,
fails; one that is fixed must leave the list (so it only shrinks).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import lightning_cfgrl

LIMIT = 8

# Not grouped yet (count of parameters). Each is a candidate for a settings object of its own.
OVER_LIMIT: dict[str, int] = {}


def _packages() -> list[str]:
    subpackages = pkgutil.iter_modules(lightning_cfgrl.__path__)
    return ["lightning_cfgrl"] + sorted(f"lightning_cfgrl.{m.name}" for m in subpackages if m.ispkg)


def _counted_signature(obj: object) -> inspect.Signature | None:
    """The signature whose parameters count, or None for an object this test does not count."""
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            return None
        init = obj.__dict__.get("__init__") or next(
            (c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__), None
        )
        if init is None or not getattr(init, "__module__", "").startswith("lightning_cfgrl"):
            return None
        return inspect.signature(init)
    if inspect.isfunction(obj):
        return inspect.signature(obj)
    return None


def parameter_counts() -> dict[str, int]:
    """``{"module.qualname": number of parameters}`` of every public class and function."""
    out: dict[str, int] = {}
    for package in _packages():
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            signature = _counted_signature(obj)
            if signature is None:
                continue
            params = [
                p
                for p in signature.parameters.values()
                if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            out[f"{obj.__module__}.{obj.__qualname__}"] = len(params)
    return out


def test_the_walk_finds_the_entry_points() -> None:
    counts = parameter_counts()
    for name in ("CFGRLModule", "PretrainModule", "generate", "sample", "merge_state_dicts", "main"):
        assert any(key.endswith(f".{name}") for key in counts), name
    assert counts["lightning_cfgrl.training.module.CFGRLModule"] <= LIMIT


def test_no_public_entry_point_takes_more_than_8_parameters() -> None:
    counts = parameter_counts()
    over = {name: n for name, n in counts.items() if n > LIMIT}
    new = {name: n for name, n in over.items() if name not in OVER_LIMIT}
    grown = {name: (OVER_LIMIT[name], n) for name, n in over.items() if n > OVER_LIMIT.get(name, n)}
    fixed = sorted(set(OVER_LIMIT) - set(over))
    assert not new, f"{new}: more than {LIMIT} parameters; group them in a settings dataclass"
    assert not grown, f"{grown}: (listed, now) parameters; group them instead of adding more"
    assert not fixed, f"{fixed} take at most {LIMIT} parameters now: remove them from OVER_LIMIT"


@pytest.mark.parametrize("group", ["rollout", "optimization", "validation"])
def test_cfgrl_module_settings_are_typed_dataclasses_with_documented_fields(group: str) -> None:
    """LightningCLI nests them in YAML and ``--help`` renders each field's doc (from the class's Args)."""
    import docstring_parser

    from lightning_cfgrl.training.configs import GROUPS

    cls = GROUPS[group]
    assert dataclasses.is_dataclass(cls)
    documented = {p.arg_name for p in docstring_parser.parse(cls.__doc__).params}
    for field in dataclasses.fields(cls):
        assert field.type, field.name
        assert field.name in documented, f"{cls.__name__}.{field.name} has no doc"


@pytest.mark.parametrize(
    "path",
    [
        "lightning_cfgrl.training.prompts.PromptSplit",
        "lightning_cfgrl.callbacks.audio_logger.LoggedClips",
        "lightning_cfgrl.callbacks.audio_logger.LogSchedule",
        "lightning_cfgrl.audio.datamodule.AudioCrops",
        "lightning_cfgrl.audio.datamodule.FileSplit",
        "lightning_cfgrl.audio.tokenizer.EncodecWeights",
    ],
)
def test_audio_and_prompt_settings_are_frozen_dataclasses_with_documented_fields(path: str) -> None:
    import docstring_parser

    module, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    documented = {p.arg_name for p in docstring_parser.parse(cls.__doc__).params}
    for field in dataclasses.fields(cls):
        assert field.name in documented, f"{cls.__name__}.{field.name} has no doc"
    cls()  # every field has a default: a config states only what differs


@pytest.mark.parametrize("name", ["TeacherConfig", "DiversityGradientConfig", "FrozenModelConfig"])
def test_objective_settings_are_typed_dataclasses_with_documented_fields(name: str) -> None:
    """The objective callbacks' groups (``teacher``, ``gradient``, ``embedding``), as the module's."""
    import docstring_parser

    cls = getattr(lightning_cfgrl, name)
    assert dataclasses.is_dataclass(cls)
    documented = {p.arg_name for p in docstring_parser.parse(cls.__doc__).params}
    for field in dataclasses.fields(cls):
        assert field.type, field.name
        assert field.name in documented, f"{cls.__name__}.{field.name} has no doc"
