"""Results pages generated from ``benchmarks/results/*.json`` (run by the mkdocs-gen-files plugin at build time).

Each page under ``docs/_results/`` is a template: prose in markdown, and a line

    {{ results VIEW FILE key=value ... }}

wherever a table built from ``benchmarks/results/FILE`` goes (arguments are split like a shell line, so a value
with spaces is quoted). Every page gets, at its end, the machine and the commit each of its JSON files
records ("commit not recorded" where a file has none: nothing is guessed). ``results/index.md`` lists every
JSON file. Nothing here imports or runs code from a results file: they are read with ``json``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATES = Path(__file__).resolve().parent / "_results"
MARKER = re.compile(r"^\{\{ results (.+?) \}\}\s*$")
NOT_RECORDED = "commit not recorded"


# ---- numbers ---------------------------------------------------------------------------------------------


def fmt(x: Any, digits: int = 3) -> str:
    """A cell: ints with thousands separators, floats to ``digits`` decimals (fewer for large values)."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == int(x) and abs(x) >= 1000:
            return f"{int(x):,}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.1f}"
        if abs(x) >= 10:
            return f"{x:.2f}"
        return f"{x:.{digits}f}"
    if isinstance(x, list | tuple):
        return ", ".join(fmt(v, digits) for v in x)
    return str(x).replace("|", "\\|")


