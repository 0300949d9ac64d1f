"""The quality-diversity plane as a matplotlib figure (saved as PNG and logged to TensorBoard)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lightning_cfgrl.eval.candidates import CandidateResult  # noqa: E402

FAMILY_STYLE = {
    "cfg": dict(color="tab:blue", marker="o", label="base + CFG (guidance sweep)"),
    "temperature": dict(color="tab:gray", marker="v", label="base, temperature sweep"),
    "top_p": dict(color="tab:olive", marker="^", label="base, top-p sweep"),
    "merged": dict(color="tab:red", marker="s", label="merged (lambda sweep)"),
    "distilled": dict(color="tab:green", marker="*", label="distilled"),
    "placebo": dict(color="tab:purple", marker="x", label="placebo (shuffled rewards)"),
    "steerable": dict(color="tab:orange", marker="D", label="steerable student (control sweep)"),
}


def plot_quality_diversity(
    results: Sequence[CandidateResult],
    families: Mapping[str, str],
    quality: str,
    fronts: Mapping[str, Sequence[int]] | None = None,
    reference: tuple[float, float] | None = None,
) -> Figure:
    """Scatter every candidate (x = ``quality`` metric, y = diversity) with standard-error bars; draw
    each family's Pareto front as a line and the hypervolume reference point."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for family, style in FAMILY_STYLE.items():
        members = [r for r in results if families[r.name] == family]
        if not members:
            continue
        xs = [r.metrics[quality][0] for r in members]
        ys = [r.metrics["diversity"][0] for r in members]
        ax.errorbar(
            xs,
            ys,
            xerr=[r.metrics[quality][1] for r in members],
            yerr=[r.metrics["diversity"][1] for r in members],
            fmt=style["marker"],
            color=style["color"],
            label=style["label"],
            capsize=2,
            markersize=7,
        )
        if family in ("cfg", "temperature", "merged"):
            for r, x, y in zip(members, xs, ys, strict=True):
                ax.annotate(
                    r.name.split(" ")[-1], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
    for family, indices in (fronts or {}).items():
        pts = sorted((results[i].metrics[quality][0], results[i].metrics["diversity"][0]) for i in indices)
        if len(pts) > 1:
            ax.plot(*zip(*pts, strict=True), color=FAMILY_STYLE[family]["color"], alpha=0.5, linewidth=1.5)
    if reference is not None:
        ax.plot(*reference, marker="+", color="black", markersize=10, label="hypervolume reference")
    ax.set_xlabel(f"quality: {quality} (higher is better)")
    ax.set_ylabel("diversity: mean pairwise 1 - cos within a prompt")
    ax.set_title("Quality-diversity plane (mean ± standard error over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
