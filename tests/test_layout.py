"""The architecture holds: ``core/`` is plain torch math, and the public names stay importable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_cfgrl

PACKAGE = Path(lightning_cfgrl.__file__).parent
CORE = PACKAGE / "core"
ALLOWED_THIRD_PARTY = {"torch", "einops"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("lightning_cfgrl") and not node.module.startswith(
                "lightning_cfgrl.core"
            ):
                roots.add(node.module)  # core may only use core
            else:
                roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_only_torch_einops_stdlib_and_itself():
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8, f"expected the core modules under {CORE}, found {[f.name for f in files]}"
    allowed = ALLOWED_THIRD_PARTY | set(sys.stdlib_module_names) | {"lightning_cfgrl", "__future__"}
    offending = {f.name: sorted(_imported_roots(f) - allowed) for f in files}
    offending = {name: bad for name, bad in offending.items() if bad}
    assert not offending, f"core modules import outside torch/einops/stdlib/core: {offending}"


def test_public_names_are_importable_from_the_top_level():
    for name in lightning_cfgrl.__all__:
        assert getattr(lightning_cfgrl, name) is not None, name
    expected = {
        "CFGRLModule",
        "CFGDistillCallback",
        "DiversityRewardCallback",
        "ModelMergeCallback",
        "cfg_logits",
        "TokenGenerator",
        "ModuleAdapter",
        "DelayPattern",
        "SamplingConfig",
        "sample",
        "Scorer",
        "AtomicCheckpointIO",
        "PretrainModule",
        "AudioSampleLogger",
        "load_generator",
        "merge_state_dicts",
    }
    assert expected <= set(lightning_cfgrl.__all__), expected - set(lightning_cfgrl.__all__)


SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())


def _fresh_import(module: str) -> set[str]:
    """The modules loaded by ``import module`` in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_importing_core_does_not_load_lightning():
    # importing a subpackage runs lightning_cfgrl/__init__.py first: it must not pull Lightning in
    assert not {m for m in _fresh_import("lightning_cfgrl.core") if m.split(".")[0] == "lightning"}


@pytest.mark.slow  # a fresh interpreter per subpackage (~10 s each)
@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_each_subpackage_imports_on_its_own(subpackage):
    # no import cycle that only an import order elsewhere hides
    assert f"lightning_cfgrl.{subpackage}" in _fresh_import(f"lightning_cfgrl.{subpackage}")
