"""The steerable study's claims recomputed with the current estimators, from the per-seed values it saved.

    python examples/analysis/recompute_steerable_claims.py   # rewrites steerable_{synthetic,hmm}.json's claims

``examples/steerable_study.py`` samples every candidate and saves each one's per-seed metrics. The claims
are pure functions of those values, so the current estimators (cross-fitted hypervolumes, Holm-adjusted
p-values, :mod:`lightning_cfgrl.eval.claims`) apply without sampling again: the roles are rebuilt the way
:meth:`lightning_cfgrl.eval.Evaluation.summarize` builds them (the best temperature / top-p point is
the one the saved selection seeds chose). The file keeps its ``machine`` (where the samples were
measured); ``claims_recomputed`` records the command, machine and commit that recomputed the claims,
and ``claims_before_recompute`` keeps the claims the file had.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.claims import Claim, ClaimInputs, check_claims, format_claims
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.io.checkpoints import atomic_save_json

RESULTS = Path("benchmarks/results")
SAMPLING_FAMILIES = ("temperature", "top_p")


def recompute(data: dict) -> list[dict]:
    results = [CandidateResult(**r) for r in data["results"]]
    settings = data["settings"]
    selection = [CandidateResult(**r) for r in data["selection"]["results"]]
    sign = 1.0 if settings["higher_is_better"] else -1.0
    quality = settings["quality"]
    chosen = max(selection, key=lambda r: sign * r.mean(quality)).name
    if chosen != data["selection"]["best_temperature_top_p"]:
        raise ValueError(
            f"the saved selection chose {data['selection']['best_temperature_top_p']}, not {chosen}"
        )
    by_role = {name: r for r in results for name in r.setting.get("roles", [])}
    family = {f: [r for r in results if r.family == f] for f in ("cfg", "merged", "steerable")}
    inputs = ClaimInputs(
        quality=quality,
        sign=sign,
        chance=settings["chance"],
        reference=tuple(settings["reference_point"]),
        diversity_metrics=list(settings["embedders"]),
        cfg_reference=next((r for r in results if r.setting.get("cfg_reference")), None),
        quality_model=by_role.get("quality_model"),
        diversity_model=by_role.get("diversity_model"),
        placebo=next((r for r in results if r.family == "placebo"), None),
        best_sampling=next(r for r in results if r.name == chosen),
        cfg=family["cfg"],
        sampling=[r for r in results if r.family in SAMPLING_FAMILIES],
        merged=family["merged"],
        steerable=family["steerable"],
        fraction=settings["fraction"],
    )
    return [c.as_dict() for c in check_claims(inputs)]


def main() -> None:
    for name in ("synthetic", "hmm"):
        path = RESULTS / f"steerable_{name}.json"
        data = json.loads(path.read_text())
        claims = recompute(data)
        data.setdefault("claims_before_recompute", data["claims"])
        data["claims"] = claims
        data["claims_recomputed"] = {
            "command": "python examples/analysis/recompute_steerable_claims.py",
            "estimators": "cross-fitted hypervolumes, Holm-adjusted p-values (lightning_cfgrl.eval.claims)",
            "machine": describe_machine(),
        }
        atomic_save_json(data, path)
        print(f"{path}\n{format_claims([Claim(**c) for c in claims])}")


if __name__ == "__main__":
    main()
