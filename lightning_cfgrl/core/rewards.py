"""Any reward: reward functions, their weighted sum and leave-one-out advantages (plain torch, no Lightning).

A reward function maps one step's samples (:class:`RewardInputs`) to one reward per sample:

* ``per="sample"``: ``fn(inputs) -> [N]``, ``N = B * G``; sample i's reward depends on sample i only
  (e.g. CLAP text adherence of its audio).
* ``per="group"``: ``fn(inputs.grouped()) -> [B, G]``; it sees the G samples of each prompt at once
  (``tokens [B, G, K, T]``, ``audio [B, G, C, L]``), e.g. a diversity reward.

The objective is the expected mean reward of a group, ``J = E[mean_i R_i]`` (the weighted sum over the
functions). Its leave-one-out advantage of sample j is ``A_j = G * (mean_i R_i - mean_{i != j} R_i^{-j})``
where ``R^{-j}`` is the reward of the group with sample j removed: the baseline does not depend on y_j, so
``mean_j A_j grad log pi(y_j)`` is an unbiased estimate of ``grad J``. For a per-sample reward this is
RLOO (``A_j = r_j - mean_{i != j} r_i``, no recomputation); a per-group function is called again on the G
groups of G - 1 samples. For a pairwise reward such as the diversity reward (``r_i = mean_{j != i} d_ij``)
it equals ``2 (r_j - b_j)`` with the ``"other_pairs"`` baseline of :mod:`lightning_cfgrl.core.diversity`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor

from lightning_cfgrl.core.condition import Condition

Per = Literal["sample", "group"]


@dataclass
class RewardInputs:
    """What a reward function sees. Per sample (``N = B * G``, a prompt's G samples adjacent) or, from
    :meth:`grouped`, per prompt (``[B, G, ...]``).

    Attributes:
        tokens: ``[N, K, T]`` int64 frames (``[B, G, K, T]`` grouped).
        condition: the prompt of each sample, batch ``N`` (``[B, G, ...]`` grouped).
        group_size: G.
        texts: the prompt of each sample as text (``N`` strings; ``B`` grouped), or None when unknown.
        audio: ``[N, C, L]`` decoded waveforms (``[B, G, C, L]`` grouped), or None without a decoder.
        sample_rate: of ``audio``.
    """

    tokens: Tensor
    condition: Condition
    group_size: int
    texts: list[str] | None = None
    audio: Tensor | None = None
    sample_rate: int | None = None
    is_grouped: bool = False

    @property
    def num_prompts(self) -> int:
        return self.tokens.shape[0] if self.is_grouped else self.tokens.shape[0] // self.group_size

    def grouped(self) -> RewardInputs:
        """The same samples as ``[B, G, ...]`` (texts: one per prompt)."""
        if self.is_grouped:
            return self
        g = self.group_size
        texts = self.texts[::g] if self.texts is not None else None
        return self._map(lambda x: rearrange(x, "(b g) ... -> b g ...", g=g), texts=texts, is_grouped=True)

    def without(self, j: int) -> RewardInputs:
        """Grouped inputs with sample j of every prompt removed (G - 1 samples per prompt)."""
        keep = [i for i in range(self.group_size) if i != j]
        return self.grouped()._map(lambda x: x[:, keep], group_size=self.group_size - 1)

    def _map(self, fn: Callable[[Tensor], Tensor], **changes: Any) -> RewardInputs:
        """``fn`` applied to every per-sample tensor (tokens, condition or its entries, audio)."""
        condition = (
            fn(self.condition)
            if isinstance(self.condition, Tensor)
            else {k: fn(v) for k, v in self.condition.items()}
        )
        audio = fn(self.audio) if self.audio is not None else None
        return replace(self, tokens=fn(self.tokens), condition=condition, audio=audio, **changes)


@dataclass
class RewardSpec:
    """One reward function with its weight (what ``RewardCallback(rewards=[...])`` takes, also from YAML).

    Attributes:
        function: a callable ``fn(inputs: RewardInputs) -> Tensor``, or the dotted path of one
            (``"my_rewards.loudness"``), or of a class instantiated with ``args``
            (``"lightning_cfgrl.audio.ClapTextReward"``). Paths are imported when the callback is built
            (only from the YAML/CLI or Python you give; a checkpoint stores the name as text only).
        weight: the function's weight in the sum (any finite number; negative for a penalty).
        per: ``"sample"`` (``[N] -> [N]``) or ``"group"`` (``[B, G, ...] -> [B, G]``).
        args: keyword arguments of a class ``function``.
        name: the function's name in logs (``train/<callback name>/<name>``); default: its own name.
    """

    function: Any
    weight: float = 1.0
    per: Per = "sample"
    args: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass
class RewardFunction:
    """A resolved :class:`RewardSpec`: the callable itself and its label."""

    fn: Callable[[RewardInputs], Tensor]
    weight: float
    per: Per
    name: str
    path: str

    @property
    def needs_audio(self) -> bool:
        """A function that reads ``inputs.audio`` says so with a true ``needs_audio`` attribute."""
        return bool(getattr(self.fn, "needs_audio", False))


def resolve_reward(spec: RewardSpec | Callable | dict, index: int = 0) -> RewardFunction:
    """Check a spec (a :class:`RewardSpec`, its fields as a dict, or a bare callable) and build it."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"function", "weight", "per", "args", "name"}
        if unknown or "function" not in spec:
            raise ValueError(
                f"reward {index}: a reward spec has keys function, weight, per, args, name; got {sorted(spec)}"
            )
        spec = RewardSpec(**spec)
    elif not isinstance(spec, RewardSpec):
        spec = RewardSpec(function=spec)
    where = f"reward {index} ({spec.function!r:.80})"
    if spec.per not in ("sample", "group"):
        raise ValueError(f"{where}: per must be 'sample' or 'group', got {spec.per!r}")
    if (
        isinstance(spec.weight, bool)
        or not isinstance(spec.weight, (int, float))
        or not math.isfinite(spec.weight)
    ):
        raise ValueError(f"{where}: weight must be a finite number, got {spec.weight!r}")
    fn = spec.function
    path = fn if isinstance(fn, str) else _qualname(fn)
    if isinstance(fn, str):
        fn = _import_path(fn, where)
    if isinstance(fn, type):
        fn = fn(**spec.args)
    elif spec.args:
        raise ValueError(f"{where}: args are for a class; {path} is not one")
    if not callable(fn):
        raise TypeError(f"{where}: expected a callable fn(inputs) -> rewards, got {type(fn).__name__}")
    name = spec.name or getattr(fn, "name", None) or path.rpartition(".")[2]
    return RewardFunction(fn, float(spec.weight), spec.per, str(name), path)


def _qualname(obj: Any) -> str:
    target = obj if isinstance(obj, type) or hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(obj).__name__)}"


