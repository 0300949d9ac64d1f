"""Two small GRU token LMs, one per ``ModuleAdapter`` convention, with interchangeable weights.

``NextTokenGRU``: ``logits[t]`` predicts ``tokens[t + 1]`` (the adapter prepends its start token).
``ShiftingGRU``: prepends its own start token, so ``logits[t]`` predicts ``tokens[t]``. Built with the
same seed, the two wrapped correctly give identical logits. ``NoSpecGRU`` is ``NextTokenGRU`` without
``spec()`` (a model whose checkpoints cannot record how to build it).

``RecurrentGRU`` / ``RecurrentShiftingGRU``: the same networks with a ``step`` method that carries the GRU's
hidden state ``[layers, B, D]`` (the incremental-decoding example of ``ModuleAdapter``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_cfgrl.core.generator import class_spec


class NextTokenGRU(nn.Module):
    """``forward(tokens [B, K, T], condition [B]) -> logits [B, K, T, V]``; id V is the start token,
    condition id 0 the null prompt."""

    def __init__(
        self, num_codebooks: int = 2, vocab_size: int = 8, dim: int = 16, bidirectional: bool = False
    ):
        super().__init__()
        self._init_args = dict(
            num_codebooks=num_codebooks, vocab_size=vocab_size, dim=dim, bidirectional=bidirectional
        )
        self.k, self.v = num_codebooks, vocab_size
        self.emb = nn.Embedding(vocab_size + 1, dim)
        self.cond = nn.Embedding(5, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(dim * (2 if bidirectional else 1), num_codebooks * vocab_size)

    def spec(self) -> dict:
        return class_spec(self, self._init_args)

    def forward(self, tokens: Tensor, condition: Tensor) -> Tensor:
        h, _ = self.rnn(self.emb(tokens).sum(1) + self.cond(condition)[:, None])
        return self.out(h).reshape(tokens.shape[0], tokens.shape[2], self.k, self.v).transpose(1, 2)


class ShiftingGRU(NextTokenGRU):
    """The same network, but it prepends its own start token (id V) and drops the last input."""

    def forward(self, tokens: Tensor, condition: Tensor) -> Tensor:
        start = torch.full_like(tokens[..., :1], self.v)
        return super().forward(torch.cat([start, tokens[..., :-1]], dim=-1), condition)


class NoSpecGRU(NextTokenGRU):
    spec = None  # type: ignore[assignment]


class RecurrentGRU(NextTokenGRU):
    """``NextTokenGRU`` (``num_layers`` stacked GRUs) with an incremental ``step``: the GRU's hidden state
    is the whole cache."""

    def __init__(self, num_codebooks: int = 2, vocab_size: int = 8, dim: int = 16, num_layers: int = 1):
        super().__init__(num_codebooks, vocab_size, dim)
        self._init_args = dict(
            num_codebooks=num_codebooks, vocab_size=vocab_size, dim=dim, num_layers=num_layers
        )
        self.rnn = nn.GRU(dim, dim, num_layers, batch_first=True)

    def step(self, tokens: Tensor, state: Tensor | None, condition: Tensor) -> tuple[Tensor, Tensor]:
        """``tokens [B, K, 1]`` (the input at the next position), ``state [layers, B, D]`` or None ->
        (logits ``[B, K, 1, V]``, new state)."""
        h, state = self.rnn(self.emb(tokens).sum(1) + self.cond(condition)[:, None], state)
        return self.out(h).view(tokens.shape[0], 1, self.k, self.v).transpose(1, 2), state


class RecurrentShiftingGRU(RecurrentGRU, ShiftingGRU):
    """``ShiftingGRU`` with a ``step``; ``tokens=None`` at the first position means its own start token."""

    forward = ShiftingGRU.forward

    def step(self, tokens: Tensor | None, state: Tensor | None, condition: Tensor) -> tuple[Tensor, Tensor]:
        if tokens is None:
            tokens = torch.full((condition.shape[0], self.k, 1), self.v, device=condition.device)
        return super().step(tokens, state, condition)
