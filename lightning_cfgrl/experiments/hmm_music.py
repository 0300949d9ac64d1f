"""A second synthetic "music" domain: a hidden Markov model of sections, with exact scores.

Prompts are compositional: ``style x harmony x density`` (4 x 4 x 3 = 48 by default), given to models as
attribute ids ``[B, 3]`` (1-based; 0 is the null prompt). A sequence has K = 3 codebooks over T frames.
Unlike :class:`~lightning_cfgrl.experiments.SyntheticMusic`, whose coarse tokens are
themselves a Markov chain, here the tokens are *emissions* of a hidden section chain s_t (S states,
e.g. "chords") that no codebook reveals: the next token depends on the whole past through the belief
over s_t, and exact scores need the forward algorithm.

* a latent *groove* m (one of M, uniform) picks a strong shared, sticky section-transition matrix, the
  coarse emissions of every section, and the fine codebook's memory — the shared prior, several
  distinct modes per prompt;
* each prompt attribute adds a *weak* bias over the next section and over coarse tokens (the prompt
  signal), so prompts that share an attribute overlap and telling them apart from a sample is hard;
* codebook 1 depends on codebook 0 *of the same frame* and on the hidden section (so it is evidence
  about s_t); codebook 2 on codebook 1 of the same frame and on its own previous token, under the
  groove (evidence about m). Neither sees the prompt directly.

::

    m ~ Uniform(M)
    s_0 ~ softmax(start[m] + a(x)),          s_t ~ softmax(trans[m, s_{t-1}] + stay * I + a(x))
    c0_t ~ softmax(emit[m, s_t] + e(x))
    c1_t ~ softmax(R1[c0_t] + H[s_t])
    c2_t ~ softmax(R2[c1_t] + Q[m, c2_{t-1}])            (Q[m, start] for t = 0)

with ``a(x) = sum_i A_i[x_i]`` (over sections) and ``e(x) = sum_i E_i[x_i]`` (over tokens). Because the
prompt's effect is weak beside the shared prior, a briefly trained model under-uses it; CFG amplifies
the prompt-specific part while lowering the temperature mostly sharpens the shared prior. Exact
scores, by the forward algorithm over s and a sum over m (vectorised over ``[P, M, S]``):

* ``log_likelihood``: ``log p*(tokens | prompt)`` (naturalness);
* ``prompt_log_posterior``: ``log p*(prompt | tokens)`` under a uniform prior over prompts (adherence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from einops import rearrange
from torch import Tensor

from lightning_cfgrl.core.checks import check_settings
from lightning_cfgrl.experiments.domain import TokenDomain

HMM_ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "style": ("ballad", "funk", "waltz", "march"),
    "harmony": ("major", "minor", "modal", "blues"),
    "density": ("sparse", "medium", "dense"),
}


@dataclass(frozen=True)
class HMMScales:
    """How strongly each part of :class:`HMMMusic`'s process speaks: the sizes of its random logits.

    Args:
        prior_scale: std of the shared section-transition and coarse-emission logits (the strong prior).
        stay: extra logit of staying in the same section (sections last several frames).
        prompt_scale: std of each attribute's section bias and token bias (the weak prompt signal).
        residual_scale: std of codebooks 1 and 2's dependence on the codebook above in the same frame.
    """

    prior_scale: float = 3.0
    stay: float = 4.0
    prompt_scale: float = 0.25
    residual_scale: float = 2.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"scales.{f.name} must be a finite number, got {value!r}")


class HMMMusic(TokenDomain):
    """The hidden-section process and its exact scores (plain torch float64, CPU, deterministic from ``seed``).

    Args:
        vocab_size: V tokens per codebook.
        num_frames: T frames per sequence.
        num_states: S hidden sections.
        num_modes: M latent grooves.
        attribute_sizes: values per attribute slot (style, harmony, density).
        scales: the sizes of the prior, section-stay, prompt and residual logits (:class:`HMMScales`, or
            its fields as a dict).
        seed: seeds the process parameters.
    """

    num_codebooks = 3
    attribute_names = HMM_ATTRIBUTE_NAMES

    def __init__(
        self,
        vocab_size: int = 64,
        num_frames: int = 64,
        num_states: int = 10,
        num_modes: int = 3,
        attribute_sizes: Sequence[int] = (4, 4, 3),
        scales: HMMScales = HMMScales(),
        seed: int = 0,
    ) -> None:
        scales = check_settings("scales", HMMScales() if scales is None else scales, HMMScales)
        prior_scale, stay = scales.prior_scale, scales.stay
        prompt_scale, residual_scale = scales.prompt_scale, scales.residual_scale
        for name, value in (
            ("vocab_size", vocab_size),
            ("num_frames", num_frames),
            ("num_states", num_states),
            ("num_modes", num_modes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.vocab_size, self.num_frames = vocab_size, num_frames
        self.num_states, self.num_modes = num_states, num_modes
        self._init_prompts(attribute_sizes)
        rng = torch.Generator().manual_seed(seed)
        v, s, m = vocab_size, num_states, num_modes

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=rng, dtype=torch.float64)

        self.start_logits = prior_scale * randn(m, s)  # [M, S]
        self.transition_logits = prior_scale * randn(m, s, s) + stay * torch.eye(s, dtype=torch.float64)
        self.emission_logits = prior_scale * randn(m, s, v)  # [M, S, V] coarse token of each section
        self.state_bias = [prompt_scale * randn(n, s) for n in self.attribute_sizes]  # each [n, S]
        self.token_bias = [prompt_scale * randn(n, v) for n in self.attribute_sizes]  # each [n, V]
        self.residual1 = residual_scale * randn(v, v)  # R1[c0_t, c1_t]
        self.section1 = randn(s, v)  # H[s_t, c1_t]
        self.residual2 = residual_scale * randn(v, v)  # R2[c1_t, c2_t]
        self.memory2 = randn(m, v + 1, v)  # Q[m, c2_{t-1} or start, c2_t]

        a_bias = sum(t[self.prompts[:, i] - 1] for i, t in enumerate(self.state_bias))  # [P, S]
        e_bias = sum(t[self.prompts[:, i] - 1] for i, t in enumerate(self.token_bias))  # [P, V]
        self._log_start = torch.log_softmax(self.start_logits[None] + a_bias[:, None], -1)  # [P, M, S]
        self._log_trans = torch.log_softmax(
            self.transition_logits[None] + a_bias[:, None, None], -1
        )  # [P, M, S_prev, S_next]
        self._log_emit = torch.log_softmax(
            self.emission_logits[None] + e_bias[:, None, None], -1
        )  # [P, M, S, V]
        self._log_c1 = torch.log_softmax(
            self.residual1[:, None, :] + self.section1[None, :, :], -1
        )  # [V(c0), S, V(c1)]
        self._log_c2 = torch.log_softmax(
            self.residual2[None, None] + self.memory2[:, :, None], -1
        )  # [M, V+1 (c2 prev), V (c1), V (c2)]
        # tables of the factorised forward algorithm (see ``_forward``), all [M, S, P]
        log_zt = torch.logsumexp(self.transition_logits[None] + a_bias[:, None, None], -1)  # [P, M, S]
        log_ze = torch.logsumexp(self.emission_logits[None] + e_bias[:, None, None], -1)  # [P, M, S]
        self._token_bias_p = e_bias  # [P, V]
        self._exp_trans_t = self.transition_logits.exp().transpose(1, 2).contiguous()  # [M, S_next, S_prev]
        self._first = rearrange((self._log_start - log_zt - log_ze).exp(), "p m s -> m s p").contiguous()
        self._step = rearrange((a_bias[:, None] - log_zt - log_ze).exp(), "p m s -> m s p").contiguous()
        self._last = rearrange(log_zt.exp(), "p m s -> m s p").contiguous()

    # -- sampling -----------------------------------------------------------------------------------
    def sample(self, prompts: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """Draw one sequence per prompt: ``[B, A]`` -> frames ``[B, 3, T]`` int64."""
        index = self.prompt_index(prompts)
        b = index.shape[0]
        frames = torch.empty(b, 3, self.num_frames, dtype=torch.long)

        def draw(log_probs: Tensor) -> Tensor:
            return torch.multinomial(log_probs.exp(), 1, generator=rng)[:, 0]

        m = torch.randint(self.num_modes, (b,), generator=rng)
        state = draw(self._log_start[index, m])
        c2_prev = torch.full((b,), self.vocab_size, dtype=torch.long)
        for t in range(self.num_frames):
            if t > 0:
                state = draw(self._log_trans[index, m, state])
            c0 = draw(self._log_emit[index, m, state])
            c1 = draw(self._log_c1[c0, state])
            c2 = draw(self._log_c2[m, c2_prev, c1])
            frames[:, 0, t], frames[:, 1, t], frames[:, 2, t] = c0, c1, c2
            c2_prev = c2
        return frames

    # -- exact scores -------------------------------------------------------------------------------
    def _forward(self, frames: Tensor, index: Tensor | None, per_mode: bool = False) -> Tensor:
        """Scaled forward algorithm: ``[B, 3, T]`` -> ``log p*(frames | prompt)`` as ``[B, P]`` for every
        prompt (``index`` None) or ``[B, 1]`` for prompt ``index[b]`` of each sample; ``per_mode``: the
        joint ``log p*(frames, m | prompt)`` as ``[B, P or 1, M]`` (the groove m not summed out).

        The prompt enters through additive logits, so ``trans_p[m, i, j] = exp(trans[m, i, j]) w_p[j] /
        Zt_p[m, i]`` and ``emit_p[m, j, v] = exp(emit[m, j, v] + e_p[v]) / Ze_p[m, j]``. Carrying
        ``beta = alpha / Zt_p`` (alpha = p(s_t, m, frames so far | prompt)) makes every step one matmul
        with the prompt-free ``exp(trans)`` for all prompts at once, times a per-prompt constant
        ``D_p = w_p / (Zt_p Ze_p)`` and a per-frame prompt-free factor; ``e_p[c0_t]`` is summed apart.
        ``beta [M, S, G, N]``: G = P prompts x N = B samples, or G = 1 x N = B (each its own prompt); states
        before samples so that the matmul is one wide GEMM per mode (a skinny one is 3x slower here).
        """
        self.check_frames(frames)
        c0, c1, c2 = frames.cpu().unbind(1)  # each [B, T]
        # prompt-free per-frame factor: c0 given (m, s) before the prompt bias, c1 given (c0, s),
        # c2 given (c1, c2 prev, m); rescaled per frame so exp() cannot underflow
        c2_prev = torch.cat([torch.full_like(c2[:, :1], self.vocab_size), c2[:, :-1]], dim=1)
        log_w = (
            self.emission_logits[:, :, c0].permute(0, 2, 3, 1)  # [M, B, T, S]
            + self._log_c1[c0, :, c1][None]  # [1, B, T, S]
            + self._log_c2[:, c2_prev, c1, c2][..., None]  # [M, B, T, 1]
        )
        shift = log_w.amax(dim=(0, 3), keepdim=True)
        w = rearrange((log_w - shift).exp(), "m b t s -> t m s 1 b").contiguous()
        log_total = shift.sum(dim=(0, 2, 3)) - math.log(self.num_modes)  # [B]
        if index is None:
            first, step, last = (
                self._first[..., None],
                self._step[..., None],
                self._last[..., None],
            )  # [M, S, P, 1]
            log_total = log_total + self._token_bias_p[:, c0].sum(-1)  # [P, B]
        else:
            first, step, last = (
                x[:, :, None, index] for x in (self._first, self._step, self._last)
            )  # [M, S, 1, B]
            log_total = (log_total + self._token_bias_p[index[:, None], c0].sum(-1))[None]  # [1, B]
        beta = first * w[0]
        log_norm = torch.zeros(beta.shape[2:], dtype=beta.dtype)
        m, s, g, n = beta.shape
        for t in range(1, self.num_frames):
            if t % 4 == 0:  # rescale often enough that float64 cannot underflow (a frame costs < e^-100)
                norm = beta.sum(dim=(0, 1))  # [G, N]
                beta = beta / norm
                log_norm = log_norm + norm.log()
            beta = torch.matmul(self._exp_trans_t, beta.reshape(m, s, g * n)).view(m, s, g, n)
            beta.mul_(step).mul_(w[t])
        if per_mode:
            joint = log_norm + (beta * last).sum(dim=1).log() + log_total  # [M, G, N]
            return joint.permute(2, 1, 0)  # [B, G, M]
        return (log_norm + (beta * last).sum(dim=(0, 1)).log() + log_total).T  # [B, G]

    def log_likelihood(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """Exact ``log p*(frames | prompt)``: ``[B, 3, T]``, ``[B, A]`` -> ``[B]`` float64 (nats)."""
        index = self.prompt_index(prompts)
        self.check_frames(frames)
        if frames.shape[0] != index.shape[0]:
            raise ValueError(
                f"frames and prompts must have the same batch size, got {frames.shape[0]} and {index.shape[0]}"
            )
        return self._forward(frames, index)[:, 0]

    def prompt_log_posterior(self, frames: Tensor, prompts: Tensor) -> Tensor:
        """Exact adherence ``log p*(prompt | frames)`` under a uniform prompt prior: ``[B]`` float64 (<= 0)."""
        index = self.prompt_index(prompts)
        self.check_frames(frames)
        if frames.shape[0] != index.shape[0]:
            raise ValueError(
                f"frames and prompts must have the same batch size, got {frames.shape[0]} and {index.shape[0]}"
            )
        every = self._forward(frames, None)  # [B, P]
        return every[torch.arange(len(index)), index] - torch.logsumexp(every, dim=1)

    def mode_log_posterior(self, frames: Tensor) -> Tensor:
        """Exact ``log p*(m | frames)`` of the latent groove, prompts summed out under a uniform prior:
        ``[B, 3, T]`` -> ``[B, M]`` float64."""
        joint = torch.logsumexp(self._forward(frames, None, per_mode=True), dim=1)  # [B, M]
        return torch.log_softmax(joint, dim=1)


__all__ = ["HMM_ATTRIBUTE_NAMES", "HMMMusic", "HMMScales"]