def _import_path(path: str, where: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{where}: function must be 'package.module.name', got {path!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"{where}: cannot import {path!r} ({err}); expected 'package.module.name' importable from "
            "the working directory or PYTHONPATH (e.g. run with PYTHONPATH=. for a file my_rewards.py here)"
        ) from err


def evaluate_rewards(functions: Sequence[RewardFunction], inputs: RewardInputs) -> dict[str, Tensor]:
    """``{name: [B, G]}`` float64 rewards of each function (unweighted), checked for shape and finiteness."""
    b, g = inputs.num_prompts, inputs.group_size
    out: dict[str, Tensor] = {}
    for f in functions:
        out[f.name] = _call(f, inputs, b, g)
    return out


def _call(f: RewardFunction, inputs: RewardInputs, b: int, g: int) -> Tensor:
    flat = f.per == "sample"
    arg = inputs if flat and not inputs.is_grouped else inputs.grouped()
    if flat and inputs.is_grouped:  # a per-sample function on a sub-group: flatten it back
        arg = _flatten(inputs)
    values = f.fn(arg)
    expected = (b * g,) if flat else (b, g)
    if not isinstance(values, Tensor) or tuple(values.shape) != expected:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"reward function {f.name!r} ({f.path}, per={f.per!r}) must return shape {expected} "
            f"({'one reward per sample' if flat else '[B, G] rewards of each group'}), got {got}"
        )
    values = values.detach().double().cpu()  # [B, G] is tiny; the callback moves what it reduces
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        raise FloatingPointError(
            f"reward function {f.name!r} ({f.path}) returned {int(bad.sum())} non-finite rewards of "
            f"{values.numel()}; rewards must be finite numbers"
        )
    return values.reshape(b, g)


