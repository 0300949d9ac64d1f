"""The learned judge: a prompt classifier trained on real tunes that the generator never trained on
(the analogue of the paper's text-adherence model). It is saved as safetensors + JSON (no pickle)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.experiments.judge import PromptClassifier


def train_judge(corpus, steps: int = 1500, dim: int = 64, seed: int = 0) -> tuple[PromptClassifier, Tensor]:
    """A :class:`PromptClassifier` over the corpus's P prompts, trained on its "judge" share (AdamW, batch
    64); returns it (eval mode) and the training share's log prompt frequencies ``[P]`` (the prior that
    :class:`FolkJudgeAdherence` divides out)."""
    torch.manual_seed(seed)
    frames, condition = corpus.data("judge")
    rows = corpus.prompt_table.prompt_index(condition)
    model = PromptClassifier(2, corpus.vocab_size, (corpus.num_prompts,), dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(rows), (64,), generator=g)
        loss = F.cross_entropy(model(frames[batch])[0], rows[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    counts = torch.bincount(rows, minlength=corpus.num_prompts).double() + 1.0
    return model.eval(), (counts / counts.sum()).log()


@torch.no_grad()
def judge_log_posterior(
    model: PromptClassifier, log_prior: Tensor, frames: Tensor, temperature: float = 1.0
) -> Tensor:
    """``[B, 2, T]`` -> ``[B, P]`` float64 log p(prompt | frames) under a uniform prompt prior (the
    training share's prior divided out, so chance is log 1/P whatever the prompts' sizes), with the
    logits divided by ``temperature`` (see :func:`calibrate_temperature`)."""
    logits = model(frames)[0].double() / temperature - log_prior.double()
    return F.log_softmax(logits, -1)


@torch.no_grad()
def calibrate_temperature(
    model: PromptClassifier, log_prior: Tensor, corpus, share: str = "generator"
) -> float:
    """The logit temperature that minimises the judge's NLL on real tunes it was not trained on (the
    generator's share by default; never the test share it is reported on). A classifier trained to
    over-confidence scores below chance on average; one scalar fixes its calibration, not its ranking."""
    frames, condition = corpus.data(share)
    rows = corpus.prompt_table.prompt_index(condition)[:, None]
    logits = model(frames)[0].double()
    grid = torch.linspace(0.5, 8.0, 76)
    nll = [-F.log_softmax(logits / t - log_prior.double(), -1).gather(1, rows).mean() for t in grid]
    return float(grid[int(torch.stack(nll).argmin())])


def judge_accuracy(
    model: PromptClassifier, log_prior: Tensor, corpus, share: str = "test", temperature: float = 1.0
) -> dict:
    """Held-out accuracy on a share: top-1 over prompts, balanced (mean per-prompt recall), per attribute
    (the argmax prompt's value), and the mean log-posterior of the true prompt (chance log 1/P)."""
    frames, condition = corpus.data(share)
    rows = corpus.prompt_table.prompt_index(condition)
    post = judge_log_posterior(model, log_prior, frames, temperature)
    pred = post.argmax(1)
    recall = [
        float((pred[rows == p] == p).double().mean()) for p in range(corpus.num_prompts) if (rows == p).any()
    ]
    table = corpus.prompt_table.prompts
    per_attribute = {
        name: float((table[pred, a] == table[rows, a]).double().mean())
        for a, name in enumerate(("collection", "meter", "mode"))
    }
    return {
        "share": share,
        "tunes": len(rows),
        "accuracy": float((pred == rows).double().mean()),
        "balanced_accuracy": sum(recall) / len(recall),
        "attribute_accuracy": per_attribute,
        "adherence": float(post.gather(1, rows[:, None]).mean()),
        "chance_adherence": -math.log(corpus.num_prompts),
        "chance_accuracy": 1.0 / corpus.num_prompts,
        "temperature": temperature,
    }


def save_judge(
    model: PromptClassifier, log_prior: Tensor, corpus, path: str | Path, temperature: float = 1.0
) -> None:
    """``path`` (.safetensors: weights + prior) and ``path`` with .json: the prompts it classifies and the
    logit temperature."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({**model.state_dict(), "log_prior": log_prior.float()}, str(path))
    meta = {
        "combos": [list(c) for c in corpus.prompt_table.combos],
        "dim": model.embed[0].embedding_dim,
        "temperature": temperature,
    }
    path.with_suffix(".json").write_text(json.dumps(meta))


def load_judge(path: str | Path, corpus) -> tuple[PromptClassifier, Tensor, float]:
    """The judge :func:`save_judge` wrote: ``(classifier, log prior [P], temperature)``."""
    path = Path(path)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"judge {path} (and its .json) not found; train one with `python examples/folk_study.py prepare`"
        )
    meta = json.loads(path.with_suffix(".json").read_text())
    combos = [list(c) for c in corpus.prompt_table.combos]
    if meta["combos"] != combos:
        raise ValueError(
            f"judge {path} classifies {len(meta['combos'])} prompts that differ from this corpus's "
            f"{len(combos)}; build the corpus with the judge's arguments or retrain the judge"
        )
    state = load_file(str(path))
    log_prior = state.pop("log_prior").double()
    model = PromptClassifier(2, corpus.vocab_size, (corpus.num_prompts,), meta["dim"])
    model.load_state_dict(state)
    return model.eval(), log_prior, float(meta.get("temperature", 1.0))


class FolkJudgeAdherence(Scorer):
    """``adherence``: the judge's ``log p(prompt | sample)`` under a uniform prompt prior; chance ``log 1/P``.

    Args:
        corpus: the :class:`~lightning_cfgrl.experiments.folk.FolkCorpus` the judge was trained on.
        checkpoint: the judge's .safetensors file (see :func:`save_judge`).
    """

    name = "adherence"

    def __init__(self, corpus, checkpoint: str) -> None:
        self.corpus = corpus
        self.model, self.log_prior, self.temperature = load_judge(checkpoint, corpus)
        self.chance = -math.log(corpus.num_prompts)

    def __call__(self, frames: Tensor, condition: Tensor) -> Tensor:
        rows = self.corpus.prompt_table.prompt_index(condition.cpu())
        post = judge_log_posterior(self.model, self.log_prior, frames.cpu(), self.temperature)
        return post.gather(1, rows[:, None])[:, 0]


__all__ = [
    "FolkJudgeAdherence",
    "judge_accuracy",
    "judge_log_posterior",
    "load_judge",
    "save_judge",
    "train_judge",
]
