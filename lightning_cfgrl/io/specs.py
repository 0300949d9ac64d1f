"""Specs: how a checkpoint records the classes that rebuild its generator (and embedder), and the
check that a ``class_path`` read from a file (or a YAML ``dict`` field) can never call arbitrary code.

A spec is ``{"class_path": "pkg.mod.Class", "init_args": {...}}``. Where a module's spec comes from, in
order: its own ``spec()`` method (:func:`lightning_cfgrl.core.generator.class_spec` formats one); the
dict it was built from by :func:`instantiate_spec`; the ``class_path``/``init_args`` LightningCLI built it
from (YAML). Without any of these a checkpoint holds the weights only, and the module warns at
construction. Live objects are never pickled into checkpoints.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn

from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.models.options import upgrade_init_args
from lightning_cfgrl.models.transformer import AudioTokenTransformer

# A spec may import modules of this package that are not loaded yet (the MusicGen adapter is lazy);
# their import has no side effects. Any other module must already be imported: importing runs the
# module's top-level code (``antigravity`` opens a browser, some ``__main__`` modules run programs),
# so a file must not be able to make Python import a new one.
TRUSTED_PACKAGE = "lightning_cfgrl"
# Where our LightningModules record their own class in a checkpoint (LightningCLI runs also record it
# as hyper_parameters["_class_path"]; runs from Python do not).
MODULE_CLASS_KEY = "cfgrl_module_class"
# modules the user trusted explicitly (``cfgrl --import MODULE``, ``CFGRL_IMPORT``, :func:`trust_modules`):
# they and their submodules may be imported by a spec. Only the user's own command line adds names here,
# never a file.
_TRUSTED_MODULES: set[str] = set()
# objects built by instantiate_spec -> the spec they were built from (weak: never keeps a model alive)
_BUILT_FROM: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


class UnsafeSpecError(ValueError):
    """A ``class_path`` spec names something other than an ``nn.Module`` subclass, or a module that
    is not imported; it was refused before anything in it was called."""


def trust_modules(names: Iterable[str]) -> None:
    """Let specs name classes of ``names`` and their submodules (the user's own, trusted modules; the CLI's
    ``--import``). Called with names the user typed, never with names read from a file."""
    _TRUSTED_MODULES.update(str(name) for name in names)


def trusted_modules() -> frozenset[str]:
    """The module names :func:`trust_modules` added (``cfgrl --import``)."""
    return frozenset(_TRUSTED_MODULES)


def _is_trusted(module_name: str) -> bool:
    if module_name.endswith("__main__"):
        return False
    roots = (TRUSTED_PACKAGE, *_TRUSTED_MODULES)
    return any(module_name == root or module_name.startswith(root + ".") for root in roots)


def resolve_module_class(class_path: Any, source: str = "a spec") -> type[nn.Module]:
    """The ``nn.Module`` subclass that ``class_path`` ("pkg.mod.Class") names, checked before any call.

    Refuses (:class:`UnsafeSpecError`, naming ``source`` and the class path) anything that is not an
    ``nn.Module`` subclass (``os.system``, ``builtins.eval``, ``subprocess.Popen``) and any module that is
    not imported yet unless it belongs to this package or to a module the user trusted explicitly
    (:func:`trust_modules`, ``cfgrl --import``): importing it would run its top-level code.
    """
    if not isinstance(class_path, str) or "." not in class_path:
        raise UnsafeSpecError(f"class_path in {source} must be 'package.module.Class', got {class_path!r}")
    module_name, _, attr = class_path.rpartition(".")
    if module_name not in sys.modules and not _is_trusted(module_name):
        raise UnsafeSpecError(f"refused class_path {class_path!r} in {source}: {_not_imported(module_name)}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UnsafeSpecError(
            f"class_path {class_path!r} in {source} cannot be imported ({err}); expected 'package.module.Class'"
        ) from err
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UnsafeSpecError(
            f"refused class_path {class_path!r} in {source}: it is a {type(obj).__name__}, not an nn.Module "
            "subclass, and a spec may only build models; nothing was called"
        )
    return obj


def check_spec(spec: Any, source: str = "a spec") -> None:
    """Raise :class:`UnsafeSpecError` unless ``spec`` is a ``class_path``/``init_args`` mapping whose
    class is allowed (see :func:`resolve_module_class`). Nothing is instantiated."""
    if not isinstance(spec, Mapping):
        raise UnsafeSpecError(
            f"{source} must be a mapping with a 'class_path' entry, got {type(spec).__name__}"
        )
    if "class_path" not in spec:
        raise UnsafeSpecError(f"{source} needs a 'class_path' entry, got keys {sorted(map(str, spec))}")
    if not isinstance(spec.get("init_args") or {}, Mapping):
        raise UnsafeSpecError(f"init_args in {source} must be a mapping, got {spec['init_args']!r}")
    resolve_module_class(spec["class_path"], source)


def instantiate_spec(spec: Mapping[str, Any], source: str = "a spec") -> nn.Module:
    """Build ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (how checkpoints record a generator
    or an embedder), after checking that the class is an allowed ``nn.Module`` subclass; ``source``
    names where the spec came from in errors (a file, a config field). Init args that are specs
    themselves (the module a ``ModuleAdapter`` wraps) are checked and built first, as LightningCLI does."""
    check_spec(spec, source)
    check_no_imports(spec, source)  # a spec nested at any depth of its init_args too
    spec = upgrade_spec(spec)
    init_args = {
        name: instantiate_spec(value, f"{source} (init_args.{name})")
        if isinstance(value, Mapping) and "class_path" in value
        else value
        for name, value in dict(spec.get("init_args") or {}).items()
    }
    obj = resolve_module_class(spec["class_path"], source)(**init_args)
    _BUILT_FROM[obj] = {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}
    return obj


def upgrade_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` in today's layout, where an earlier version recorded it otherwise: the init_args of an
    :class:`~lightning_cfgrl.models.AudioTokenTransformer` (or a subclass) that hold ``dropout``,
    ``delays``, ``gradient_checkpointing``, ``controls`` flat get them grouped under ``options``
    (:func:`lightning_cfgrl.models.options.upgrade_init_args`, the one conversion); nested specs too.
    Other specs, and classes that are neither this package's nor imported, are returned as they are
    (never imports a module outside this package)."""
    out = dict(spec)
    init_args = out.get("init_args")
    if not isinstance(init_args, Mapping):
        return out
    init_args = {
        name: upgrade_spec(value) if isinstance(value, Mapping) and "class_path" in value else value
        for name, value in init_args.items()
    }
    cls = _known_class(out.get("class_path"))
    if cls is not None and issubclass(cls, AudioTokenTransformer):
        accepted = tuple(inspect.signature(cls.__init__).parameters)
        init_args = upgrade_init_args(init_args, accepted)
    out["init_args"] = init_args
    return out