def mean_se(pair: Any, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    """``[mean, standard error]`` as ``mean ± se``."""
    if not isinstance(pair, list | tuple) or len(pair) != 2 or pair[0] is None:
        return fmt(pair, digits)
    mean, se = pair[0] * scale, (pair[1] or 0.0) * scale
    return f"{mean:.{digits}f} ± {se:.{digits}f}{suffix}"


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---- provenance ------------------------------------------------------------------------------------------

_PROVENANCE_KEYS = ("provenance", "git", "meta", "machine")


def _lookup(data: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        if name in data:
            return data[name]
    for outer in _PROVENANCE_KEYS:
        inner = data.get(outer)
        if isinstance(inner, dict):
            for name in names:
                if name in inner:
                    return inner[name]
    return None


def commit_of(data: dict) -> str:
    """The commit a results file records, with its dirty flag; ``commit not recorded`` where there is none."""
    commit = _lookup(data, ("commit", "git_commit", "git_sha", "sha"))
    if not commit:
        return NOT_RECORDED
    dirty = _lookup(data, ("dirty", "git_dirty"))
    state = " (uncommitted changes)" if dirty is True else " (clean tree)" if dirty is False else ""
    if _lookup(data, ("commit_recorded",)):  # backfilled: the commit that last wrote the file
        state += " (recorded after the fact: the commit that last wrote this file)"
    return f"`{str(commit)[:12]}`{state}"


def machine_of(data: dict) -> str:
    """One line naming the machine a results file records (``machine not recorded`` where it has none)."""
    machine = data.get("machine")
    if isinstance(machine, str):
        return machine
    if not isinstance(machine, dict):
        return "machine not recorded"
    parts = []
    name = machine.get("cpu_model") or machine.get("cpu")
    if name:
        cores = machine.get("cpu_count")
        parts.append(f"{name}, {cores} cores" if cores else str(name))
    device = machine.get("device")
    gpu = machine.get("gpu") or machine.get("gpu_name") or machine.get("device_name")
    if gpu:
        parts.append(f"GPU {gpu}")
    elif device and device != "cpu":
        parts.append(f"device {device}")
    torch = machine.get("torch_version") or machine.get("torch")
    if torch:
        parts.append(f"torch {torch}")
    threads = machine.get("torch_threads") or machine.get("threads")
    if threads:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    load = machine.get("load_average_1_5_15")
    if isinstance(load, list) and load:
        parts.append(f"1-min load {load[0]}")
    elif machine.get("loadavg_1min_before") is not None:
        parts.append(f"1-min load {machine['loadavg_1min_before']}")
    return ", ".join(parts) if parts else "machine not recorded"


def load(name: str, results: Path = RESULTS) -> dict:
    path = results / name
    if not path.is_file():
        raise FileNotFoundError(f"results page asks for {path}, which does not exist")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a JSON object")
    return data


# ---- views -----------------------------------------------------------------------------------------------


def _evaluation_rows(data: dict) -> list[dict]:
    rows = data.get("results")
    if not isinstance(rows, list):
        raise ValueError("expected a 'results' list of evaluated candidates")
    return rows


def view_candidates(
    data: dict, names: str = "", metrics: str = "", family: str = "", labels: str = "", reference: str = ""
) -> str:
    """Evaluated candidates (``results``): one row each, ``mean ± SE`` over evaluation seeds per metric.
    ``labels``: column headers for ``metrics``; ``reference``: ``KEY=ROW NAME``, a dict of the file
    (``{metric: [mean, se] or value}``, e.g. the true process's own levels) shown as the first row."""
    rows = _evaluation_rows(data)
    if names:
        wanted = names.split("|")
        by_name = {r["name"]: r for r in rows}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise KeyError(f"candidates {missing} not in the file (it has {sorted(by_name)})")
        rows = [by_name[n] for n in wanted]
    if family:
        rows = [r for r in rows if r.get("family") in family.split("|")]
    keys = metrics.split(",") if metrics else list(rows[0]["metrics"])
    names_of = labels.split(",") if labels else keys
    if len(names_of) != len(keys):
        raise ValueError(f"labels {names_of} and metrics {keys} differ in length")
    body = [
        [r["name"], *(mean_se(r["metrics"].get(k)) for k in keys), fmt(r.get("forward_passes_per_token"))]
        for r in rows
    ]
    if reference:
        key, _, label = reference.partition("=")
        levels = _get(data, key)
        if not isinstance(levels, dict):
            raise KeyError(f"reference {key!r} is not a dict in the file")
        body.insert(0, [label or key, *(mean_se(levels.get(k)) for k in keys), "—"])
    return table(["candidate", *names_of, "passes/token"], body)


def view_claims(data: dict, metric: str = "", only: str = "") -> str:
    """The claims: statement, holds (beyond 2 SE), margin ± SE, one-sided paired p-value, the numbers."""
    claims = data["claims"]
    if metric:
        claims = [c for c in claims if c.get("metric") in metric.split(",")]
    if only:
        claims = [c for c in claims if c["claim"] in only.split(",")]
    holm = any(c.get("p_holm") is not None for c in claims)  # files written since claims carry it
    return table(
        [
            "claim",
            "measured on",
            "statement",
            "holds?",
            "margin ± SE",
            "p",
            *(["p (Holm)"] if holm else []),
            "numbers",
        ],
        (
            [
                c["claim"],
                c.get("metric", ""),
                fmt(c["statement"]),
                "**yes**" if c["holds"] else "**no**",
                f"{c['margin']:+.3f} ± {c['standard_error']:.3f}",
                f"{c['p_value']:.2g}" if c.get("p_value") is not None else "—",
                *([f"{c['p_holm']:.2g}" if c.get("p_holm") is not None else "—"] if holm else []),
                fmt(c.get("detail", "")),
            ]
            for c in claims
        ),
    )


def view_compare_claims(data: dict, others: str = "", labels: str = "") -> str:
    """The claims of several files side by side: one row per (claim, metric) of the first file, one column
    per file (``others``: further results files, comma-separated; ``labels``: the column titles, ``|``-separated),
    each cell ``holds (margin ± SE)`` or ``no (margin ± SE)``; "—" where a file lacks the claim."""
    files = [data, *(load(name) for name in others.split(",") if name)]
    titles = labels.split("|") if labels else [f"file {i + 1}" for i in range(len(files))]
    if len(titles) != len(files):
        raise ValueError(
            f"labels names {len(titles)} columns for {len(files)} files: give one label per file"
        )

    def cell(claims: list[dict], claim: str, metric: str) -> str:
        c = next((c for c in claims if c["claim"] == claim and c.get("metric") == metric), None)
        if c is None:
            return "—"
        return f"{'holds' if c['holds'] else 'no'} ({c['margin']:+.3f} ± {c['standard_error']:.3f})"

    keys = list(dict.fromkeys((c["claim"], c.get("metric", "")) for c in data["claims"]))
    return table(
        ["claim", "measured on", *titles],
        ([claim, metric, *(cell(f["claims"], claim, metric) for f in files)] for claim, metric in keys),
    )


def view_not_holding(data: dict) -> str:
    """A plain list of the claims that do not hold (beyond 2 SE), with their numbers."""
    failed = [c for c in data["claims"] if not c["holds"]]
    if not failed:
        return "Every claim in this file holds beyond 2 SE."
    return "\n".join(
        f"* **{c['claim']}** ({c.get('metric', '')}): {c['statement']}: margin {c['margin']:+.3f} ± "
        f"{c['standard_error']:.3f}; {c.get('detail', '')}"
        for c in failed
    )


def view_hypervolumes(data: dict) -> str:
    """Hypervolume of each family's front against the reference point, per diversity embedder."""
    hv = data["hypervolumes"]
    embedders = list(hv)
    families = list(dict.fromkeys(f for e in embedders for f in hv[e]))
    return table(["front", *embedders], ([f, *(fmt(hv[e].get(f)) for e in embedders)] for f in families))


def view_variants(data: dict) -> str:
    """Ablation variants: fraction of CFG's gain over chance (mean ± SE over training seeds) and costs."""
    rows = []
    for v in data["variants"]:
        s = v["summary"]
        rows.append(
            [
                fmt(v["variant"]),
                mean_se(s.get("fraction"), 1, 100, " %"),
                mean_se(s.get("diversity")),
                mean_se(s.get("reward_diversity")),
                fmt(int(s["tokens"][0])) if s.get("tokens") else "—",
                fmt(s["train_cpu_seconds"][0]) if s.get("train_cpu_seconds") else "—",
            ]
        )
    header = ["variant", "fraction of CFG's gain", "diversity", "reward diversity", "trained tokens", "CPU s"]
    ref = data.get("cfg_reference", {}).get("metrics", {})
    plain = data.get("plain", {}).get("metrics", {})
    note = (
        f"\n\nReference points on the same prompts and seeds: {data.get('plain', {}).get('name', 'plain')} "
        f"adherence {mean_se(plain.get('adherence'))}, {data.get('cfg_reference', {}).get('name', 'CFG')} "
        f"{mean_se(ref.get('adherence'))}, chance {fmt(data.get('chance'))}; prompts: {data.get('prompts', '?')}, "
        f"training seeds {fmt(data.get('train_seeds'))}."
    )
    return table(header, rows) + note


def view_beta(data: dict) -> str:
    """Beta-calibration variants: beta, estimator settings, placebo or not, with the variant's numbers."""
    rows = []
    for v in data["variants"]:
        r, s = v["recipe"], v["summary"]
        rows.append(
            [
                f"{r.get('beta'):g}",
                f"G = {r.get('group_size')}, {r.get('baseline')}, {r.get('beta_scale')}, {r.get('advantage_norm')}",
                "placebo" if r.get("shuffle_rewards") else "reward",
                mean_se(s.get("diversity")),
                mean_se(s.get("reward_diversity")),
                mean_se(s.get("fraction"), 1, 100, " %"),
            ]
        )
    header = [
        "beta",
        "G, baseline, beta scale, advantage norm",
        "rewards",
        "diversity",
        "reward diversity",
        "fraction of CFG's gain",
    ]
    return table(header, rows)


def view_curve(data: dict, rename: str = "") -> str:
    """Fraction of CFG's gain over chance against training steps, one column per recipe (``rename``:
    ``old=new|...`` relabels recipes)."""
    names = dict(pair.split("=", 1) for pair in rename.split("|") if pair)
    curves = {names.get(k, k): v for k, v in data["curves"].items()}
    steps = sorted({p["step"] for c in curves.values() for p in c["curve"]})
    value = {(name, p["step"]): p["value"] for name, c in curves.items() for p in c["curve"]}
    tokens = {p["step"]: p["tokens"] for c in curves.values() for p in c["curve"]}
    rows = [
        [
            str(s),
            fmt(tokens.get(s)),
            *(f"{100 * value[(n, s)]:.1f} %" if (n, s) in value else "—" for n in curves),
        ]
        for s in steps
    ]
    total = [
        "**total**",
        "",
        *(f"{fmt(c.get('tokens'))} tokens, {fmt(c.get('cpu_seconds'))} CPU s" for c in curves.values()),
    ]
    return table(["step", "trained tokens", *curves], [*rows, total])


def view_steerable_g(data: dict) -> str:
    """The steerable student at control g (diversity weight 0) against CFG at g: adherence, fraction of gain."""
    chance = data["settings"]["chance"]
    by_name = {r["name"]: r for r in _evaluation_rows(data)}
    rows = []
    for claim in data["claims"]:
        if not claim["claim"].startswith("s_g="):
            continue
        g = claim["claim"][4:]
        student = by_name[f"steerable student g={g} w=0"]["metrics"]["adherence"]
        cfg = by_name[f"CFG g={g}"]["metrics"]["adherence"]
        fraction = (student[0] - chance) / (cfg[0] - chance)
        rows.append(
            [
                g,
                mean_se(cfg),
                mean_se(student),
                f"{100 * fraction:.0f} %",
                f"{claim['margin']:+.3f} ± {claim['standard_error']:.3f}",
                "**yes**" if claim["holds"] else "**no**",
            ]
        )
    header = [
        "g",
        "CFG at g (2 passes)",
        "student at g (1 pass)",
        "fraction of CFG's gain",
        "margin ± SE",
        "holds?",
    ]
    return table(header, rows)


def view_training_cost(data: dict) -> str:
    """Wall time of the steerable run against the two runs of the two-model recipe."""
    cost = data["training_cost"]
    rows = [
        ["steerable student (one run)", fmt(cost["steerable"]["steps"]), fmt(cost["steerable"]["wall_s"])]
    ]
    for name, run in cost["two_model_recipe"]["runs"].items():
        rows.append([name, fmt(run["steps"]), fmt(run["wall_s"])])
    rows.append(
        [
            "two-model recipe, total",
            fmt(cost["two_model_recipe"]["steps"]),
            fmt(cost["two_model_recipe"]["wall_s"]),
        ]
    )
    return table(["run", "steps", "`cfgrl fit` wall s"], rows)


def view_selection(data: dict, split: str = "train_split") -> str:
    """Steerable candidates at control g as a fraction of CFG-at-g's gain, on one split of training prompts."""
    part = data[split]
    candidates = data.get("candidates", {})
    gs = list(part["cfg"])
    rows = []
    for name, student in part["students"].items():
        key = name.removesuffix("_all36")
        recipe = candidates.get(key, {}).get("recipe", key)
        cells, fractions = [], []
        for g in gs:
            point = student["per_g"].get(g, {})
            f = point.get("fraction")
            fractions.append(f)
            se = point.get("fraction_se")
            cells.append(
                "—"
                if f is None
                else f"{100 * f:.0f} ± {100 * se:.0f} %"
                if se is not None
                else f"{100 * f:.0f} %"
            )
        worst = min((f for f in fractions if f is not None), default=None)
        rows.append([f"`{name}`", fmt(recipe), *cells, "—" if worst is None else f"{100 * worst:.0f} %"])
    seeds = ", ".join(str(seed) for seed in part.get("seeds", []))
    detail = str(part.get("note", ""))
    note = (
        f"\n\n{part.get('num_prompts')} prompts ({part.get('prompts')}), {part.get('num_samples')} samples x "
        f"seeds {seeds}. {detail[:1].upper()}{detail[1:]}"
    )
    return table(["candidate", "recipe", *(f"g = {g}" for g in gs), "min"], rows) + note


def view_records(
    data: dict, rows: str = "records", columns: str = "", where: str = "", labels: str = ""
) -> str:
    """Any list of flat records (``rows``): the scalar ``columns`` (default: every scalar key of the first one)."""
    records = data[rows]
    if where:
        key, _, value = where.partition(":")
        records = [r for r in records if str(r.get(key)) in value.split("|")]
    keys = (
        columns.split(",")
        if columns
        else [k for k, v in records[0].items() if not isinstance(v, dict | list)]
    )
    header = labels.split(",") if labels else keys
    if len(header) != len(keys):
        raise ValueError(f"labels {header} and columns {keys} differ in length")
    return table(header, ([fmt(_get(r, k)) for k in keys] for r in records))


def view_summary(data: dict, key: str = "summary", se: str = "") -> str:
    """A flat dict (by default ``summary``) as a two-column table (``se=1``: ``[mean, SE]`` as ``mean ± se``)."""
    cell = mean_se if se else fmt
    return table(["quantity", "value"], ([f"`{k}`", cell(v)] for k, v in _get(data, key).items()))


def view_grid(
    data: dict, key: str = "summary", columns: str = "", labels: str = "", row: str = "", se: str = ""
) -> str:
    """A dict of flat dicts (``{row: {column: value}}``, e.g. ratios per size) as one table: a row per outer
    key (headed ``row``), the inner ``columns`` (default: every key of the first row); ``se=1``: a
    ``[mean, standard error]`` cell as ``mean ± se``."""
    grid = _get(data, key)
    first = next(iter(grid.values()))
    keys = columns.split(",") if columns else list(first)
    header = labels.split(",") if labels else keys
    if len(header) != len(keys):
        raise ValueError(f"labels {header} and columns {keys} differ in length")
    cell = mean_se if se else fmt
    return table(
        [row or key, *header],
        ([f"{outer}", *[cell(inner.get(k)) for k in keys]] for outer, inner in grid.items()),
    )


def view_config(data: dict, key: str = "config") -> str:
    """The scalar settings of a dict (by default ``config``) as one line."""
    items = [f"{k} {fmt(v)}" for k, v in _get(data, key).items() if not isinstance(v, dict | list)]
    return "Settings: " + "; ".join(items) + "."


def view_command(data: dict) -> str:
    command = data.get("command")
    return f"Command: `{command}`." if command else "Command not recorded."


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


VIEWS: dict[str, Callable[..., str]] = {
    "candidates": view_candidates,
    "claims": view_claims,
    "hypervolumes": view_hypervolumes,
    "compare_claims": view_compare_claims,
    "not_holding": view_not_holding,
    "variants": view_variants,
    "beta": view_beta,
    "curve": view_curve,
    "steerable_g": view_steerable_g,
    "training_cost": view_training_cost,
    "selection": view_selection,
    "records": view_records,
    "summary": view_summary,
    "grid": view_grid,
    "config": view_config,
    "command": view_command,
}


# ---- pages -----------------------------------------------------------------------------------------------


def source_line(name: str, data: dict) -> str:
    return f"*Source: `benchmarks/results/{name}` — {machine_of(data)}; {commit_of(data)}.*"


def render_template(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """A template with its ``{{ results ... }}`` lines replaced by tables; also the JSON files it used."""
    out, used = [], []
    for line in text.splitlines():
        match = MARKER.match(line)
        if not match:
            out.append(line)
            continue
        view, name, *args = shlex.split(match.group(1))
        if view not in VIEWS:
            raise KeyError(f"unknown results view {view!r} in {line!r}; known: {sorted(VIEWS)}")
        options = dict(arg.split("=", 1) for arg in args)
        data = load(name, results)
        out.append(VIEWS[view](data, **options))
        if view not in ("command", "config"):
            out.append("")
            out.append(source_line(name, data))
        if name not in used:
            used.append(name)
    if used:
        out += ["", "## Machines and commits", "", "Every number on this page comes from these files:", ""]
        rows = []
        for name in used:
            data = load(name, results)
            rows.append([f"`{name}`", machine_of(data), commit_of(data)])
        out.append(table(["file", "machine", "commit"], rows))
    return "\n".join(out) + "\n", used


def render_index(pages: dict[str, list[str]], results: Path = RESULTS) -> str:
    """``results/index.md``: every JSON file, its machine and commit, and the page that shows it."""
    shown = {name: page for page, names in pages.items() for name in names}
    rows = []
    for path in sorted(results.glob("*.json")):
        data = load(path.name, results)
        page = shown.get(path.name)
        link = (
            f"[{page.removesuffix('.md')}]({page.removeprefix('results/')})"
            if page
            else "not shown on a page"
        )
        rows.append([f"`{path.name}`", machine_of(data), commit_of(data), link])
    missing = sorted(set(shown) - {p.name for p in results.glob("*.json")})
    if missing:
        raise FileNotFoundError(f"pages show results files that do not exist: {missing}")
    intro = (TEMPLATES / "index.md").read_text() if (TEMPLATES / "index.md").exists() else "# Results\n"
    return intro.rstrip() + "\n\n" + table(["file", "machine", "commit", "page"], rows) + "\n"


def render_pages(results: Path = RESULTS, templates: Path = TEMPLATES) -> dict[str, str]:
    """Every generated page, ``{"results/<name>.md": markdown}``."""
    pages, used = {}, {}
    for template in sorted(templates.glob("*.md")):
        if template.name == "index.md":
            continue
        path = f"results/{template.name}"
        pages[path], used[path] = render_template(template.read_text(), results)
    pages["results/index.md"] = render_index(used, results)
    return pages


def main() -> None:
    import mkdocs_gen_files

    for path, text in render_pages().items():
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(text)
        mkdocs_gen_files.set_edit_path(path, f"_results/{Path(path).name}")


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    main()
elif __name__ == "__main__":  # python docs/gen_results.py OUT_DIR: write the pages there, to read them
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site_results")
    for path, text in render_pages().items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
    print(f"wrote {len(render_pages())} pages under {out}")
