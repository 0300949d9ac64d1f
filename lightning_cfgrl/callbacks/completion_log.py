"""``CompletionLogCallback``: what the policy generated, with its rewards (TRL's ``log_completions``).

Every ``every_n_steps`` training steps, a table of the step's first ``max_rows`` rollout samples: the
prompt (text where the datamodule describes it), the sample (its first tokens; its audio where a decoder
exists) and every per-sample value the objectives published (``RolloutBatch.records``: the reward and
advantage of ``DiversityRewardCallback`` / ``RewardCallback``, the distillation divergence per token), to

* TensorBoard: a markdown table (``<tag>/table``) and each sample's audio (``<tag>/sample<i>``);
* ``<log_dir>/completions.csv`` (one row per sample and logged step, appended) and, with a decoder,
  ``<log_dir>/completions/step<N>/sample<i>.wav``.

Every step it also logs ``train/<objective>_zero_spread_groups``: the share of prompt groups whose G
rewards are all equal, which carry no policy-gradient signal (a dead reward reads 1.0). Rank zero writes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_cfgrl.core.condition import Condition, select_condition
from lightning_cfgrl.core.rewards import zero_spread_share
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.rollout import RolloutBatch

REWARD_SUFFIX = "/reward"


class CompletionLogCallback(ObjectiveCallback):
    """Log a table of rollout samples with their rewards, advantages and divergences (no loss term).

    It sees the rollout as an objective does (it is one with no loss term), and writes after the step,
    when every objective has published its values: put it anywhere in ``callbacks`` (last keeps the
    seeds of the other objectives' controls as they are without it).

    Args:
        every_n_steps: log the table every this many optimizer steps (from step 0).
        max_rows: samples per table (the first ones: whole prompt groups first).
        audio: decode and log the samples' audio when a decoder exists (``decoder``, else a generator
            that decodes its own tokens, e.g. MusicGen).
        decoder: tokens ``[N, K, T]`` -> audio ``[N, C, L]`` (``decode`` and ``sample_rate``).
        describe: one prompt's condition -> its text; default: the datamodule's ``describe_prompt``.
        prompt_tokenizer: for text conditions (``{"input_ids", ...}``) without a ``describe``: the
            generator's text tokenizer (a folder, e.g. the MusicGen folder) that decodes the ids to text.
        num_tokens: tokens per codebook shown in the ``sample`` column.
        tag: TensorBoard tag prefix.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        max_rows: int = 16,
        audio: bool = True,
        decoder: Any = None,
        describe: Callable[[Condition], str] | None = None,
        num_tokens: int = 16,
        tag: str = "completions",
        prompt_tokenizer: str | None = None,
    ) -> None:
        for name, value in (
            ("every_n_steps", every_n_steps),
            ("max_rows", max_rows),
            ("num_tokens", num_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if decoder is not None and not (
            callable(getattr(decoder, "decode", None)) and hasattr(decoder, "sample_rate")
        ):
            raise TypeError(
                f"decoder must have .decode(tokens) and .sample_rate, got {type(decoder).__name__}"
            )
        self.every_n_steps, self.max_rows, self.audio = every_n_steps, max_rows, audio
        self.decoder, self.num_tokens, self.tag = decoder, num_tokens, tag
        self.describe, self._describe_given = describe, describe
        self.prompt_tokenizer: Any = None
        if prompt_tokenizer is not None:
            from lightning_cfgrl.audio.text_prompts import load_text_tokenizer

            self.prompt_tokenizer = load_text_tokenizer(prompt_tokenizer)
        self._batch: RolloutBatch | None = None
        self._step = -1
        self.path: str | None = None  # the CSV, once known
        self.last_rows: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(tag=self.tag)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        others = [cb for cb in trainer.callbacks if isinstance(cb, ObjectiveCallback) and cb is not self]
        if not others:
            raise ValueError(
                "CompletionLogCallback logs what the objectives compute and adds no loss term; add "
                "CFGDistillCallback, DiversityRewardCallback and/or RewardCallback to the Trainer's callbacks"
            )
        self.describe = self._describe_given or getattr(trainer.datamodule, "describe_prompt", None)
        generator = getattr(pl_module, "generator", None)
        if self.audio and self.decoder is None and callable(getattr(generator, "decode", None)):
            if hasattr(generator, "sample_rate"):
                self.decoder = generator
        log_dir = trainer.log_dir if trainer.loggers else None
        self.path = os.path.join(log_dir or trainer.default_root_dir, "completions.csv")

    def loss_terms(self, pl_module: pl.LightningModule, batch: RolloutBatch) -> dict[str, Tensor]:
        self._batch, self._step = batch, pl_module.global_step  # read after the step: records are filled
        return {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        rollout, self._batch = self._batch, None  # never keep the step's logits alive
        if rollout is None:
            return
        g = rollout.group_size
        for name, values in rollout.records.items():
            if name.endswith(REWARD_SUFFIX) and g >= 2:
                share = zero_spread_share(values.reshape(-1, g))
                objective = name[: -len(REWARD_SUFFIX)]
                pl_module.log(
                    f"train/{objective}_zero_spread_groups", share.float(), batch_size=values.numel() // g
                )
        if self._step % self.every_n_steps == 0 and trainer.is_global_zero:
            self.write(trainer, pl_module, rollout, self._step)

    # -- the table ------------------------------------------------------------------------------------
    @torch.no_grad()
    def rows(self, pl_module: pl.LightningModule, rollout: RolloutBatch, step: int) -> list[dict[str, Any]]:
        """The table's rows (also what the CSV gets)."""
        n = min(self.max_rows, rollout.num_rows_on_policy)
        frames = pl_module.generator.pattern.steps_to_frames(rollout.steps[:n]).cpu()
        out = []
        for i in range(n):
            condition = select_condition(rollout.condition, i)
            row: dict[str, Any] = {
                "step": step,
                "prompt_group": i // rollout.group_size,
                "sample": i % rollout.group_size,
                "prompt": self._prompt_text(condition),
                "tokens": " | ".join(
                    " ".join(str(int(t)) for t in codebook[: self.num_tokens])
                    + (" ..." if codebook.shape[0] > self.num_tokens else "")
                    for codebook in frames[i]
                ),
            }
            row.update({name: float(values[i]) for name, values in sorted(rollout.records.items())})
            out.append(row)
        if self.audio and self.decoder is not None:
            self._audio(pl_module, frames, out, step)
        return out

    def write(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, rollout: RolloutBatch, step: int
    ) -> None:
        rows = self.rows(pl_module, rollout, step)
        self.last_rows = rows
        self._write_csv(rows)
        writer = next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if writer is None:
            return
        writer.add_text(f"{self.tag}/table", _markdown(rows), step)
        for i, row in enumerate(rows):
            clip = row.pop("_clip", None)
            if clip is not None:
                writer.add_audio(
                    f"{self.tag}/sample{i}", clip, step, sample_rate=int(self.decoder.sample_rate)
                )

    def _prompt_text(self, condition: Condition) -> str:
        if self.describe is not None:
            return str(self.describe(condition))
        if isinstance(condition, Tensor):
            return str(condition.tolist())
        ids = condition.get("input_ids")
        if ids is not None and self.prompt_tokenizer is not None:
            from lightning_cfgrl.audio.clap import prompt_texts

            batched = {k: v[None] for k, v in condition.items()}
            return prompt_texts(batched, self.prompt_tokenizer)[0]
        # text prompts without a describer or tokenizer: the token ids
        return str(ids.tolist()) if ids is not None else str(sorted(condition))

    def _audio(
        self, pl_module: pl.LightningModule, frames: Tensor, rows: list[dict[str, Any]], step: int
    ) -> None:
        from lightning_cfgrl.io.audio import write_audio

        wav = self.decoder.decode(frames.to(pl_module.device)).float().cpu().mean(1)  # [n, L], mono
        peak = wav.abs().amax(-1, keepdim=True)
        wav = torch.where(peak > 1, wav / peak, wav)  # instead of clipping
        folder = os.path.join(os.path.dirname(self.path), "completions", f"step{step}")
        os.makedirs(folder, exist_ok=True)
        for i, (row, clip) in enumerate(zip(rows, wav, strict=True)):
            path = os.path.join(folder, f"sample{i}.wav")
            write_audio(path, clip, int(self.decoder.sample_rate))
            row["audio"] = os.path.relpath(path, os.path.dirname(self.path))
            row["_clip"] = clip[None]

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        fields = [k for k in rows[0] if not k.startswith("_")]
        append = os.path.exists(self.path)
        if append:  # a resumed run appends under the first header (the objectives publish the same values)
            with open(self.path, newline="", encoding="utf-8") as f:
                fields = next(csv.reader(f), None) or fields
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a" if append else "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
            if not append:
                writer.writeheader()
            writer.writerows(rows)


def _markdown(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in rows[0] if not k.startswith("_") and k != "step"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [
            f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/") for v in (row[k] for k in keys)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["CompletionLogCallback"]
