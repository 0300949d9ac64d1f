"""An own model for ``cfgrl``: a conditional GRU token LM, wrapped by ``ModuleAdapter`` in the YAMLs here.

``ConditionalGRU(tokens [B, K, T], condition [B, C]) -> logits [B, K, T, V]``: ``logits[t]`` predicts
``tokens[t + 1]`` (the usual wiring, ``ModuleAdapter(convention="next_token", bos_id=V)``). The condition is
the synthetic domain's prompt, C attribute ids (id 0 = no prompt, the CFG null condition).

Nothing here knows about ``lightning_cfgrl`` except ``spec()``, which records how to rebuild the model so
checkpoints can be evaluated and sampled later. Use it with every ``cfgrl`` command through ``--import``::

    cfgrl fit --import examples/own_model/gru_lm.py --config examples/own_model/pretrain.yaml
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_cfgrl.core.generator import class_spec


class ConditionalGRU(nn.Module):
    """A GRU over the sum of the K codebook embeddings, plus one embedding per prompt attribute.

    Args:
        num_codebooks: K.
        vocab_size: V (id V is the start token the adapter prepends).
        condition_sizes: values per prompt attribute (ids 1..n; 0 = null).
        dim: embedding and hidden size.
        num_layers: stacked GRU layers.
    """

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        condition_sizes: Sequence[int] = (4, 4, 3),
        dim: int = 64,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self._init_args = dict(
            num_codebooks=num_codebooks,
            vocab_size=vocab_size,
            condition_sizes=list(condition_sizes),
            dim=dim,
            num_layers=num_layers,
        )
        self.k, self.v = num_codebooks, vocab_size
        self.tokens = nn.ModuleList(nn.Embedding(vocab_size + 1, dim) for _ in range(num_codebooks))
        self.prompt = nn.ModuleList(nn.Embedding(n + 1, dim) for n in condition_sizes)
        self.rnn = nn.GRU(dim, dim, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(dim, num_codebooks * vocab_size)

    def spec(self) -> dict:
        """How checkpoints rebuild this model: ``{"class_path": "gru_lm.ConditionalGRU", "init_args": ...}``."""
        return class_spec(self, self._init_args)

    def forward(self, tokens: Tensor, condition: Tensor) -> Tensor:
        x = sum(emb(tokens[:, k]) for k, emb in enumerate(self.tokens))  # [B, T, D]
        prompt = sum(emb(condition[:, i]) for i, emb in enumerate(self.prompt))  # [B, D]
        h, _ = self.rnn(x + prompt[:, None])
        logits = self.head(h)  # [B, T, K * V]
        return logits.reshape(tokens.shape[0], tokens.shape[2], self.k, self.v).transpose(1, 2)
