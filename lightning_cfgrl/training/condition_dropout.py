"""Condition dropout the model applies itself, which ``PretrainModule(condition_dropout=p)`` would stack on.

Two prompt-dropping mechanisms compound: a prompt is kept with probability ``(1 - own) (1 - p)``, so the
unconditional share CFG learns is not the one configured. Models spell their own mechanism in many ways
(``condition_dropout``, ``cond_drop_prob``, ``p_uncond``, ``class_dropout_prob``, ``text_dropout``...), on
the model, on a wrapped module or deep inside it, as an instance or a class attribute, or not as an
attribute at all. So it is found twice:

* **declared**: any submodule with a numeric attribute in (0, 1] whose name pairs a condition word
  (cond, prompt, text, label, class, context, caption, uncond, cfg, null, ...) with a dropping word
  (drop, dropout, prob, p, rate, ...) (:func:`declared_condition_dropout`, at construction);
* **applied**: with every dropout module and Hugging Face dropout attribute off, the model in train mode
  is run on a real batch under several seeds; a row whose logits then equal the null condition's while
  the conditioned logits differ was dropped by the model itself (:func:`applied_condition_dropout`, at
  the first training step; it sees any spelling, and code with no attribute).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from lightning_cfgrl.core.condition import Condition
from lightning_cfgrl.training.dropout import disable_dropout, restore_dropout

CONDITION_WORDS = frozenset(
    "cond condition conditions conditioning prompt prompts text label labels class context caption "
    "attr attribute attributes uncond unconditional cfg null classifier guidance".split()
)
DROP_WORDS = frozenset("drop dropout dropped dropping p prob probability rate uncond unconditional".split())


def _words(name: str) -> list[str]:
    """``"condDropProb"`` / ``"cond_drop_prob"`` -> ``["cond", "drop", "prob"]``."""
    return [w.lower() for w in re.split(r"_+|(?<=[a-z0-9])(?=[A-Z])", name.strip("_")) if w]


def names_condition_dropout(name: str) -> bool:
    """True when ``name`` pairs a condition word with a dropping word (two different words)."""
    words = _words(name)
    return any(
        a in CONDITION_WORDS and b in DROP_WORDS
        for i, a in enumerate(words)
        for j, b in enumerate(words)
        if i != j
    )


def declared_condition_dropout(model: nn.Module) -> list[tuple[str, str, float]]:
    """``[(module path, attribute, value)]`` of every numeric attribute in (0, 1] of ``model`` or any of
    its submodules (instance or class attributes) whose name says condition dropout."""
    found = []
    for path, module in model.named_modules():
        names: dict[str, Any] = {}
        for cls in reversed(type(module).__mro__):
            if cls not in (nn.Module, object):
                names.update(vars(cls))
        names.update(module.__dict__)
        for name, value in names.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                continue
            if names_condition_dropout(name):
                found.append((path or type(module).__name__, name, float(value)))
    return found


def _row_diff(a: Tensor, b: Tensor) -> Tensor:
    """Largest absolute difference per row: ``[B, ...] x [B, ...] -> [B]``."""
    return (a.float() - b.float()).abs().flatten(1).amax(1)


@torch.no_grad()
def applied_condition_dropout(
    generator: nn.Module, steps: Tensor, condition: Condition, draws: int = 8, atol: float = 1e-5
) -> float | None:
    """The share of rows the model itself replaced by its null condition in train mode, measured on
    ``steps [B, K, S]`` and ``condition`` over ``draws`` seeds with every dropout module off; ``None`` when
    no row's conditioned and null logits differ (nothing to tell apart). Leaves the model's mode, dropout
    and torch's global RNG as they were."""
    devices = [steps.device.index or 0] if steps.device.type == "cuda" else []
    # every submodule's own mode, restored exactly: a student in train mode may hold frozen parts in eval
    # mode (MusicGen's text encoder and codec), and training runs with that layout
    modes = [(module, module.training) for module in generator.modules()]

    def train_mode() -> None:
        if modes[0][1]:  # as training runs it
            for module, training in modes:
                module.training = training
        else:
            generator.train()

    saved = disable_dropout(generator)  # only the model's own randomness is left
    try:
        with torch.random.fork_rng(devices=devices):
            train_mode()
            torch.manual_seed(0)
            null = generator(steps, generator.null_condition(condition))
            generator.eval()
            conditioned = generator(steps, condition)
            telling = _row_diff(conditioned, null) > 100 * atol  # rows whose prompt changes the logits
            train_mode()
            dropped = 0
            # the same forwards on every process whatever the answer: a sharded model's forward is a collective
            for seed in range(draws):
                torch.manual_seed(seed)
                out = generator(steps, condition)
                dropped += int(((_row_diff(out, null) <= atol) & telling).sum())
        return dropped / (draws * int(telling.sum())) if bool(telling.any()) else None
    finally:
        restore_dropout(saved)
        for module, training in modes:
            module.training = training
