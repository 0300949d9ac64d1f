"""``PairwiseDiversity``: a torchmetrics metric of within-prompt diversity that syncs across processes."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity


class PairwiseDiversity(Metric):
    """Mean over prompts of the mean pairwise ``1 - cos`` between the embeddings of a prompt's samples.

    ``update(embeddings [B, G, D])`` adds B prompts (G >= 2 samples each); ``compute()`` returns the mean
    per-prompt diversity over every prompt seen, on every process (states are summed across processes,
    so the result equals the metric computed on all the data at once).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    total: Tensor
    count: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # float64 sum: many small per-prompt values, and the sum must not depend on the order of merging
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, embeddings: Tensor) -> None:
        """``embeddings [B, G, D]``: G samples of each of B prompts."""
        per_prompt = pairwise_cosine_diversity(embeddings)  # [B]
        self.total += per_prompt.double().sum()
        self.count += per_prompt.shape[0]

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise ValueError("PairwiseDiversity.compute() called before any update(); no prompts were seen")
        return (self.total / self.count).float()
