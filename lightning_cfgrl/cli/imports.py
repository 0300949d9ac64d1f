"""``cfgrl --import MODULE`` and ``CFGRL_IMPORT``: the user's own trusted modules, imported before anything
is read.

A checkpoint or a YAML ``class_path`` may only name classes of modules that are already imported (or of
this package): a file must never make Python import, and so run, a new module. A model of your own
(``gru_lm.ConditionalGRU``) is trusted by saying so on the command line, for every ``cfgrl`` command::

    cfgrl generate --import gru_lm --checkpoint runs/distill/checkpoints/last.ckpt ...
    cfgrl evaluate --import examples/own_model/gru_lm.py --config my_eval.yaml
    CFGRL_IMPORT=gru_lm,my_scorers cfgrl evaluate --config my_eval.yaml

``MODULE`` is a dotted module name found on ``PYTHONPATH`` (or in the current folder), or the path of a
``.py`` file (its folder joins ``sys.path``, its stem is the module name). The module and its submodules
are then trusted (:func:`lightning_cfgrl.io.specs.trust_modules`); names read from files never are.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from lightning_cfgrl.io.specs import trust_modules

OPTION = "--import"
ENV_VAR = "CFGRL_IMPORT"


class ImportOptionError(ValueError):
    """An ``--import`` / ``CFGRL_IMPORT`` entry that cannot be imported (the message names it and the fix)."""


def split_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(modules, the other arguments)``: every ``--import M`` / ``--import=M`` taken out of ``argv``."""
    modules, rest = [], []
    args = iter(argv)
    for arg in args:
        if arg == OPTION:
            value = next(args, None)
            if value is None or value.startswith("--"):
                raise ImportOptionError(f"{OPTION} needs a module name or a .py file, e.g. {OPTION} gru_lm")
            modules.append(value)
        elif arg.startswith(OPTION + "="):
            modules.append(arg[len(OPTION) + 1 :])
        else:
            rest.append(arg)
    return modules, rest


def env_imports(environ: dict[str, str] | None = None) -> list[str]:
    """The comma-separated modules of ``CFGRL_IMPORT`` (empty entries ignored)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [name.strip() for name in value.split(",") if name.strip()]


def import_trusted(entries: list[str], origin: str = OPTION) -> list[str]:
    """Import each entry (a module name or a ``.py`` path) and trust it; returns the module names."""
    names = []
    for entry in entries:
        name = _module_name(entry, origin)
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())  # as `python -m` does: a module beside the user's config
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name != err.name and not name.startswith(err.name + "."):
                raise  # the module itself imports something missing: the user's own error, shown whole
            raise ImportOptionError(
                f"{origin} {entry}: no module named {name!r} on the Python path; put its folder on PYTHONPATH "
                f"(PYTHONPATH=path/to/folder cfgrl ...) or give the file: {OPTION} path/to/{name}.py"
            ) from None
        names.append(name)
    trust_modules(names)
    return names


def _module_name(entry: str, origin: str) -> str:
    if not entry.endswith(".py") and "/" not in entry and os.sep not in entry:
        if not all(part.isidentifier() for part in entry.split(".")):
            raise ImportOptionError(
                f"{origin} {entry!r}: expected a module name such as gru_lm or a .py file"
            )
        return entry
    path = Path(entry)
    if not path.is_file() or path.suffix != ".py":
        raise ImportOptionError(f"{origin} {entry}: no such .py file; expected a module name or a .py file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if not path.stem.isidentifier():
        raise ImportOptionError(f"{origin} {entry}: {path.stem!r} is not a valid module name")
    return path.stem


def apply_imports(argv: list[str]) -> list[str]:
    """Import ``CFGRL_IMPORT``'s and ``argv``'s ``--import`` modules; returns ``argv`` without them."""
    modules, rest = split_imports(argv)
    import_trusted(env_imports(), ENV_VAR)
    import_trusted(modules)
    return rest


__all__ = ["ENV_VAR", "OPTION", "ImportOptionError", "apply_imports", "env_imports", "import_trusted"]
