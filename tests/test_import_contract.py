"""The import contract between the package's folders: an explicit table of allowed edges, no cycles.

Every module of ``lightning_cfgrl`` is parsed with ``ast``: module-level, function-level (lazy) and
``TYPE_CHECKING`` imports all count, as do ``importlib.import_module("...")`` string literals and names
taken from the ``lightning_cfgrl`` facade (resolved to their home). An edge ``a -> b`` between two
folders must be in ``ALLOWED``; a new folder must be placed in the table before it can import anything.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import lightning_cfgrl

PACKAGE = Path(lightning_cfgrl.__file__).parent
ROOT = "lightning_cfgrl"

# Who may import whom, bottom-up: each folder imports only folders listed for it. Layers, lowest first:
# core | models, adapters | io | merging | eval | training | embedders | audio | callbacks | cli, experiments,
# experimental.
_CORE = {"core"}
_MODELS = _CORE | {"models", "adapters"}
_IO = _MODELS | {"io"}
_MERGING = _IO | {"merging"}
_EVAL = _MERGING | {"eval"}
_TRAINING = _EVAL | {"training"}
_EMBEDDERS = _TRAINING | {"embedders"}
_AUDIO = _EMBEDDERS | {"audio"}
_CALLBACKS = _AUDIO | {"callbacks"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),  # plain torch math (test_layout.py also forbids third-party imports but torch/einops)
    "models": _CORE,  # the reference token model
    "adapters": _CORE,  # third-party models and libraries: MusicGen, PEFT, EnCodec/torchaudio imports
    "io": _MODELS,  # files: checkpoints, specs, provenance, audio files; load_generator (PEFT via adapters)
    "merging": _IO,  # weight-space merging of checkpoint files
    "eval": _MERGING,  # scorers, metrics, the Evaluation runner (merged candidates)
    "training": _EVAL,  # CFGRLModule, objectives, pretraining (validation uses eval's scorers)
    "embedders": _TRAINING,  # reward/eval embedders, incl. the contrastive embedder's LightningModule
    "audio": _EMBEDDERS,  # tokenizer, audio datamodules, generation to files
    "callbacks": _AUDIO,  # merge, audio logger, run checkpoints; re-exports the objective callbacks
    "cli": _CALLBACKS,  # the cfgrl console script
    "experiments": _CALLBACKS,  # the paper's domains and judge: nothing in the library imports them
    "experimental": _CALLBACKS,  # options that did not help (TeacherMixDistillCallback); nothing imports them
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "lightning_cfgrl.training.module"
    line: int
    target: str  # imported module or name, e.g. "lightning_cfgrl.eval.scorers.Scorer"

    def folders(self, homes: dict[str, str]) -> tuple[str, str]:
        return folder_of(self.source), folder_of(self.target, homes)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def folder_of(name: str, homes: dict[str, str] | None = None) -> str:
    """The folder of a dotted name ("" for the facade ``lightning_cfgrl`` itself)."""
    parts = name.split(".")
    if len(parts) == 1:
        return ""
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    home = (homes or {}).get(parts[1])  # a facade name: `from lightning_cfgrl import CFGRLModule`
    return folder_of(home) if home else ""


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of everything ``source`` imports from ``lightning_cfgrl``, at any depth."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == ROOT:
            found.append((node.lineno, f"{ROOT}.{node.attr}"))  # `import lightning_cfgrl; lightning_cfgrl.X`
    return [(line, name) for line, name in found if name.split(".")[0] == ROOT]


def facade_homes() -> dict[str, str]:
    """The facade's lazy table ``name -> home module`` (``_HOMES`` in ``lightning_cfgrl/__init__.py``)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_HOMES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("lightning_cfgrl/__init__.py has no _HOMES table")


@functools.cache
def package_edges() -> tuple[Edge, ...]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == ROOT:
            continue  # the facade re-exports from every folder; it is the top, imported by nothing inside
        for line, target in imported_names(path.read_text(), module, path.name == "__init__.py"):
            edges.append(Edge(module, line, target))
    return tuple(edges)


