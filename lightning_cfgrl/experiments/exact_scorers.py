"""Exact quality scorers of the synthetic domain (see :mod:`.synthetic_music`)."""

from __future__ import annotations

from torch import Tensor

from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.experiments.domain import TokenDomain
from lightning_cfgrl.experiments.synthetic_music import SyntheticMusic


class PromptAdherence(Scorer):
    """``log p*(prompt | frames)``, exact, uniform prompt prior; ``[N, 2, T], [N, A] -> [N]``."""

    name = "adherence"

    def __init__(self, domain: TokenDomain | None = None) -> None:
        self.domain = domain or SyntheticMusic()

    def __call__(self, frames: Tensor, condition: Tensor) -> Tensor:
        return self.domain.prompt_log_posterior(frames, condition).to(frames.device)


class LogLikelihood(Scorer):
    """``log p*(frames | prompt)`` per frame, exact (naturalness); ``[N, 2, T], [N, A] -> [N]``."""

    name = "log_likelihood"

    def __init__(self, domain: TokenDomain | None = None) -> None:
        self.domain = domain or SyntheticMusic()

    def __call__(self, frames: Tensor, condition: Tensor) -> Tensor:
        return (self.domain.log_likelihood(frames, condition) / frames.shape[-1]).to(frames.device)
