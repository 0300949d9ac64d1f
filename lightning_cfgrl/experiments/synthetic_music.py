"""A synthetic "music" token domain with a known generative process and exact scores.

Prompts are compositional: ``genre x mood x tempo`` (4 x 4 x 3 = 48 by default), given to models as
attribute ids ``[B, 3]`` (1-based; 0 is the null prompt). A sequence has K = 2 codebooks over T frames:

* a latent *section mode* z (one of M, uniform) picks a strong shared transition matrix for the coarse
  codebook 0 — the shared prior, common to all prompts, with several distinct modes per prompt;
* each prompt attribute adds a *weak* bias over codebook-0 tokens (the prompt signal), so prompts that
  share an attribute overlap and telling them apart from a sample is hard;
* codebook 1 is a residual: it depends strongly on codebook 0 *of the same frame* and on its own
  previous token, not on the prompt (a model must see c0_t before predicting c1_t: the delay pattern).

::

    z ~ Uniform(M)
    c0_0 ~ softmax(init[z] + bias(x)),   c0_t ~ softmax(L[z, c0_{t-1}] + bias(x))
    c1_t ~ softmax(R[c0_t] + Q[c1_{t-1}])          (Q[start] for t = 0)

Because the prompt's effect is weak beside the shared prior, a model under-uses it; CFG amplifies
exactly the prompt-specific part (``bias(x)`` minus its average), while lowering the temperature
mostly sharpens the shared prior. Exact scores, by summing out z:

* ``log_likelihood``: ``log p*(tokens | prompt)`` (naturalness);
* ``prompt_log_posterior``: ``log p*(prompt | tokens)`` under a uniform prior over prompts (adherence,
  the analogue of the paper's text-adherence score).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

from lightning_cfgrl.experiments.domain import TokenDomain

ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "genre": ("ambient", "techno", "jazz", "folk"),
    "mood": ("calm", "happy", "dark", "epic"),
    "tempo": ("slow", "medium", "fast"),
}


class SyntheticMusic(TokenDomain):
    """The generative process and its exact scores (plain torch, CPU, deterministic from ``seed``).

    Args:
        vocab_size: V tokens per codebook.
        num_frames: T frames per sequence.
        num_modes: M latent section modes.
        attribute_sizes: values per attribute slot (genre, mood, tempo).
        prior_scale: std of the shared transition logits (the strong prior).
        prompt_scale: std of each attribute's token bias (the weak prompt signal).
        residual_scale: std of codebook 1's dependence on codebook 0 of the same frame.
        seed: seeds the process parameters.
    """

    num_codebooks = 2
    attribute_names = ATTRIBUTE_NAMES

    def __init__(
        self,
        vocab_size: int = 32,
        num_frames: int = 32,
        num_modes: int = 4,
        attribute_sizes: Sequence[int] = (4, 4, 3),
        prior_scale: float = 2.5,
        prompt_scale: float = 0.45,
        residual_scale: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.vocab_size = vocab_size
        self.num_frames = num_frames
        self.num_modes = num_modes
        self._init_prompts(attribute_sizes)
        rng = torch.Generator().manual_seed(seed)
        v, m = vocab_size, num_modes

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=rng, dtype=torch.float64)

        self.init_logits = prior_scale * randn(m, v)  # [M, V]
        self.transition_logits = prior_scale * randn(m, v, v)  # [M, V_prev, V_next]
        self.attribute_bias = [prompt_scale * randn(n, v) for n in self.attribute_sizes]  # each [n, V]
        self.residual_logits = residual_scale * randn(v, v)  # R[c0_t, c1_t]
        self.residual_memory = randn(v + 1, v)  # Q[c1_{t-1} or start, c1_t]

        bias = self._prompt_bias(self.prompts)  # [P, V]
        self._log_init = torch.log_softmax(self.init_logits[None] + bias[:, None], -1)  # [P, M, V]
        self._log_trans = torch.log_softmax(
            self.transition_logits[None] + bias[:, None, None], -1
        )  # [P, M, V, V]
        self._log_residual = torch.log_softmax(
            self.residual_logits[None, :, :] + self.residual_memory[:, None, :], -1
        )  # [V+1 (c1 prev), V (c0), V (c1)]

    def _prompt_bias(self, prompts: Tensor) -> Tensor:
        """``[B, A]`` 1-based attribute ids -> ``[B, V]`` summed token bias."""
        return sum(table[prompts[:, a] - 1] for a, table in enumerate(self.attribute_bias))

    # -- sampling -----------------------------------------------------------------------------------
    def sample(self, prompts: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """Draw one sequence per prompt: ``[B, A]`` -> frames ``[B, 2, T]`` int64."""
        index = self.prompt_index(prompts)
        b, t_len = index.shape[0], self.num_frames
        z = torch.randint(self.num_modes, (b,), generator=rng)
        c0 = torch.empty(b, t_len, dtype=torch.long)
        c1 = torch.empty(b, t_len, dtype=torch.long)
        c0[:, 0] = torch.multinomial(self._log_init[index, z].exp(), 1, generator=rng)[:, 0]
        for t in range(1, t_len):
            probs = self._log_trans[index, z, c0[:, t - 1]].exp()
            c0[:, t] = torch.multinomial(probs, 1, generator=rng)[:, 0]
        prev = torch.full((b,), self.vocab_size, dtype=torch.long)
        for t in range(t_len):
            c1[:, t] = torch.multinomial(self._log_residual[prev, c0[:, t]].exp(), 1, generator=rng)[:, 0]
            prev = c1[:, t]
        return torch.stack([c0, c1], dim=1)

    # -- exact scores -------------------------------------------------------------------------------
    def _coarse_log_likelihood_all(self, frames: Tensor) -> Tensor:
        """``[B, 2, T]`` -> ``[B, P]``: ``log p*(codebook 0 | prompt p)`` for every prompt, z summed out."""
        ll = self._coarse_log_likelihood_modes(frames)  # [P, M, B]
        ll = torch.logsumexp(ll, dim=1) - torch.log(torch.tensor(float(self.num_modes), dtype=ll.dtype))
        return ll.T  # [B, P]

    def _coarse_log_likelihood_modes(self, frames: Tensor) -> Tensor:
        """``[B, 2, T]`` -> ``[P, M, B]``: ``log p*(codebook 0 | prompt p, mode z)``."""
        self.check_frames(frames)
        c0 = frames[:, 0].cpu()
        v = self.vocab_size
        ll = self._log_init[:, :, c0[:, 0]]  # [P, M, B]
        pairs = c0[:, :-1] * v + c0[:, 1:]  # [B, T-1] flattened (prev, next)
        trans = rearrange(self._log_trans, "p m i j -> p m (i j)")[:, :, pairs]  # [P, M, B, T-1]
        return ll + trans.sum(-1)

    def _residual_log_likelihood(self, frames: Tensor) -> Tensor:
        c0, c1 = frames[:, 0].cpu(), frames[:, 1].cpu()
        prev = torch.cat([torch.full_like(c1[:, :1], self.vocab_size), c1[:, :-1]], dim=1)
        return self._log_residual[prev, c0, c1].sum(-1)  # [B]

    def log_likelihood(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """Exact ``log p*(frames | prompt)``: ``[B, 2, T]``, ``[B, A]`` -> ``[B]`` float64 (nats)."""
        index = self.prompt_index(prompts)
        coarse = self._coarse_log_likelihood_all(frames)
        return coarse[torch.arange(len(index)), index] + self._residual_log_likelihood(frames)

    def prompt_log_posterior(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """Exact adherence ``log p*(prompt | frames)`` under a uniform prompt prior: ``[B]`` float64 (<= 0)."""
        index = self.prompt_index(prompts)
        coarse = self._coarse_log_likelihood_all(frames)  # the residual term cancels
        return coarse[torch.arange(len(index)), index] - torch.logsumexp(coarse, dim=1)

    def mode_log_posterior(self, frames: Tensor) -> Tensor:
        """Exact ``log p*(z | frames)`` of the latent section mode, prompts summed out under a uniform
        prior: ``[B, 2, T]`` -> ``[B, M]`` float64 (the residual codebook does not depend on z)."""
        ll = torch.logsumexp(self._coarse_log_likelihood_modes(frames), dim=0)  # [M, B]
        return torch.log_softmax(ll.T, dim=1)