def folder_graph(edges: Iterable[Edge], homes: dict[str, str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        a, b = edge.folders(homes)
        if a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def violations(edges: Iterable[Edge], homes: dict[str, str], allowed: dict[str, set[str]]) -> list[str]:
    """One line per import that crosses folders against ``allowed``."""
    bad = []
    for edge in edges:
        a, b = edge.folders(homes)
        if a == b or edge.target in (ROOT, f"{ROOT}.__version__"):
            continue  # a bare `import lightning_cfgrl` runs only the lazy facade; its names are edges
        if b == "":
            bad.append(f"{edge.source}:{edge.line} imports {edge.target} from the facade; import its home")
        elif b not in allowed.get(a, set()):
            bad.append(
                f"{edge.source}:{edge.line} imports {edge.target}: {a} -> {b} is not an allowed edge "
                f"({a} may import {sorted(allowed.get(a, set()))})"
            )
    return bad


def cycles(graph: dict[str, set[str]]) -> list[str]:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        return [" -> ".join(err.args[1])]
    return []


def test_the_table_names_every_folder_and_is_acyclic():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(ALLOWED) == folders, (
        f"place new folders in ALLOWED: {sorted(folders - set(ALLOWED))}; "
        f"drop gone ones: {sorted(set(ALLOWED) - folders)}"
    )
    assert all(targets <= folders for targets in ALLOWED.values())
    assert all(f not in ALLOWED[f] for f in ALLOWED)
    assert cycles(ALLOWED) == []


def test_every_import_between_folders_is_an_allowed_edge():
    bad = violations(package_edges(), facade_homes(), ALLOWED)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_folder_graph_has_no_cycles():
    graph = folder_graph(package_edges(), facade_homes())
    assert len(graph) >= 10, graph  # the parser sees the package's real structure
    assert cycles(graph) == []


def test_the_parser_counts_lazy_relative_string_and_facade_imports():
    source = """
import lightning_cfgrl.models
from . import sibling
from ..io.checkpoints import atomic_save
from lightning_cfgrl import CFGRLModule, __version__
import lightning_cfgrl

def f():
    from lightning_cfgrl.audio.tokenizer import EncodecTokenizer
    return importlib.import_module("lightning_cfgrl.cli.main"), lightning_cfgrl.ModelMergeCallback
"""
    names = {name for _, name in imported_names(source, "lightning_cfgrl.eval.scorers", False)}
    assert names >= {
        "lightning_cfgrl.models",
        "lightning_cfgrl.eval.sibling",
        "lightning_cfgrl.io.checkpoints.atomic_save",
        "lightning_cfgrl.CFGRLModule",
        "lightning_cfgrl.audio.tokenizer.EncodecTokenizer",
        "lightning_cfgrl.cli.main",
        "lightning_cfgrl.ModelMergeCallback",
    }, names
    edges = [Edge("lightning_cfgrl.eval.scorers", 1, n) for n in sorted(names)]
    bad = violations(edges, facade_homes(), ALLOWED)
    # eval may import models and io; training (CFGRLModule's home), audio, cli and callbacks are above it
    assert len(bad) == 4, bad
    assert {line.split(": ", 1)[1].split(" is")[0] for line in bad} == {
        "eval -> training",
        "eval -> audio",
        "eval -> cli",
        "eval -> callbacks",
    }


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("lightning_cfgrl.core.sampling", "lightning_cfgrl.training.module"),  # core imports nothing
        ("lightning_cfgrl.adapters.peft", "lightning_cfgrl.io.checkpoints"),  # the old adapters <-> io cycle
        ("lightning_cfgrl.training.module", "lightning_cfgrl.callbacks.merge"),
        ("lightning_cfgrl.embedders.crepe", "lightning_cfgrl.audio.tokenizer"),
        ("lightning_cfgrl.cli.main", "lightning_cfgrl.experiments.judge"),  # the library never needs them
    ],
)
def test_an_edge_against_the_order_is_reported(source, target):
    edges = [*package_edges(), Edge(source, 1, target)]
    bad = violations(edges, facade_homes(), ALLOWED)
    assert len(bad) == 1 and bad[0].startswith(f"{source}:1 imports {target}"), bad


def test_no_library_file_is_over_500_lines() -> None:
    """One concept per file: a library module past 500 lines holds more than one; split it."""
    package = Path(__file__).resolve().parents[1] / "lightning_cfgrl"
    long = {
        str(p.relative_to(package)): n
        for p in package.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"{long}: split each into modules of one concept (at most 500 lines)"
