"""``ModuleAdapter``: a plain token LM as a :class:`~lightning_cfgrl.core.generator.TokenGenerator`.

Token LMs come in two wirings, and the adapter must know which one it wraps:

* ``convention="next_token"`` — the usual LM: ``logits[t]`` predicts ``tokens[t + 1]``. The adapter
  prepends ``bos_id`` (and drops the last step), so the output at step s predicts ``steps[s]``.
* ``convention="shifts_internally"`` — the module prepends its own start token: ``logits[t]`` predicts
  ``tokens[t]`` from ``tokens[:t]``. That is already this package's contract; the adapter passes the
  steps through unchanged.

Getting it wrong raises nothing by itself (sampling runs, on a model that never sees the previous
token, or that reads the token it predicts), so on first use the adapter runs a causality probe: it
changes the tokens of one step and checks which output positions move. Only the next position may be
the first to move; anything else is a clear error that names the convention to use.

Incremental decoding: a module with a ``step(tokens [B, K, 1] | None, state, condition) -> (logits
[B, K, 1, V], state)`` method (:class:`~lightning_cfgrl.core.generator.StepModule`: a recurrent hidden
state, an HF-style ``past_key_values``...) gets a :class:`StepCache` from ``new_cache``, and sampling
feeds it one step at a time instead of recomputing the whole prefix at every step. The probe then also
checks that the steps reproduce ``forward``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_cfgrl.core.condition import Condition, select_condition
from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.eval_mode import eval_mode
from lightning_cfgrl.core.generator import check_condition_matches, class_spec

Convention = Literal["next_token", "shifts_internally"]
CONVENTIONS: tuple[str, ...] = ("next_token", "shifts_internally")


@dataclass
class StepCache:
    """A ``ModuleAdapter``'s incremental state: the wrapped module's own ``state`` (whatever its ``step``
    returned) and the number of steps fed so far."""

    state: Any = None
    steps: int = 0


class ModuleAdapter(nn.Module):
    """Wrap ``module(tokens [B, K, T], condition) -> logits [B, K, T, V]`` as a TokenGenerator.

    Without a ``step`` method on the module, sampling recomputes the prefix at each step; with one
    (module docs), ``new_cache`` returns a :class:`StepCache` and sampling decodes incrementally.

    Args:
        module: the model.
        num_codebooks: K.
        vocab_size: V, the last dim of the module's logits.
        bos_id: the start id the adapter feeds at the first position for ``convention="next_token"``
            (the module must embed it; ``vocab_size`` is typical). Unused for ``"shifts_internally"``.
        null_condition: the CFG "no prompt" condition: a callable ``condition -> condition``, or a
            number to fill the condition's tensors with. ``None`` means the model cannot do CFG.
        delays: per-codebook delays if the module was trained on a delay pattern (default: flat).
            Steps without a token hold ``vocab_size`` (the pad id): the module must embed that id too.
        convention: ``"next_token"`` (``logits[t]`` predicts ``tokens[t + 1]``) or
            ``"shifts_internally"`` (``logits[t]`` predicts ``tokens[t]``; see the module docstring).
        verify: run the causality probe on first use (two extra forwards of one short sequence).
    """

    def __init__(
        self,
        module: nn.Module,
        num_codebooks: int,
        vocab_size: int,
        bos_id: int | None = None,
        null_condition: int | float | Callable[[Condition], Condition] | None = None,
        delays: tuple[int, ...] | None = None,
        convention: Convention = "next_token",
        verify: bool = True,
    ) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if convention == "next_token" and bos_id is None:
            raise ValueError(
                "ModuleAdapter(convention='next_token') prepends a start token and needs bos_id (an id the "
                "module embeds, e.g. vocab_size); if the module prepends its own start token, pass "
                "convention='shifts_internally'"
            )
        if num_codebooks < 1 or vocab_size < 1:
            raise ValueError(f"num_codebooks and vocab_size must be >= 1, got {num_codebooks}, {vocab_size}")
        self.module = module
        self.num_codebooks = num_codebooks
        self.vocab_size = vocab_size
        self.bos_id = bos_id
        self.convention = convention
        self.verify = verify
        self.pattern = DelayPattern(delays) if delays is not None else DelayPattern.flat(num_codebooks)
        if self.pattern.num_codebooks != num_codebooks:
            raise ValueError(
                f"delays {tuple(delays)} give {self.pattern.num_codebooks} codebooks, not {num_codebooks}"
            )
        self._null = null_condition
        self._delays = None if delays is None else [int(d) for d in delays]
        self._checked = not verify

    # -- TokenGenerator ---------------------------------------------------------------------------
    def forward(self, steps: Tensor, condition: Condition, cache: Any | None = None) -> Tensor:
        """``steps [B, K, S]`` -> ``logits [B, K, S, V]``; ``logits[:, :, s]`` predicts ``steps[:, :, s]``."""
        if cache is not None and not isinstance(cache, StepCache):
            raise ValueError(
                f"ModuleAdapter takes the cache its new_cache() returns (a StepCache), got {type(cache).__name__}"
            )
        if cache is None or cache.steps == 0:  # validate once per sequence, not once per decoded step
            check_condition_matches(condition, steps.shape[0])
            if not self._checked:
                self.check_convention(condition, steps.device)
                self._checked = True
        if cache is None:
            return self._logits(steps, condition)
        if steps.shape[2] <= cache.steps:
            raise ValueError(
                f"got {steps.shape[2]} steps but {cache.steps} are already cached; pass at least one new step"
            )
        logits = self._step_logits(steps, condition, cache)
        expected = (steps.shape[0], self.num_codebooks, steps.shape[2] - cache.steps, self.vocab_size)
        cache.steps = steps.shape[2]
        if tuple(logits.shape) != expected:
            raise ValueError(
                f"wrapped module's step() returned logits of shape {tuple(logits.shape)} over "
                f"{expected[2]} steps, expected {expected} [B, K, S, V] ([B, K, 1, V] per call)"
            )
        return logits

    @property
    def has_step(self) -> bool:
        """Whether the wrapped module decodes incrementally (has a ``step`` method)."""
        return callable(getattr(self.module, "step", None))

    def _step_logits(self, steps: Tensor, condition: Condition, cache: StepCache) -> Tensor:
        """Feed the steps ``cache.steps..S-1`` through ``module.step``: ``[B, K, S - cache.steps, V]``."""
        out = []
        for s in range(cache.steps, steps.shape[2]):
            if s > 0:
                tokens = steps[:, :, s - 1 : s]  # position s reads the previous step's tokens
            elif self.convention == "next_token":
                tokens = torch.full_like(steps[:, :, :1], self.bos_id)
            else:
                tokens = None  # the module starts from its own start token
            logits, cache.state = self.module.step(tokens, cache.state, condition)
            out.append(logits)
        return out[0] if len(out) == 1 else torch.cat(out, dim=2)

    def _logits(self, steps: Tensor, condition: Condition) -> Tensor:
        inputs = steps
        if self.convention == "next_token":
            inputs = torch.cat([torch.full_like(steps[..., :1], self.bos_id), steps[..., :-1]], dim=-1)
        logits = self.module(inputs, condition)
        expected = (*steps.shape, self.vocab_size)
        if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"wrapped module returned logits of shape {got}, expected {expected} [B, K, S, V]"
            )
        return logits

    def new_cache(self, batch_size: int, max_steps: int) -> StepCache | None:
        """A :class:`StepCache` when the module has ``step``, else ``None`` (sampling recomputes)."""
        return StepCache() if self.has_step else None

    def null_condition(self, condition: Condition) -> Condition:
        if self._null is None:
            raise ValueError("this ModuleAdapter was built without null_condition, so it cannot do CFG")
        if callable(self._null):
            return self._null(condition)
        if isinstance(condition, Tensor):
            return torch.full_like(condition, self._null)
        return {key: torch.full_like(value, self._null) for key, value in condition.items()}

    # -- the causality probe ----------------------------------------------------------------------
    @torch.no_grad()
    def check_convention(self, condition: Condition, device: torch.device | str | None = None) -> None:
        """Raise ``ValueError`` unless the wrapped module, under this adapter's ``convention``, gives
        logits at step s that depend on steps ``< s`` only and on step ``s - 1``.

        Changes every token of one step p of a random sequence (the first prompt of ``condition``, in
        eval mode) and compares the logits: positions ``<= p`` must not move, position ``p + 1`` must.
        A module whose logits move nowhere (e.g. a zero-initialised head) cannot be checked: warns.
        """
        pattern, v = self.pattern, self.vocab_size
        rng = torch.Generator().manual_seed(0)
        frames = torch.randint(0, v, (1, self.num_codebooks, 4 + pattern.max_delay), generator=rng)
        steps = pattern.frames_to_steps(frames, v).to(device)
        valid = pattern.valid_mask(steps.shape[2], steps.device)  # [K, S]
        p = next(s for s in range(1, steps.shape[2]) if bool(valid[:, s].any()))
        changed = steps.clone()
        changed[0, :, p] = torch.where(valid[:, p], (steps[0, :, p] + 1) % v, steps[0, :, p])
        first = select_condition(condition, slice(0, 1))
        with eval_mode(self.module):
            a, b = self._logits(steps, first).double(), self._logits(changed, first).double()
            if self.has_step:
                self._check_step(steps, first, a)
        moved = (a - b).abs().amax(dim=(0, 1, 3))  # [S]: largest change of any logit at each position
        largest = float(moved.max())
        if not largest > 1e-6 * (1.0 + float(a.abs().max())):
            warnings.warn(
                f"ModuleAdapter could not check its convention={self.convention!r}: changing the tokens of "
                f"step {p} moved no logits at all (does the module read its tokens?)",
                stacklevel=3,
            )
            return
        # exact zeros for a causal module; the relative floor only absorbs kernels whose rounding
        # depends on masked values
        is_moved = [bool(m > 1e-3 * largest) for m in moved.tolist()]
        moved_at = [s for s, flag in enumerate(is_moved) if flag]
        seen = f"changing the tokens of step {p} moved the logits at positions {moved_at}"
        wrong = f"ModuleAdapter(convention={self.convention!r}) is mis-wired for {type(self.module).__name__}: {seen}"
        if any(is_moved[:p]):
            raise ValueError(
                f"{wrong}: outputs before step {p} depend on it, so the module is not causal (its output at "
                "position t reads later tokens). ModuleAdapter needs an autoregressive module: mask attention "
                "to later positions, or use a unidirectional RNN"
            )
        if is_moved[p]:
            if self.convention == "shifts_internally":
                raise ValueError(
                    f"{wrong}, including position {p} itself: the module's output at t sees token t, so it "
                    "predicts the next token. Build it with ModuleAdapter(..., convention='next_token', "
                    "bos_id=<a start id the module embeds>)"
                )
            raise ValueError(
                f"{wrong}, including position {p} itself: even after the adapter's start token, the output "
                "at t sees token t, so the module reads one token ahead (is it causal?)"
            )
        if not is_moved[p + 1]:
            if self.convention == "next_token":
                raise ValueError(
                    f"{wrong} but not at {p + 1}: the module already shifts its input (it prepends its own "
                    "start token, logits[t] predicts tokens[t]) and the adapter's start token shifts it "
                    "again, so step t never sees token t - 1. Build it with "
                    "ModuleAdapter(..., convention='shifts_internally')"
                )
            raise ValueError(
                f"{wrong} but not at {p + 1}: the output at t does not see token t - 1 (the module shifts "
                "its input by more than one position)"
            )

    def _check_step(self, steps: Tensor, condition: Condition, full: Tensor) -> None:
        """The module's ``step`` fed one position at a time must give ``forward``'s logits ``full``."""
        stepped = self._step_logits(steps, condition, StepCache())
        if tuple(stepped.shape) != tuple(full.shape):
            raise ValueError(
                f"{type(self.module).__name__}.step() returned logits of shape {tuple(stepped.shape)} over "
                f"{steps.shape[2]} steps; forward gives {tuple(full.shape)}: step must return [B, K, 1, V]"
            )
        gap = (stepped.double() - full).abs().amax(dim=(0, 1, 3))  # [S]
        # float rounding differs between a whole-sequence kernel and single steps; a wrong state does not
        # stay within a thousandth of the logits' size
        bad = [s for s, g in enumerate(gap.tolist()) if not g <= 1e-3 * (1.0 + float(full.abs().max()))]
        if bad:
            raise ValueError(
                f"{type(self.module).__name__}.step() disagrees with its forward at positions {bad} (largest "
                f"logit difference {float(gap.max()):.3g}) under convention={self.convention!r}: step(tokens, "
                "state, condition) must return the logits forward gives at the next position, tokens being "
                "the module's input there (None at the first position for 'shifts_internally'); fix step, "
                "or remove it to decode by recomputing the prefix"
            )

    # -- checkpoints ------------------------------------------------------------------------------
    def spec(self) -> dict:
        """``class_path``/``init_args`` that rebuild this adapter, the wrapped module's own ``spec()``
        nested; ``ValueError`` when that cannot be recorded (no module spec, a callable null)."""
        module_spec = getattr(self.module, "spec", None)
        if not callable(module_spec):
            raise ValueError(
                f"the wrapped {type(self.module).__name__} has no spec() method; give it one returning "
                "lightning_cfgrl.core.generator.class_spec(self, {its constructor arguments})"
            )
        if callable(self._null):
            raise ValueError("null_condition is a function, which a checkpoint cannot record; pass a number")
        init_args = dict(
            module=module_spec(),
            num_codebooks=self.num_codebooks,
            vocab_size=self.vocab_size,
            bos_id=self.bos_id,
            null_condition=self._null,
            delays=self._delays,
            convention=self.convention,
            verify=self.verify,
        )
        return class_spec(self, init_args)


__all__ = ["CONVENTIONS", "Convention", "ModuleAdapter", "StepCache"]
