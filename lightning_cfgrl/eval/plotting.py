"""The quality-diversity plane as a matplotlib figure (saved as PNG and logged to TensorBoard)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lightning_cfgrl.eval.candidates import DIVERSITY, CandidateResult  # noqa: E402

FAMILY_STYLE = {
    "cfg": dict(color="tab:blue", marker="o", label="base + CFG (guidance sweep)"),
    "temperature": dict(color="tab:gray", marker="v", label="base, temperature sweep"),
    "top_p": dict(color="tab:olive", marker="^", label="base, top-p sweep"),
    "distilled": dict(color="tab:green", marker="*", label="distilled"),
    "merged": dict(color="tab:red", marker="s", label="merged (lambda sweep)"),
    "placebo": dict(color="tab:purple", marker="x", label="placebo (shuffled rewards)"),
    "steerable": dict(color="tab:orange", marker="D", label="steerable student (control sweep)"),
}
# fronts that span families: drawn dashed
COMBINED_FRONT_STYLE = {"sampling": dict(color="black", label="temperature + top-p front")}
_OTHER = dict(color="tab:brown", marker="D", label=None)


def plot_quality_diversity(
    results: Sequence[CandidateResult],
    quality: str,
    fronts: Mapping[str, Sequence[str]] | None = None,
    reference: tuple[float, float] | None = None,
    higher_is_better: bool = True,
    diversity: str = DIVERSITY,
) -> Figure:
    """Scatter every candidate (x = ``quality``, y = ``diversity``, mean ± standard error), grouped by
    ``result.family``; draw every front in ``fronts`` (front name -> candidate names) as a line and the
    hypervolume reference point. A lower-is-better quality is drawn with its axis reversed, so better
    is always to the right."""
    by_name = {r.name: r for r in results}
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    families = list(dict.fromkeys(r.family for r in results))
    for family in families:
        style = FAMILY_STYLE.get(family, {**_OTHER, "label": family})
        members = [r for r in results if r.family == family]
        xs = [r.mean(quality) for r in members]
        ys = [r.mean(diversity) for r in members]
        ax.errorbar(
            xs,
            ys,
            xerr=[r.metrics[quality][1] for r in members],
            yerr=[r.metrics[diversity][1] for r in members],
            fmt=style["marker"],
            color=style["color"],
            label=style["label"],
            capsize=2,
            markersize=7,
        )
        if family in ("cfg", "temperature", "top_p", "merged"):
            for r, x, y in zip(members, xs, ys, strict=True):
                ax.annotate(
                    r.name.split(" ")[-1], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
    for front, names in (fronts or {}).items():
        pts = sorted((by_name[n].mean(quality), by_name[n].mean(diversity)) for n in names)
        if len(pts) < 2:
            continue
        if front in COMBINED_FRONT_STYLE:
            style = COMBINED_FRONT_STYLE[front]
            ax.plot(
                *zip(*pts, strict=True),
                color=style["color"],
                linestyle="--",
                alpha=0.4,
                linewidth=1,
                label=style["label"],
            )
        else:
            color = FAMILY_STYLE.get(front, _OTHER)["color"]
            ax.plot(*zip(*pts, strict=True), color=color, alpha=0.5, linewidth=1.5)
    if reference is not None:
        ax.plot(
            *reference,
            marker="+",
            color="black",
            markersize=10,
            linestyle="none",
            label="hypervolume reference",
        )
    if not higher_is_better:
        ax.invert_xaxis()
    direction = "higher" if higher_is_better else "lower"
    ax.set_xlabel(f"quality: {quality} ({direction} is better)")
    ax.set_ylabel(f"{diversity}: mean pairwise 1 - cos within a prompt")
    ax.set_title("Quality-diversity plane (mean ± standard error over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
