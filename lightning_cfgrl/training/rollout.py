"""What the objectives see each training step: the on-policy rollout and the student's logits on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_cfgrl.core.condition import Condition
from lightning_cfgrl.core.sampling import SamplingConfig, process_logits


@dataclass
class RolloutBatch:
    """One training step's data, shared by every objective callback.

    Attributes:
        steps: ``[N, K, S]`` sampled tokens in the generator's step domain, ``N = B * G``.
        condition: the prompts repeated per sample, batch ``N``.
        mask: ``[N, K, S]`` bool, True on generated token positions (delay padding is False).
        group_size: G samples per prompt; samples of one prompt are adjacent.
        student_logits: ``[N, K, S, V]`` the student's logits on ``steps`` (with grad).
        sampling: how the rollout was sampled (temperature, top-k/p).
        num_on_policy: rows ``[0, num_on_policy)`` are the student's own ``B * G`` samples; rows after
            them were contributed by objectives (e.g. teacher samples,
            ``lightning_cfgrl.experimental.TeacherMixDistillCallback``) and are off-policy. ``None``: every row is on-policy. A policy
            gradient must use only the on-policy rows (:meth:`on_policy_rows`).
        controls: ``{name: [N]}`` control values the rollout was sampled with and the student's logits
            were computed with (from the objectives' ``rollout_controls``; empty without controls).
        records: ``{"<objective>/<value>": [num_rows_on_policy]}`` per-sample values the objectives
            publish for logs (reward, advantage, divergence per token; detached, float64), read by
            :class:`~lightning_cfgrl.callbacks.CompletionLogCallback`.
    """

    steps: Tensor
    condition: Condition
    mask: Tensor
    group_size: int
    student_logits: Tensor
    sampling: SamplingConfig
    num_on_policy: int | None = None
    controls: dict[str, Tensor] = field(default_factory=dict)
    records: dict[str, Tensor] = field(default_factory=dict)
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def control(self, name: str) -> Tensor:
        """``[N]`` values of one control (fed by an objective with a range of values)."""
        if name not in self.controls:
            raise ValueError(
                f"the rollout carries no {name!r} control (it has {sorted(self.controls)}); build RolloutBatch "
                "with the controls from the objectives' rollout_controls, as CFGRLModule.training_step does"
            )
        return self.controls[name]

    def record(self, name: str, values: Tensor) -> None:
        """Publish one value per on-policy sample (``[num_rows_on_policy]``) under ``name`` for the logs."""
        values = values.detach().reshape(-1)
        if values.shape[0] != self.num_rows_on_policy:
            raise ValueError(
                f"record {name!r} must hold one value per on-policy sample ({self.num_rows_on_policy}), "
                f"got {values.shape[0]}"
            )
        self.records[name] = values.double()

    @property
    def num_rows_on_policy(self) -> int:
        return self.steps.shape[0] if self.num_on_policy is None else self.num_on_policy

    @property
    def num_prompts(self) -> int:
        return self.num_rows_on_policy // self.group_size

    def on_policy_rows(self) -> slice:
        """Index of the student's own samples (prompt-major, G adjacent per prompt)."""
        return slice(0, self.num_rows_on_policy)

    @property
    def token_logprobs(self) -> Tensor:
        """``[N, K, S]`` log-probs of the sampled tokens under the distribution actually sampled from
        (the student's logits after temperature / top-k / top-p), 0 where masked. Differentiable."""
        if "token_logprobs" not in self._cache:
            logp = torch.log_softmax(process_logits(self.student_logits.float(), self.sampling), dim=-1)
            ids = self.steps.clamp(max=logp.shape[-1] - 1).unsqueeze(-1)
            picked = logp.gather(-1, ids).squeeze(-1)
            self._cache["token_logprobs"] = torch.where(self.mask, picked, torch.zeros_like(picked))
        return self._cache["token_logprobs"]

    @property
    def sequence_logprobs(self) -> Tensor:
        """``[N]`` log pi(y | x) summed over generated tokens."""
        return self.token_logprobs.sum(dim=(1, 2))
