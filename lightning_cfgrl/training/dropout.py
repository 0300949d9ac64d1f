"""Switch a model's dropout off for RL finetuning (on-policy log-probs must be those of the sampler).

Two conventions are covered: ``nn.Dropout``-family modules (their ``p``) and the float attributes
that Hugging Face layers pass to ``nn.functional.dropout`` (``dropout``, ``attention_dropout``,
``activation_dropout``, ``layerdrop``; MusicGen's decoder uses all but the second). Dropout written
any other way (e.g. a model's own condition dropout) is not found here; ``CFGRLModule`` detects it
at the first step by comparing train- and eval-mode logits.
"""

from __future__ import annotations

from torch import nn

FUNCTIONAL_DROPOUT_ATTRIBUTES: tuple[str, ...] = (
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "layerdrop",
)

Saved = list[tuple[object, str, float]]


def disable_dropout(model: nn.Module) -> Saved:
    """Set every dropout probability in ``model`` to 0; return what :func:`restore_dropout` needs."""
    saved: Saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            saved.append((module, "p", module.p))
            module.p = 0.0
            continue
        for name in FUNCTIONAL_DROPOUT_ATTRIBUTES:
            value = module.__dict__.get(name)  # plain attributes only: a submodule lives in _modules
            if isinstance(value, float) and value > 0:
                saved.append((module, name, value))
                setattr(module, name, 0.0)
    return saved


def restore_dropout(saved: Saved) -> None:
    """Undo :func:`disable_dropout`."""
    for module, name, value in saved:
        setattr(module, name, value)