def _known_class(class_path: Any) -> type | None:
    """The class ``class_path`` names: this package's (imported if needed), or one already imported."""
    if isinstance(class_path, str) and class_path.startswith(TRUSTED_PACKAGE + "."):
        try:
            return resolve_module_class(class_path)
        except UnsafeSpecError:
            return None
    return imported_class(class_path)


# Values jsonargparse imports when it rebuilds hyperparameters: a ``class_path`` anywhere, and a dotted
# string given to a callable-typed argument (the optimizer and scheduler callables, Lightning's
# ``_instantiator``). Other strings are data (a path like "base.ckpt" is not an import).
IMPORTED_KEYS = ("class_path", "optimizer", "scheduler", "_instantiator", "_class_path")


def check_no_imports(value: Any, source: str, where: str = "") -> None:
    """Walk every mapping and list in ``value`` (stored hyperparameters, ``init_args``, ``dict_kwargs``, at
    any depth) and raise :class:`UnsafeSpecError` for a name that would make Python import a module not
    imported yet (outside this package). Nothing is imported or instantiated."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in IMPORTED_KEYS and isinstance(item, str) and "." in item:
                _check_importless(item, f"{path} of {source}")
            check_no_imports(item, source, path)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_no_imports(item, source, f"{where}[{index}]")


def _check_importless(name: str, source: str) -> None:
    """``name`` ("pkg.mod.attr") must resolve from modules already imported, or this package's."""
    module_name, _, attr = name.rpartition(".")
    if _is_trusted(module_name):  # this package, or a module the user trusted (cfgrl --import)
        return
    module = sys.modules.get(module_name)
    # ``import_module`` / jsonargparse's ``__import__(module, fromlist=[attr])`` import nothing new only
    # when the module is loaded and already has the attribute (else the attribute may be a submodule)
    if module is not None and hasattr(module, attr):
        return
    raise UnsafeSpecError(f"refused {name!r} at {source}: {_not_imported(module_name)}")


