"""The README stays an index whose two commands are what CI runs, the user docs carry no lab-notebook
wording, and the results pages are generated from ``benchmarks/results/*.json`` with each file's machine
and commit (never an invented one)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _gen_results():
    spec = importlib.util.spec_from_file_location("gen_results", DOCS / "gen_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command_after(text: str, label: str) -> str:
    """The one-line bash command in the first ```bash block after ``label``."""
    start = text.index(label)
    return re.search(r"```bash\n(.*?)\n```", text[start:], re.S).group(1).strip()


def test_readme_is_an_index_of_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"


def test_ci_installs_and_runs_exactly_the_readme_test_command():
    steps = _command_after(README.read_text(), "**Run the tests**").split(" && ")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert steps[0].endswith("-m venv .venv") and any(line.endswith("-m venv .venv") for line in ci), steps
    for step in steps[1:]:  # activate, pip installs, pytest: the same lines, in the same order
        assert step in ci, f".ci/run does not run the README's {step!r}"
    positions = [ci.index(step) for step in steps[1:]]
    assert positions == sorted(positions), "the README's test command and .ci/run differ in order"
    assert any(line.startswith("ruff check") for line in ci)
    assert any("mkdocs build --strict" in line for line in ci), ".ci/run must build the docs strictly"


def test_readme_quickstart_command_runs_the_quickstart():
    command = _command_after(README.read_text(), "**Run the main job**")
    assert command.endswith("python examples/quickstart.py"), command
    assert (ROOT / "examples" / "quickstart.py").is_file()


def test_readme_links_point_to_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def _prose(markdown: str) -> str:
    """Markdown without fenced code blocks, inline code (file names and commands may say 'rounds') and
    results markers (which name the JSON's own labels)."""
    markdown = re.sub(r"```.*?```", "", markdown, flags=re.S)
    markdown = re.sub(r"^\{\{ results .*\}\}$", "", markdown, flags=re.M)
    return re.sub(r"`[^`\n]*`", "", markdown)


HISTORY_WORDS = re.compile(r"\b(rounds?|issues?|pending)\b", re.I)


def test_user_docs_have_no_history_wording():
    pages = {str(p.relative_to(ROOT)): p.read_text() for p in DOCS.rglob("*.md")}
    pages |= {f"generated {name}": text for name, text in _gen_results().render_pages().items()}
    found = {
        name: sorted(set(HISTORY_WORDS.findall(_prose(text))))
        for name, text in pages.items()
        if HISTORY_WORDS.search(_prose(text))
    }
    assert not found, f"history wording in user docs (it belongs in CHANGELOG.md): {found}"


def test_every_results_file_is_listed_with_its_machine_and_commit():
    gen = _gen_results()
    pages = gen.render_pages()
    index = pages["results/index.md"]
    for path in sorted(gen.RESULTS.glob("*.json")):
        row = next((line for line in index.splitlines() if f"`{path.name}`" in line), None)
        assert row is not None, f"{path.name} is not on the results index"
        data = json.loads(path.read_text())
        assert gen.commit_of(data) in row and gen.machine_of(data) in row, row
    for name, text in pages.items():
        if name != "results/index.md":
            assert "## Machines and commits" in text, name


EVALUATION = {
    "machine": {"cpu_model": "Test CPU", "cpu_count": 4, "torch_threads": 1, "torch_version": "9.9"},
    "claims": [
        {"claim": "a", "metric": "adherence", "statement": "s", "holds": False, "margin": -0.25,
         "standard_error": 0.05, "p_value": 0.9, "detail": "d"},
        {"claim": "b", "metric": "diversity", "statement": "t", "holds": True, "margin": 0.125,
         "standard_error": 0.01, "p_value": 0.001, "detail": "e"},
    ],
    "results": [{"name": "CFG g=3", "family": "cfg", "forward_passes_per_token": 2,
                 "metrics": {"adherence": [-0.75, 0.0625]}}],
}  # fmt: skip


def _render(tmp_path: Path, data: dict, template: str) -> str:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    (results / "x.json").write_text(json.dumps(data))
    return _gen_results().render_template(template, results)[0]


def test_generated_tables_carry_the_json_numbers(tmp_path):
    text = _render(
        tmp_path, EVALUATION, "# t\n{{ results claims x.json }}\n{{ results candidates x.json }}\n"
    )
    rows = [line for line in text.splitlines() if line.startswith("| a |") or line.startswith("| b |")]
    assert "**no**" in rows[0] and "-0.250 ± 0.050" in rows[0], rows
    assert "**yes**" in rows[1] and "+0.125 ± 0.010" in rows[1], rows
    assert "| CFG g=3 | -0.750 ± 0.062 | 2 |" in text
    assert "Test CPU, 4 cores, torch 9.9, 1 thread" in text


def test_a_file_without_a_commit_says_so_and_one_with_a_commit_names_it(tmp_path):
    text = _render(tmp_path, EVALUATION, "{{ results claims x.json }}\n")
    assert "commit not recorded" in text
    recorded = EVALUATION | {"provenance": {"commit": "0123456789abcdef0123", "dirty": True}}
    text = _render(tmp_path, recorded, "{{ results claims x.json }}\n")
    assert "`0123456789ab` (uncommitted changes)" in text and "commit not recorded" not in text


def test_a_page_asking_for_a_missing_file_fails_the_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        _render(tmp_path, EVALUATION, "{{ results claims missing.json }}\n")
    with pytest.raises(KeyError, match="unknown results view"):
        _render(tmp_path, EVALUATION, "{{ results nonsense x.json }}\n")


def test_candidates_view_takes_labels_and_a_reference_row(tmp_path):
    data = EVALUATION | {"truth": {"adherence": [-0.5, 0.25]}}
    text = _render(
        tmp_path,
        data,
        '{{ results candidates x.json metrics=adherence labels=adh "reference=truth=true process" }}\n',
    )
    assert "| candidate | adh | passes/token |" in text
    assert text.index("| true process | -0.500 ± 0.250 | — |") < text.index("| CFG g=3 |")
