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
from lightning_cfgrl.eval.claims import Claim, ClaimInputs, paired_claim
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


def training_run_claims(
    inputs: ClaimInputs,
    quality_runs: Sequence[CandidateResult],
    diversity_runs: Sequence[CandidateResult],
    placebo_runs: Sequence[CandidateResult],
    diversity_label: str,
) -> list[Claim]:
    """Claims (a) and (b) vs the placebo with training runs as the unit: one paired difference per run
    (each run averaged over the evaluation seeds), beside :func:`~lightning_cfgrl.eval.claims.check_claims`
    on the pooled candidates. ``inputs`` gives the quality metric, its sign and chance, the CFG reference,
    the fraction and the diversity metrics; the runs are in training-seed order (run i of each list is the
    same training seed). Keys ``a_train_seeds`` and ``b_vs_placebo_train_seeds`` (one per metric)."""
    if inputs.cfg_reference is None:
        raise ValueError(
            "training_run_claims needs inputs.cfg_reference (the CFG point claim (a) is measured against)"
        )
    q, sign, chance = inputs.quality, inputs.sign, inputs.chance
    gain = sign * (inputs.cfg_reference.mean(q) - chance)
    name = inputs.cfg_reference.name
    claims = [
        paired_claim(
            "a_train_seeds",
            f"beta=0 reaches {inputs.fraction:.0%} of {name}'s gain (per training seed)",
            [sign * (m.mean(q) - chance) - inputs.fraction * gain for m in quality_runs],
            q,
            "fractions " + ", ".join(f"{sign * (m.mean(q) - chance) / gain:.1%}" for m in quality_runs),
        )
    ]
    for metric in inputs.diversity_metrics:
        b, p = ([m.mean(metric) for m in runs] for runs in (diversity_runs, placebo_runs))
        claims.append(
            paired_claim(
                "b_vs_placebo_train_seeds",
                f"{diversity_label} more diverse than its placebo (per training seed)",
                [x - y for x, y in zip(b, p, strict=True)],
                metric,
                ", ".join(f"{x:.4f} vs {y:.4f}" for x, y in zip(b, p, strict=True)),
            )
        )
    return claims


__all__ = ["pool_training_runs", "training_run_claims"]
