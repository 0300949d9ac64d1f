"""Where evaluation and generation prompts come from: a datamodule's held-out prompts, a file, or a list.

A condition batch is a tensor ``[P, ...]`` or a dict of tensors with a leading ``P``
(:mod:`lightning_cfgrl.core.condition`). Files are data, never code:

* ``.json`` / ``.yaml`` / ``.yml``: a list of prompts (``[[1, 2, 3], [4, 1, 2]]`` or ``[3, 7]``), or a
  mapping of such lists for a dict condition (``{"ids": [...], "mask": [...]}``); integers become int64,
  anything else float32;
* ``.safetensors``: one tensor (the condition) or several (a dict condition).

Text prompts (a text-conditioned generator such as MusicGen) are strings: a list of them, or a ``.csv``
(``prompt`` column), ``.txt`` (one per line) or ``.json`` list of strings; they are tokenised with the
``tokenizer`` given (a local model folder), into ``{"input_ids", "attention_mask"}``.

:class:`PromptSource` names one of these sources (``prompts:`` in a ``cfgrl evaluate`` YAML).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_cfgrl.core.condition import Condition, condition_batch_size, select_condition


def prompts_from_datamodule(datamodule: Any) -> Condition:
    """The datamodule's held-out prompts as conditions: its ``heldout_condition()`` when it has one (the RL
    prompt datamodules; text prompts come tokenised), else its ``heldout_prompts``, else the distinct
    ``"condition"`` entries of its validation batches."""
    heldout_condition = getattr(datamodule, "heldout_condition", None)
    if callable(heldout_condition):
        return heldout_condition()
    heldout = getattr(datamodule, "heldout_prompts", None)
    if isinstance(heldout, Tensor) and len(heldout):
        return heldout
    name = type(datamodule).__name__
    if not hasattr(datamodule, "val_dataloader"):
        raise ValueError(f"datamodule {name} has neither heldout_prompts nor a val_dataloader()")
    if hasattr(datamodule, "setup"):
        datamodule.setup("validate")
    batches = [_condition_of(batch, name) for batch in datamodule.val_dataloader()]
    if not batches:
        raise ValueError(f"datamodule {name}'s val_dataloader() is empty: no held-out prompts to evaluate on")
    if isinstance(batches[0], Tensor):
        return _distinct_rows(torch.cat(batches))
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def prompts_from_file(path: str | Path) -> Condition:
    """Prompts from a ``.json``/``.yaml``/``.yml`` list or a ``.safetensors`` file (see the module docs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"prompt file {str(path)!r} does not exist (expected a .json, .yaml or .safetensors file of "
            "attribute ids, or for a text-conditioned model a .txt (one prompt per line), .csv (`prompt` "
            "column) or .json list of strings)"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from lightning_cfgrl.io.checkpoints import load_safetensors

        tensors = load_safetensors(path, mmap=False)
        if not tensors:
            raise ValueError(f"prompt file {str(path)!r} holds no tensors")
        return next(iter(tensors.values())) if len(tensors) == 1 else dict(sorted(tensors.items()))
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"prompt file {str(path)!r} is not valid JSON: {err}") from err
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())  # safe_load: plain data only, never objects
        except yaml.YAMLError as err:
            raise ValueError(f"prompt file {str(path)!r} is not valid YAML: {err}") from err
    else:
        raise ValueError(
            f"prompt file {str(path)!r} must be .json, .yaml, .yml or .safetensors, got {suffix or 'no suffix'!r}"
        )
    return prompts_from_value(data, source=f"prompt file {str(path)!r}")


