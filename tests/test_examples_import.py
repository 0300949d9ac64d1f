"""Every example module imports (its ``main`` is not run): a moved or renamed library name breaks here,
not in a user's terminal."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODULES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def test_the_examples_are_found():
    assert len(MODULES) >= 7 and "quickstart" in MODULES, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_example_imports(name: str) -> None:
    module = importlib.import_module(f"examples.{name}")
    assert callable(getattr(module, "main", None)), f"examples/{name}.py has no main()"
