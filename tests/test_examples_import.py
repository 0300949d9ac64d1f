"""Every example module imports (its ``main`` is not run): a moved or renamed library name breaks here,
not in a user's terminal."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# every example script, in subfolders too (examples/analysis/front_gap.py -> "analysis.front_gap")
MODULES = sorted(
    ".".join(p.relative_to(EXAMPLES).with_suffix("").parts)
    for p in EXAMPLES.rglob("*.py")
    if p.name != "__init__.py"
)


def test_the_examples_are_found():
    assert len(MODULES) >= 7 and "quickstart" in MODULES, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_example_imports(name: str) -> None:
    module = importlib.import_module(f"examples.{name}")
    path = EXAMPLES / (name.replace(".", "/") + ".py")
    if "__main__" in path.read_text():  # a script (not a module that scripts and YAMLs import)
        assert callable(getattr(module, "main", None)), f"{path.relative_to(EXAMPLES.parent)} has no main()"
