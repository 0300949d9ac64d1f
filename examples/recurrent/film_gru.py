"""A recurrent token model with FiLM conditioning: a family the recipe was not chosen on.

``FilmGRU`` is a TokenGenerator (see ``lightning_cfgrl.core.generator``) built from scratch: a stacked GRU
over the delay-patterned steps, whose input and output are modulated per sequence by FiLM (Perez et al.
2018, "FiLM: Visual Reasoning with a General Conditioning Layer") from the prompt's attribute embeddings.
Attribute id 0 of every slot is a learned null, so CFG's unconditional pass is the same network with the
null prompt (train the base with condition dropout). Incremental decoding keeps the GRU's hidden state
as the cache, so sampling is O(S) per sequence.

Use it in any shipped YAML by swapping only the generator (and the checkpoints it reads):

    model:
      init_args:
        generator:
          class_path: examples.recurrent.film_gru.FilmGRU
          init_args: {num_codebooks: 2, vocab_size: 32, condition_sizes: [4, 4, 3], dim: 96, num_layers: 2}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.generator import class_spec


class GRUCache:
    """The hidden state ``[L, B, D]`` after ``steps`` consumed steps (the sampler's cache)."""

    def __init__(self) -> None:
        self.hidden: Tensor | None = None
        self.steps = 0
        self.film: tuple[Tensor, Tensor, Tensor, Tensor] | None = None


class FilmGRU(nn.Module):
    """``forward(steps [B, K, S], condition [B, A], cache=None) -> logits [B, K, S - cached, V]``.

    Args:
        num_codebooks: K.
        vocab_size: V (id V is the start/pad id of step tensors).
        condition_sizes: values per prompt slot (ids 1..n; 0 is the learned null).
        dim: embedding and GRU width D.
        num_layers: stacked GRU layers.
    """

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        condition_sizes: Sequence[int] = (4, 4, 3),
        dim: int = 96,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        self._init_args = dict(
            num_codebooks=num_codebooks,
            vocab_size=vocab_size,
            condition_sizes=list(condition_sizes),
            dim=dim,
            num_layers=num_layers,
        )
        self.num_codebooks, self.vocab_size = num_codebooks, vocab_size
        self.condition_sizes = tuple(int(n) for n in condition_sizes)
        self.pattern = DelayPattern.musicgen(num_codebooks)
        self.token_emb = nn.ModuleList(nn.Embedding(vocab_size + 1, dim) for _ in range(num_codebooks))
        self.cond_emb = nn.ModuleList(nn.Embedding(n + 1, dim) for n in self.condition_sizes)
        # FiLM: per-sequence scale and shift of the GRU's input and of its output, from the prompt
        self.film = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 4 * dim))
        self.rnn = nn.GRU(dim, dim, num_layers=num_layers, batch_first=True)
        self.norm_in, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codebooks * vocab_size)
        nn.init.zeros_(self.film[-1].weight)  # starts as an unconditioned GRU; FiLM learns the prompt
        nn.init.zeros_(self.film[-1].bias)

    def spec(self) -> dict:
        return class_spec(self, self._init_args)

    def null_condition(self, condition: Tensor) -> Tensor:
        return torch.zeros_like(condition)

    def new_cache(self, batch_size: int, max_steps: int) -> GRUCache:
        return GRUCache()

    def _film(self, condition: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``condition [B, A]`` -> four ``[B, 1, D]`` (input scale, input shift, output scale, output shift)."""
        if condition.dim() != 2 or condition.shape[1] != len(self.condition_sizes):
            raise ValueError(
                f"condition must be [B, {len(self.condition_sizes)}] attribute ids, got {tuple(condition.shape)}"
            )
        c = sum(emb(condition[:, i]) for i, emb in enumerate(self.cond_emb))
        return tuple(part[:, None] for part in self.film(c).chunk(4, dim=-1))  # type: ignore[return-value]

    def forward(self, steps: Tensor, condition: Tensor, cache: GRUCache | None = None) -> Tensor:
        start = 0 if cache is None else cache.steps
        # position s reads step s - 1 (the start id V at s = 0): logits[s] never see steps[s]
        inputs = torch.cat([torch.full_like(steps[:, :, :1], self.vocab_size), steps[:, :, :-1]], dim=2)
        inputs = inputs[:, :, start:]
        x = sum(emb(inputs[:, k]) for k, emb in enumerate(self.token_emb))  # [B, S', D]
        film = self._film(condition) if cache is None or cache.film is None else cache.film
        scale_in, shift_in, scale_out, shift_out = film
        x = self.norm_in(x) * (1 + scale_in) + shift_in
        h, hidden = self.rnn(x, None if cache is None else cache.hidden)
        h = self.norm_out(h) * (1 + scale_out) + shift_out
        if cache is not None:
            cache.hidden, cache.steps, cache.film = hidden, steps.shape[2], film
        logits = self.head(h)  # [B, S', K * V]
        b, s = logits.shape[:2]
        return logits.view(b, s, self.num_codebooks, self.vocab_size).transpose(1, 2)