def _not_imported(module_name: str) -> str:
    """The one refusal text for a name whose module is not imported, naming the ways to trust it."""
    return (
        f"its module {module_name!r} is not imported, and nothing named in a file may import a new module "
        f"(importing runs its code); if you trust it, pass `--import {module_name}` to cfgrl (or set "
        f"CFGRL_IMPORT={module_name}; from Python, `import {module_name}` before loading)"
    )


# hyperparameters that our modules rebuild with instantiate_spec: they must name nn.Module classes
MODEL_SPEC_KEYS = ("generator", "embedder")


def check_hparam_specs(hparams: Mapping[str, Any], source: str) -> None:
    """Check a checkpoint's hyperparameters before Lightning or jsonargparse can instantiate anything:
    the generator and embedder specs must name ``nn.Module`` classes, and no
    name anywhere may import a new module (:func:`check_no_imports`). Nothing is instantiated."""
    check_no_imports(hparams, source)
    for name in MODEL_SPEC_KEYS:
        value = hparams.get(name)
        if isinstance(value, Mapping) and "class_path" in value:
            check_spec(value, f"the {name} spec of {source}")


def class_path_of(cls: type) -> str:
    """``"package.module.Class"`` of a class (what checkpoints record)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def imported_class(class_path: Any) -> type | None:
    """The class ``class_path`` names if its module is already imported, else None (never imports)."""
    if not isinstance(class_path, str):
        return None
    module_name, _, attr = class_path.rpartition(".")
    obj = getattr(sys.modules.get(module_name), attr, None)
    return obj if isinstance(obj, type) else None


def check_module_class(recorded: Any, expected: type, source: str) -> None:
    """Refuse a checkpoint written by another LightningModule class than ``expected``.

    ``recorded`` is the class path the checkpoint names (None: it names none, nothing to check). Classes
    related by inheritance are accepted (a subclass that only changes seeding resumes its base).
    """
    if recorded is None:
        return
    cls = imported_class(recorded)
    if cls is not None and (issubclass(cls, expected) or issubclass(expected, cls)):
        return
    raise ValueError(
        f"{source} is a checkpoint of {recorded}, not of {class_path_of(expected)}; resume a checkpoint "
        "written by the same module class (to start from another model's generator weights, pass it as "
        "init_checkpoint instead)"
    )


def recorded_module_class(checkpoint: Mapping[str, Any]) -> Any:
    """The class path of the LightningModule that wrote ``checkpoint``, or None when it records none."""
    hparams = checkpoint.get("hyper_parameters")
    from_cli = hparams.get("_class_path") if isinstance(hparams, Mapping) else None
    return checkpoint.get(MODULE_CLASS_KEY) or from_cli


def check_checkpoint_file(
    path: str | os.PathLike[str], expected: type | None, source: str
) -> Mapping[str, Any] | None:
    """Before a module is built from the checkpoint at ``path``: refuse it if another module class than
    ``expected`` wrote it, or if a generator/embedder spec in its hyperparameters is not allowed. The
    file is read weights-only and memory-mapped; nothing in it is instantiated. Returns its
    hyperparameters (None if it records none)."""
    ckpt = load_checkpoint(path, mmap=True, require_state_dict=False)
    if not isinstance(ckpt, Mapping):
        return None  # not a Lightning checkpoint: Lightning's own loader reports that
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, Mapping):
        check_hparam_specs(hparams, source)
    if expected is not None:
        check_module_class(recorded_module_class(ckpt), expected, source)
    return hparams if isinstance(hparams, Mapping) else None


def spec_of(obj: Any, given: Any = None) -> tuple[dict[str, Any] | None, str]:
    """``(spec, "")`` for the spec that rebuilds ``obj``, or ``(None, why not)``.

    ``given``: the config LightningCLI built ``obj`` from, if any (used when ``obj`` has no ``spec()``).
    """
    name = type(obj).__name__
    reason = (
        f"{name} has no spec() method; give it one returning "
        "lightning_cfgrl.core.generator.class_spec(self, {its constructor arguments})"
    )
    method = getattr(obj, "spec", None)
    if callable(method):
        try:
            spec = method()
        except ValueError as err:
            spec, reason = None, f"{name}.spec() cannot record it: {err}"
        if isinstance(spec, Mapping) and "class_path" in spec:
            return dict(spec), ""
        if spec is not None:
            reason = f"{name}.spec() returned {spec!r:.80}, not a {{'class_path', 'init_args'}} dict"
    if obj in _BUILT_FROM:
        return dict(_BUILT_FROM[obj]), ""
    if isinstance(given, Mapping) and "class_path" in given:
        return {"class_path": given["class_path"], "init_args": dict(given.get("init_args") or {})}, ""
    return None, reason


def is_config(value: Any) -> bool:
    """True for plain config values (what LightningCLI records), False for live objects."""
    if isinstance(value, (nn.Module, torch.optim.Optimizer)) or callable(value):
        return False
    if isinstance(value, (list, tuple)):
        return all(is_config(v) for v in value)
    return True


def save_safe_hyperparameters(module: Any, objects: Mapping[str, Any]) -> None:
    """``save_hyperparameters`` minus live objects; a live ``nn.Module`` is recorded as its spec (see
    :func:`spec_of`), so ``load_from_checkpoint`` rebuilds it and ``weights_only`` loading never meets a
    pickled module. A ``"generator"`` without a spec gets a warning now, not a failure at reload."""
    given = _cli_given_hyperparameters()
    live = [name for name, value in objects.items() if not is_config(value)]
    module.save_hyperparameters(ignore=live, frame=_caller_frame())
    for name in live:
        if not isinstance(objects[name], nn.Module):
            continue
        spec, reason = spec_of(objects[name], given.get(name))
        if spec is not None:
            module.hparams[name] = spec
        elif name == "generator":
            rank_zero_warn(
                f"{type(module).__name__}: checkpoints will hold the generator's weights but not how to build "
                f"it, so load_generator, load_from_checkpoint, merged checkpoints and evaluation cannot rebuild "
                f"it: {reason}. (Or build the generator from a {{'class_path', 'init_args'}} dict, as YAML "
                "configs do.)",
                category=UserWarning,
            )


def _cli_given_hyperparameters() -> dict[str, Any]:
    """The config LightningCLI is instantiating the module from (``{}`` outside LightningCLI)."""
    try:  # a private Lightning hook, so only an optional source of specs
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:
        return {}
    given = _given_hyperparameters.get()
    return dict(given) if isinstance(given, Mapping) else {}


def _caller_frame() -> Any:
    return inspect.currentframe().f_back.f_back
