"""Evaluation on the quality-diversity plane: scorers, per-candidate evaluation, Pareto fronts and
hypervolumes, the claims check, plots and a torchmetrics diversity metric."""

from lightning_cfgrl.eval.candidates import CandidateResult, evaluate_candidate, format_table
from lightning_cfgrl.eval.claims import Claim, check_claims, format_claims
from lightning_cfgrl.eval.diversity import group_pairwise_diversity, pairwise_cosine_diversity
from lightning_cfgrl.eval.metrics import PairwiseDiversity
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.eval.scorers import Scorer

__all__ = [
    "CandidateResult",
    "Claim",
    "PairwiseDiversity",
    "Scorer",
    "check_claims",
    "evaluate_candidate",
    "format_claims",
    "format_table",
    "group_pairwise_diversity",
    "hypervolume_2d",
    "pairwise_cosine_diversity",
    "pareto_front",
]
