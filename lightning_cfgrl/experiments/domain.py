"""What a built-in synthetic domain is: compositional prompts, a sampler and exact scores.

A domain's prompts are every combination of its attributes, given to models as 1-based attribute ids
``[B, A]`` (0 is the null prompt). Subclasses define the generative process (``sample``) and its
exact scores (``log_likelihood``: ``log p*(y | x)``; ``prompt_log_posterior``: ``log p*(x | y)`` under a
uniform prompt prior); datamodules, scorers and the judge work with any subclass.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor


class TokenDomain(ABC):
    """Base class of the synthetic domains (plain torch, CPU, deterministic from their seed).

    Subclasses set ``num_codebooks``, ``attribute_names`` and, in ``__init__``, ``vocab_size``,
    ``num_frames`` and ``attribute_sizes`` (then call :meth:`_init_prompts`).
    """

    num_codebooks: ClassVar[int]
    attribute_names: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    vocab_size: int
    num_frames: int
    attribute_sizes: tuple[int, ...]
    prompts: Tensor  # [P, A], every attribute combination

    def _init_prompts(self, attribute_sizes: Sequence[int]) -> None:
        if len(attribute_sizes) < 1 or any(int(n) < 1 for n in attribute_sizes):
            raise ValueError(
                f"attribute_sizes must be a non-empty list of sizes >= 1, got {tuple(attribute_sizes)}"
            )
        self.attribute_sizes = tuple(int(n) for n in attribute_sizes)
        self.prompts = torch.tensor(
            list(itertools.product(*[range(1, n + 1) for n in self.attribute_sizes])), dtype=torch.long
        )

    @property
    def num_prompts(self) -> int:
        return self.prompts.shape[0]

    def prompt_index(self, prompts: Tensor) -> Tensor:
        """``[B, A]`` attribute ids -> ``[B]`` row index into ``self.prompts``."""
        self.check_prompts(prompts)
        index = torch.zeros(prompts.shape[0], dtype=torch.long)
        for a, n in enumerate(self.attribute_sizes):
            index = index * n + (prompts[:, a].cpu() - 1)
        return index

    def check_prompts(self, prompts: Tensor) -> None:
        if (
            not isinstance(prompts, Tensor)
            or prompts.dim() != 2
            or prompts.shape[1] != len(self.attribute_sizes)
        ):
            shape = tuple(prompts.shape) if isinstance(prompts, Tensor) else type(prompts).__name__
            raise ValueError(f"prompts must be attribute ids [B, {len(self.attribute_sizes)}], got {shape}")
        p = prompts.cpu()
        if p.dtype != torch.long:
            raise ValueError(f"prompts must be int64 attribute ids, got dtype {p.dtype}")
        if bool(((p < 1) | (p > torch.tensor(self.attribute_sizes))).any()):
            raise ValueError(
                f"prompt ids must be in [1, n] per slot with n = {self.attribute_sizes}, got {p.tolist()[:4]}..."
            )

    def check_frames(self, frames: Tensor) -> None:
        expected = (self.num_codebooks, self.num_frames)
        if not isinstance(frames, Tensor) or frames.dim() != 3 or tuple(frames.shape[1:]) != expected:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(f"frames must have shape [B, {expected[0]}, {expected[1]}], got {shape}")
        if frames.dtype != torch.long or bool(((frames < 0) | (frames >= self.vocab_size)).any()):
            raise ValueError(f"frames must be int64 ids in [0, {self.vocab_size}), got dtype {frames.dtype}")

    def describe(self, prompt: Tensor) -> str:
        """``[A]`` ids -> the attribute names, e.g. "jazz, dark, fast"."""
        names = list(self.attribute_names.values())
        return ", ".join(
            names[a][i - 1] if a < len(names) and 0 < i <= len(names[a]) else f"{a}:{i}"
            for a, i in enumerate(prompt.tolist())
        )

    @abstractmethod
    def sample(self, prompts: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """One sequence per prompt: ``[B, A]`` -> frames ``[B, K, T]`` int64."""

    @abstractmethod
    def log_likelihood(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """Exact ``log p*(frames | prompt)``: ``[B, K, T]``, ``[B, A]`` -> ``[B]`` float64 (nats)."""

    @abstractmethod
    def prompt_log_posterior(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """Exact adherence ``log p*(prompt | frames)``, uniform prompt prior: ``[B]`` float64 (<= 0)."""
