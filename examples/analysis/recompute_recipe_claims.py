"""A recipe-claims file's claims recomputed with the current estimators, from the per-seed values it saved.

    python examples/analysis/recompute_recipe_claims.py hmm   # rewrites recipe_claims_hmm.json's claims

``examples/recipe_study.py claims`` saves every candidate's per-seed metrics (pooled over training seeds)
and the per-training-seed students. The claims are pure functions of those values, so the current
estimators (cross-fitted hypervolumes, Holm-adjusted p-values, :mod:`lightning_cfgrl.eval.claims`) apply
without training or sampling again; the roles are those ``cmd_claims`` gives (CFG g = 3 the reference,
the best temperature / top-p point the one the file's selection seeds chose). Metrics the file does
not have (naturalness, the latent-mode diversity) need the full rerun. The file keeps its ``machine``
(where the samples were measured); ``claims_recomputed`` records the command, machine and commit that
recomputed the claims, and ``claims_before_recompute`` keeps the claims the file had.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.claims import Claim, ClaimInputs, check_claims, format_claims
from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.eval.training_runs import training_run_claims
from lightning_cfgrl.io.checkpoints import atomic_save_json

RESULTS = Path("benchmarks/results")
REFERENCE, FRACTION = "CFG g=3", 0.95  # examples/recipe_study.py's REFERENCE_GUIDANCE and FRACTION


def recompute(data: dict) -> list[Claim]:
    results = {r["name"]: CandidateResult(**r) for r in data["results"]}
    family = {f: [r for r in results.values() if r.family == f] for f in ("cfg", "merged")}
    sampling = [r for r in results.values() if r.family in ("temperature", "top_p")]
    beta = f"{data['beta']:g}"
    metrics = [
        m for m in ("diversity", "latent_diversity", "reward_diversity") if m in results[REFERENCE].metrics
    ]
    chance = data["protocol"]["chance"]
    reference = results[REFERENCE]
    inputs = ClaimInputs(
        quality="adherence",
        sign=1.0,
        chance=chance,
        reference=tuple(data["protocol"]["reference_point"]),
        diversity_metrics=metrics,
        cfg_reference=reference,
        quality_model=results["distilled beta=0"],
        diversity_model=results[f"distilled beta={beta}"],
        placebo=results["placebo (shuffled rewards)"],
        best_sampling=results[data["best_sampling"]],
        cfg=family["cfg"],
        sampling=sampling,
        merged=family["merged"],
        fraction=FRACTION,
    )
    claims = check_claims(inputs)
    # the per-training-seed claims, as cmd_claims computes them
    trained = {k: [CandidateResult(**r) for r in v] for k, v in data["per_training_seed"].items()}
    diversity = f"beta={beta}"
    claims += training_run_claims(
        inputs, trained["beta=0"], trained[diversity], trained["placebo"], diversity
    )
    return claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain", choices=("music", "hmm"))
    args = parser.parse_args()
    path = RESULTS / f"recipe_claims_{args.domain}.json"
    data = json.loads(path.read_text())
    claims = recompute(data)
    data.setdefault("claims_before_recompute", data["claims"])
    data["claims"] = [c.as_dict() for c in claims]
    data["claims_recomputed"] = {
        "command": f"python examples/analysis/recompute_recipe_claims.py {args.domain}",
        "estimators": "cross-fitted hypervolumes, Holm-adjusted p-values (lightning_cfgrl.eval.claims)",
        "machine": describe_machine(),
    }
    atomic_save_json(data, path)
    print(f"{path}\n{format_claims(claims)}")


if __name__ == "__main__":
    main()
