"""Every saved result names the code it ran: commit, dirty flag and library versions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from lightning_cfgrl.eval.machine import code_version, describe_machine

ROOT = Path(__file__).resolve().parents[1]


def test_code_version_names_this_checkout() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: an installed package records commit None")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    version = code_version()
    assert version["commit"] == head.stdout.strip() and len(version["commit"]) == 40
    assert isinstance(version["dirty"], bool)
    assert version["versions"]["torch"] == torch.__version__


def test_describe_machine_carries_the_code_version() -> None:
    machine = describe_machine()
    assert {"commit", "dirty", "versions", "cpu_model", "torch_threads"} <= set(machine)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.name
)
def test_every_saved_result_names_its_commit(path: Path) -> None:
    """At the top level or under one of the keys the results pages read (``docs/gen_results.py``:
    ``machine`` is what ``describe_machine`` writes), with the dirty flag beside it."""
    data = json.loads(path.read_text())
    holders = [data, *(data.get(k) for k in ("provenance", "git", "meta", "machine"))]
    holder = next((h for h in holders if isinstance(h, dict) and h.get("commit")), None)
    assert holder is not None, f"{path.name}: no commit"
    assert "dirty" in holder, f"{path.name}: no dirty flag beside its commit"


def test_source_hash_changes_with_any_source_byte(tmp_path, monkeypatch) -> None:
    import shutil

    import lightning_cfgrl.eval.machine as machine

    copy = tmp_path / "lightning_cfgrl"
    shutil.copytree(ROOT / "lightning_cfgrl", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(machine, "__file__", str(copy / "eval" / "machine.py"))
    before = machine.source_sha256()
    assert before == machine.source_sha256()
    (copy / "core" / "guidance.py").write_text((copy / "core" / "guidance.py").read_text() + "\n# edit\n")
    assert machine.source_sha256() != before
