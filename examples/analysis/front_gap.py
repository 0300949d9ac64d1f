"""Where the CFG front's hypervolume advantage over the merged front comes from (claim (c)).

    python examples/analysis/front_gap.py        # reads benchmarks/results/recipe_claims_{music,hmm}.json

On the mean points (quality oriented so that higher is better, diversity as measured), the gap
``HV(CFG) - HV(merged)`` is split at the merged front's highest diversity ``d_max``: the part of the CFG
front's dominated area above ``d_max`` (the high-diversity corner no merged model reaches) and the rest
(the CFG front lying above the merged one where both exist). Also counts the merged models that a CFG
point strictly dominates. Saves ``benchmarks/results/front_gap.json`` with the machine and commit.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.io.checkpoints import atomic_save_json

RESULTS = Path("benchmarks/results")


def clipped_hypervolume(points, reference, top):
    """Hypervolume of ``points`` with diversity capped at ``top`` (the area below the line d = top)."""
    return hypervolume_2d([(q, min(d, top)) for q, d in points], reference)


def analyse(path: Path, metric: str = "diversity") -> dict:
    data = json.loads(path.read_text())
    ref = tuple(data["protocol"]["reference_point"])

    def points(family):
        rows = [r for r in data["results"] if r["family"] == family]
        return [r["name"] for r in rows], [
            (r["metrics"]["adherence"][0], r["metrics"][metric][0]) for r in rows
        ]

    cfg_names, cfg = points("cfg")
    merged_names, merged = points("merged")
    hv_cfg, hv_merged = hypervolume_2d(cfg, ref), hypervolume_2d(merged, ref)
    d_max = max(d for _, d in (merged[i] for i in pareto_front(merged)))
    corner = hv_cfg - clipped_hypervolume(cfg, ref, d_max)
    dominated = {
        merged_names[j]: [cfg_names[i] for i, (q, d) in enumerate(cfg) if q > mq and d > md]
        for j, (mq, md) in enumerate(merged)
    }
    gap = hv_cfg - hv_merged
    return {
        "file": path.name,
        "metric": metric,
        "hypervolume_cfg": hv_cfg,
        "hypervolume_merged": hv_merged,
        "gap": gap,
        "merged_max_diversity": d_max,
        "corner_area": corner,
        "corner_share_of_gap": corner / gap if gap > 0 else None,
        "merged_strictly_dominated_by": {k: v for k, v in dominated.items() if v},
    }


def main() -> None:
    rows = [analyse(RESULTS / f"recipe_claims_{name}.json") for name in ("music", "hmm")]
    for r in rows:
        share = r["corner_share_of_gap"]
        print(
            f"{r['file']}: HV CFG {r['hypervolume_cfg']:.3f} vs merged {r['hypervolume_merged']:.3f}; "
            f"corner above d={r['merged_max_diversity']:.3f}: {r['corner_area']:.3f}"
            + (f" = {share:.0%} of the gap" if share is not None else "")
            + f"; merged models strictly dominated by a CFG point: {r['merged_strictly_dominated_by']}"
        )
    out = RESULTS / "front_gap.json"
    atomic_save_json(
        {"command": "python examples/analysis/front_gap.py", "rows": rows, "machine": describe_machine()}, out
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
