"""The ``TokenGenerator`` protocol: what ``CFGRLModule`` needs from any autoregressive token model.

Tokens live in the generator's *step* domain ``[B, K, S]`` int64: its ``pattern``
(:class:`~lightning_cfgrl.core.delay_pattern.DelayPattern`) maps frames ``[B, K, T]`` to steps, and positions
with no token hold ``pad_id == vocab_size``. The contract of ``forward``:

``logits = generator(steps, condition, cache=None)`` -> ``[B, K, S - cached, V]`` where
``logits[:, :, s]`` is the distribution of ``steps[:, :, s]`` given ``steps[:, :, :s]`` and the
condition; ``steps[:, :, s]`` itself is never read for its own logits (the model shifts internally).
With a cache (from ``new_cache``) only the positions not yet in the cache are computed, so the sampler
feeds one new step at a time. A generator without a cache returns ``None`` from ``new_cache`` and
sampling recomputes the prefix every step. A plain LM becomes a generator with
:class:`~lightning_cfgrl.core.module_adapter.ModuleAdapter`.

To be rebuilt from a checkpoint, a generator also has ``spec()``: the ``{"class_path", "init_args"}``
that construct it again (see :func:`class_spec`).

Optional: control inputs. A generator that can be steered by per-sequence values (guidance scale,
diversity weight) lists them in ``control_names`` and accepts ``controls={name: [B] float tensor}`` as a
keyword of ``forward``; see :mod:`lightning_cfgrl.core.controls`. Generators without it never receive
the keyword, and asking them for a control is a clear error.

Optional: ``decode_step(previous [B, K], position [1], cache, controls=None) -> [B, K, V]``, one cached
step with static shapes, which ``sample(..., decoding=DecodeConfig(compile=True))`` compiles once (the reference:
:meth:`~lightning_cfgrl.models.AudioTokenTransformer.decode_step`).

Optional, for a plain module wrapped by ``ModuleAdapter``: an incremental step (:class:`StepModule`),
``module.step(tokens [B, K, 1] | None, state, condition) -> (logits [B, K, 1, V], state)``. The adapter's
``new_cache`` then returns a cache that carries ``state`` (a recurrent hidden state, an HF-style
``past_key_values``, anything the module returns), and sampling feeds one step at a time instead of
recomputing the prefix: O(T) rather than O(T^2) per sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from lightning_cfgrl.core.condition import Condition, condition_batch_size
from lightning_cfgrl.core.delay_pattern import DelayPattern


@runtime_checkable
class TokenGenerator(Protocol):
    """Structural type of a token model; any ``nn.Module`` with these members works.

    Optionally ``control_names: tuple[str, ...]`` and a ``controls`` keyword of ``forward`` (module docs).
    """

    num_codebooks: int
    vocab_size: int
    pattern: DelayPattern

    def __call__(self, steps: Tensor, condition: Condition, cache: Any | None = None) -> Tensor: ...

    def null_condition(self, condition: Condition) -> Condition:
        """The "no prompt" condition for CFG, same structure and batch size as ``condition``."""
        ...

    def new_cache(self, batch_size: int, max_steps: int) -> Any | None:
        """An empty KV cache for incremental decoding, or ``None`` if unsupported."""
        ...


@runtime_checkable
class StepModule(Protocol):
    """A wrapped LM that decodes incrementally (optional, see the module docs).

    ``step(tokens, state, condition)``: ``tokens [B, K, 1]`` are the module's input at the next position
    (what its ``forward`` would read there: for ``convention="next_token"`` the adapter's start id at the
    first position, then the previous step's tokens); ``None`` at the first position of a module that
    prepends its own start token (``convention="shifts_internally"``). ``state`` is ``None`` at the first
    position, then whatever the previous call returned. Returns the logits ``[B, K, 1, V]`` that
    ``forward`` gives at that position, and the new state. The adapter checks on first use that the
    steps reproduce ``forward``.
    """

    def step(self, tokens: Tensor | None, state: Any | None, condition: Condition) -> tuple[Tensor, Any]: ...


def class_spec(obj: object, init_args: Mapping[str, Any]) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` that rebuild ``obj``: what a model's ``spec()`` returns, so that
    checkpoints record the architecture beside the weights (``CFGRLModule`` and ``PretrainModule`` save
    it as a hyperparameter; ``load_generator``, merging and evaluation rebuild the model from it).

    A model's whole ``spec()`` is usually ``return class_spec(self, self._init_args)`` with the constructor
    arguments kept in ``__init__``; they must be plain values (numbers, strings, lists, dicts, None) or
    nested specs, since checkpoints are loaded with ``weights_only=True``."""
    return {"class_path": f"{type(obj).__module__}.{type(obj).__qualname__}", "init_args": dict(init_args)}


def pad_id(generator: TokenGenerator) -> int:
    """Id used in step tensors where the delay pattern has no token."""
    return generator.vocab_size


def check_steps(steps: Tensor, generator: TokenGenerator, name: str = "tokens") -> None:
    """Validate a step tensor ``[B, K, S]`` against the generator: dtype, codebooks, token range."""
    if not isinstance(steps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, K, S], got {type(steps).__name__}")
    if steps.dim() != 3:
        raise ValueError(f"{name} must have shape [B, K, S], got {tuple(steps.shape)}")
    if steps.dtype != torch.long:
        raise ValueError(f"{name} must be int64 token ids, got dtype {steps.dtype}")
    if steps.shape[1] != generator.num_codebooks:
        raise ValueError(
            f"{name} have {steps.shape[1]} codebooks, the generator expects {generator.num_codebooks}"
        )
    mask = generator.pattern.valid_mask(steps.shape[2], steps.device)
    real = steps[:, mask] if mask.any() else steps.new_zeros(0)
    if real.numel() and (real.min() < 0 or real.max() >= generator.vocab_size):
        bad = real[(real < 0) | (real >= generator.vocab_size)][0].item()
        raise ValueError(f"{name} contain id {bad}, outside [0, {generator.vocab_size}) (vocab_size)")


def check_logits(logits: Tensor, generator: TokenGenerator, batch: int, positions: int) -> None:
    """The logits of ``positions`` steps for ``batch`` sequences must be ``[B, K, S, V]`` with the
    generator's own K and V: a last dim of V - 1 would make token V - 1 unreachable, V + 3 would be
    read as tokens that do not exist. A shape check, no host sync."""
    expected = (batch, generator.num_codebooks, positions, generator.vocab_size)
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"{type(generator).__name__} returned logits of shape {tuple(logits.shape)}, expected [B, K, S, V] = "
            f"{expected} (its num_codebooks={generator.num_codebooks}, vocab_size={generator.vocab_size})"
        )


def check_condition_matches(condition: Condition, batch_size: int) -> None:
    size = condition_batch_size(condition)
    if size != batch_size:
        raise ValueError(f"condition batch size {size} differs from the token batch size {batch_size}")


def check_compatible(student: TokenGenerator, teacher: TokenGenerator) -> None:
    """Teacher and student must share codebooks, vocabulary and delay pattern."""
    for attr in ("num_codebooks", "vocab_size", "pattern"):
        s, t = getattr(student, attr), getattr(teacher, attr)
        if s != t:
            raise ValueError(f"teacher {attr}={t!r} does not match the student's {attr}={s!r}")
