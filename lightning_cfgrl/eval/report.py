"""Write an :class:`~lightning_cfgrl.eval.evaluation.EvaluationReport`: ``results.csv``, strict
``results.json``, ``quality_diversity.png``, and the figure, hypervolumes and claims to TensorBoard.

Every file is written atomically (:func:`lightning_cfgrl.io.checkpoints.atomic_write`). The JSON is
strict: a non-finite number (an infinite t statistic, say) is written as ``null``, never as the
``Infinity``/``NaN`` that most JSON parsers reject.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_cfgrl.eval.candidates import DIVERSITY
from lightning_cfgrl.eval.claims import format_claims
from lightning_cfgrl.io.checkpoints import atomic_save_json, atomic_write

if TYPE_CHECKING:
    from lightning_cfgrl.eval.evaluation import EvaluationReport


@dataclass(frozen=True)
class EvaluationOutput:
    """What an evaluation writes and shows.

    Args:
        out: folder for ``results.csv``, ``results.json`` and ``quality_diversity.png`` (None: write nothing).
        log_dir: TensorBoard folder for the figure, hypervolumes and claims (None: no TensorBoard).
        progress: show a progress bar over candidates x seeds.
    """

    out: str | None = "runs/eval"
    log_dir: str | None = None
    progress: bool = True


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, tuples as lists, paths as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def report_dict(report: EvaluationReport) -> dict[str, Any]:
    """The JSON document of ``results.json`` (strict)."""
    settings = dict(report.settings)
    return strict_json(
        {
            "settings": {k: v for k, v in settings.items() if k != "machine"},
            "machine": settings.get("machine"),
            "results": [r.as_dict() for r in report.results],
            "selection": {
                "seeds": settings.get("selection_seeds", []),
                "best_temperature_top_p": report.best_sampling,
                "results": [r.as_dict() for r in report.selection],
            },
            "fronts": report.fronts,
            "hypervolumes": report.hypervolumes,
            "claims": [c.as_dict() for c in report.claims],
        }
    )


def write_report(report: EvaluationReport, out: Path | str | None, log_dir: Path | str | None = None) -> None:
    """Write the outputs into ``out`` and, when ``log_dir`` is given, to TensorBoard."""
    from lightning_cfgrl.eval.plotting import plot_quality_diversity

    settings = report.settings
    fig = plot_quality_diversity(
        report.results,
        settings["quality"],
        fronts=report.fronts.get(DIVERSITY, {}),
        reference=tuple(settings["reference_point"]),
        higher_is_better=settings["higher_is_better"],
    )
    if out is not None:
        out = Path(out)
        with atomic_write(out / "results.csv") as f:
            f.write(_csv(report).encode())
        atomic_save_json(report_dict(report), out / "results.json")
        with atomic_write(out / "quality_diversity.png") as f:
            fig.savefig(f, format="png", dpi=120)
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(log_dir)) as writer:
            writer.add_figure("evaluation/quality_diversity", fig)
            for metric, fronts in report.hypervolumes.items():
                for front, hv in fronts.items():
                    writer.add_scalar(f"evaluation/hypervolume/{metric}/{front}", hv)
            if report.claims:
                writer.add_text("evaluation/claims", format_claims(report.claims))
    import matplotlib.pyplot as plt

    plt.close(fig)


def _csv(report: EvaluationReport) -> str:
    metrics = list(report.results[0].metrics)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "candidate",
            "family",
            *[f"{m}_{s}" for m in metrics for s in ("mean", "se")],
            "forward_passes_per_token",
            "tokens_per_s",
        ]
    )
    for r in report.results:
        writer.writerow(
            [
                r.name,
                r.family,
                *[f"{v:.6g}" for m in metrics for v in r.metrics[m]],
                r.forward_passes_per_token,
                f"{r.tokens_per_s:.1f}",
            ]
        )
    return buffer.getvalue()


__all__ = ["EvaluationOutput", "report_dict", "strict_json", "write_report"]
