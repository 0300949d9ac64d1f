"""Evaluation on the quality-diversity plane: scorers, per-candidate evaluation, the ``Evaluation``
runner behind ``cfgrl evaluate``, Pareto fronts and hypervolumes, the claims with their statistics,
plots and a torchmetrics diversity metric."""

from lightning_cfgrl.eval.candidates import CandidateResult, Measurement, evaluate_candidate, format_table
from lightning_cfgrl.eval.claims import Claim, ClaimInputs, check_claims, format_claims
from lightning_cfgrl.eval.diversity import group_pairwise_diversity, pairwise_cosine_diversity
from lightning_cfgrl.eval.evaluation import Evaluation, EvaluationReport
from lightning_cfgrl.eval.metrics import PairwiseDiversity
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.eval.plan import Candidates
from lightning_cfgrl.eval.prompts import PromptSource, load_prompts
from lightning_cfgrl.eval.protocol import EvaluationProtocol
from lightning_cfgrl.eval.report import EvaluationOutput
from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.eval.stats import mean_se, paired_t_test, student_t_sf

__all__ = [
    "CandidateResult",
    "Candidates",
    "Claim",
    "ClaimInputs",
    "Evaluation",
    "EvaluationOutput",
    "EvaluationProtocol",
    "EvaluationReport",
    "Measurement",
    "PairwiseDiversity",
    "PromptSource",
    "Scorer",
    "check_claims",
    "evaluate_candidate",
    "format_claims",
    "format_table",
    "group_pairwise_diversity",
    "hypervolume_2d",
    "load_prompts",
    "mean_se",
    "paired_t_test",
    "pairwise_cosine_diversity",
    "pareto_front",
    "student_t_sf",
]
