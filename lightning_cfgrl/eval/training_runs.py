"""Training runs as the unit of a claim: pool candidates over training seeds, and test across runs.

A claim tested over evaluation seeds only says that *this trained model* beats its reference; whether the
*recipe* does needs the variance between training runs. Two views, both paired:

* :func:`pool_training_runs`: one candidate whose per-evaluation-seed values are the mean over training
  runs (same evaluation seeds): the claims of :func:`~lightning_cfgrl.eval.claims.check_claims` on
  pooled candidates average the training noise out but do not measure it.
* :func:`~lightning_cfgrl.eval.claims.paired_claim` on one difference per training run, each averaged
  over the evaluation seeds (``n`` = number of runs, so 3 runs give 2 degrees of freedom): this one does.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.stats import mean_se


def pool_training_runs(name: str, runs: Sequence[CandidateResult], family: str) -> CandidateResult:
    """One candidate per evaluation seed: the mean over ``runs`` (one per training seed, same eval seeds)."""
    if not runs:
        raise ValueError(f"pooling {name!r} needs at least one training run, got none")
    seeds = runs[0].seeds
    for run in runs[1:]:
        if run.seeds != seeds:
            raise ValueError(
                f"pooling {name!r}: {run.name} has evaluation seeds {run.seeds}, expected {seeds}"
            )
    per_seed = {
        key: [sum(r.per_seed[key][s] for r in runs) / len(runs) for s in range(len(seeds))]
        for key in runs[0].per_seed
    }
    return CandidateResult(
        name=name,
        metrics={key: mean_se(values) for key, values in per_seed.items()},
        forward_passes_per_token=runs[0].forward_passes_per_token,
        tokens_per_s=sum(r.tokens_per_s for r in runs) / len(runs),
        per_seed=per_seed,
        seeds=list(seeds),
        family=family,
    )


__all__ = ["pool_training_runs"]