def prompts_from_value(value: Any, source: str = "prompts") -> Condition:
    """A list (``[[1, 2, 3], ...]``), a mapping of lists, or a tensor -> a condition batch."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{source} is an empty mapping; expected {{name: [one entry per prompt]}}")
        return {str(k): _tensor(v, f"{source}[{k!r}]") for k, v in value.items()}
    return _tensor(value, source)


def load_prompts(
    datamodule: Any = None,
    prompts: str | Sequence | Mapping | Tensor | None = None,
    max_prompts: int | None = None,
    tokenizer: Any = None,
) -> Condition:
    """Exactly one of ``datamodule`` / ``prompts`` (a file path or the prompts themselves); the first
    ``max_prompts`` of them when given. Text prompts are tokenised with ``tokenizer`` (a folder or a
    tokenizer object; see the module docs). Raises ``ValueError`` for an empty or malformed batch."""
    if (datamodule is None) == (prompts is None):
        raise ValueError(
            "give exactly one prompt source: a datamodule (its held-out prompts) or prompts "
            f"(a .json/.yaml/.safetensors file or a list), got {'both' if datamodule is not None else 'neither'}"
        )
    if max_prompts is not None and (isinstance(max_prompts, bool) or max_prompts < 1):
        raise ValueError(f"max_prompts must be >= 1 or None, got {max_prompts!r}")
    texts = text_prompts_of(prompts)
    if datamodule is not None:
        condition = prompts_from_datamodule(datamodule)
    elif texts is not None:
        condition = tokenize_text_prompts(texts, tokenizer)
    elif isinstance(prompts, (str, Path)):
        condition = prompts_from_file(prompts)
    else:
        condition = prompts_from_value(prompts)
    count = condition_batch_size(condition)
    if count == 0:
        raise ValueError("the prompt source holds no prompts")
    if max_prompts is not None and max_prompts < count:
        condition = select_condition(condition, slice(0, max_prompts))
    return condition


@dataclass(frozen=True)
class PromptSource:
    """Where the prompts come from: exactly one of ``datamodule``, ``file`` and ``values``.

    Args:
        datamodule: its held-out prompts (``heldout_prompts``, else its validation batches).
        file: a prompt file (``.json``/``.yaml``/``.safetensors``), or of text prompts
            (``.csv``/``.txt``/``.json`` of strings, which need ``tokenizer``).
        values: the prompts themselves (``[[1, 2, 3], [4, 1, 2]]``; text prompts ``["calm piano"]``).
        max_prompts: use the first ``max_prompts`` prompts only.
        tokenizer: the text tokenizer of text prompts (a local model folder, e.g. the MusicGen base).
    """

    datamodule: pl.LightningDataModule | None = None
    file: str | None = None
    values: Union[list, dict, None] = None
    max_prompts: int | None = None
    tokenizer: str | None = None

    def load(self) -> Condition:
        """The prompts as a condition batch ``[P, ...]`` (:func:`load_prompts`)."""
        given = [name for name in ("datamodule", "file", "values") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one prompt source: prompts.datamodule (its held-out prompts), prompts.file (a "
                ".json/.yaml/.safetensors file) or prompts.values (the prompts themselves), got "
                + (" and ".join(f"prompts.{name}" for name in given) if given else "none")
            )
        if self.max_prompts is not None and (isinstance(self.max_prompts, bool) or self.max_prompts < 1):
            raise ValueError(f"prompts.max_prompts must be >= 1 or None, got {self.max_prompts!r}")
        source = self.file if self.file is not None else self.values
        return load_prompts(self.datamodule, source, self.max_prompts, self.tokenizer)


TEXT_SUFFIXES = (".csv", ".txt")


def text_prompts_of(prompts: Any) -> list[str] | None:
    """The prompts as strings when they are text prompts (a list of strings, a ``.csv``/``.txt`` file, a
    ``.json`` list of strings or of ``{"prompt": ...}`` objects), else None. Reads no tensor file."""
    from lightning_cfgrl.io.text_prompts import read_text_prompts

    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        return read_text_prompts(list(prompts))
    if not isinstance(prompts, (str, Path)) or not Path(prompts).is_file():
        return None
    path = Path(prompts)
    if path.suffix.lower() == ".txt":
        return read_text_prompts(
            [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        )
    if path.suffix.lower() == ".csv":
        return read_text_prompts(str(path))
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # prompts_from_file reports it
        items = list(data.values()) if isinstance(data, dict) else data
        if isinstance(items, list) and items and all(isinstance(i, (str, dict)) for i in items):
            if any(isinstance(i, str) for i in items) or all(
                isinstance(i, dict) and "prompt" in i for i in items
            ):
                return read_text_prompts(str(path))
    return None


def tokenize_text_prompts(texts: list[str], tokenizer: Any) -> dict[str, Tensor]:
    """``{"input_ids", "attention_mask"}`` ``[P, L]`` of text prompts (an empty prompt is the null one)."""
    if tokenizer is None:
        raise ValueError(
            f"the prompts are text ({texts[0]!r}, ...), which need the model's text tokenizer: give tokenizer "
            "(a local model folder, e.g. the MusicGen folder; --tokenizer on the command line)"
        )
    from lightning_cfgrl.io.text_prompts import load_text_tokenizer, tokenize_prompts

    ids, mask = tokenize_prompts(texts, load_text_tokenizer(tokenizer))
    return {"input_ids": ids, "attention_mask": mask}


def _tensor(value: Any, source: str) -> Tensor:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{source} must be a non-empty list of prompts, got {value!r:.80}")
    try:
        tensor = torch.tensor(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{source} must be a list of numbers or of equal-length lists of numbers: {err}"
        ) from err
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.dtype == torch.long):
        raise ValueError(f"{source} must hold numbers, got dtype {tensor.dtype}")
    return tensor if tensor.dtype == torch.long else tensor.float()


def _condition_of(batch: Any, name: str) -> Condition:
    if isinstance(batch, Mapping) and "condition" in batch:
        return batch["condition"]
    raise ValueError(f"datamodule {name}'s validation batches must be dicts with a 'condition' entry")


def _distinct_rows(tensor: Tensor) -> Tensor:
    """Unique rows in order of first appearance (a validation set repeats its prompts)."""
    seen, keep = set(), []
    for i, row in enumerate(tensor.reshape(len(tensor), -1).tolist()):
        key = tuple(row)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return tensor[keep]


__all__ = [
    "PromptSource",
    "load_prompts",
    "prompts_from_datamodule",
    "prompts_from_file",
    "prompts_from_value",
    "text_prompts_of",
    "tokenize_text_prompts",
]