def _flatten(inputs: RewardInputs) -> RewardInputs:
    def flat(x: Tensor) -> Tensor:
        return rearrange(x, "b g ... -> (b g) ...")

    condition = (
        flat(inputs.condition)
        if isinstance(inputs.condition, Tensor)
        else {k: flat(v) for k, v in inputs.condition.items()}
    )
    texts = [t for t in inputs.texts for _ in range(inputs.group_size)] if inputs.texts is not None else None
    return replace(
        inputs,
        tokens=flat(inputs.tokens),
        condition=condition,
        texts=texts,
        audio=flat(inputs.audio) if inputs.audio is not None else None,
        is_grouped=False,
    )


def weighted_sum(functions: Sequence[RewardFunction], parts: dict[str, Tensor]) -> Tensor:
    """``[B, G]`` total reward ``sum_f weight_f * R_f``."""
    return sum(f.weight * parts[f.name] for f in functions)


def leave_one_out_advantages(
    functions: Sequence[RewardFunction], inputs: RewardInputs, parts: dict[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """``(advantages [B, G], baselines [B, G])``: ``baseline_j = sum_f w_f mean_{i != j} R_f,i^{-j}``, the
    group's mean reward without sample j, and ``A_j = G (mean_i R_i - baseline_j)`` (module docstring).
    ``parts`` are :func:`evaluate_rewards` of the full groups; per-group functions are called again on
    each group without sample j (G calls on ``[B, G - 1]``)."""
    b, g = inputs.num_prompts, inputs.group_size
    if g < 2:
        raise ValueError(f"the 'leave_one_out' baseline needs G >= 2 samples per prompt, got G = {g}")
    grouped = [f for f in functions if f.per == "group"]
    if grouped and g < 3:
        raise ValueError(
            f"the 'leave_one_out' baseline with a per-group reward ({grouped[0].name!r}) needs G >= 3 samples "
            f"per prompt (it scores groups of G - 1), got G = {g}; use baseline='running_mean'"
        )
    baselines = torch.zeros(b, g, dtype=torch.float64)
    for f in functions:
        r = parts[f.name]
        if f.per == "sample":  # the others' rewards do not change when j leaves
            baselines += f.weight * (r.sum(1, keepdim=True) - r) / (g - 1)
        else:
            for j in range(g):
                sub = _call(f, inputs.without(j), b, g - 1)
                baselines[:, j] += f.weight * sub.mean(1)
    total = weighted_sum(functions, parts)
    return g * (total.mean(1, keepdim=True) - baselines), baselines


def zero_spread_share(rewards: Tensor, rtol: float = 1e-6, atol: float = 1e-9) -> Tensor:
    """Share of groups ``[B, G]`` whose G rewards are all equal (``max - min <= atol + rtol * max |r|``):
    such a group carries no policy-gradient signal (every advantage is 0 up to the baseline)."""
    spread = rewards.amax(1) - rewards.amin(1)
    scale = rewards.abs().amax(1)
    return (spread <= atol + rtol * scale).double().mean()
