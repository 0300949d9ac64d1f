"""``AudioSampleLogger``: listen to the generator while it trains, in TensorBoard.

Every ``schedule.every_n_steps`` training steps and at the end of each validation, samples
``clips.num_samples`` sequences for each of a few fixed prompts from ``pl_module.generator`` (same seed
every time, so what changes between logs is the model), decodes them to audio and logs them with
``SummaryWriter.add_audio`` (``<tag>/prompt<p>_<prompt text>/sample<g>``), along with their
within-prompt diversity (``<tag>/diversity``: mean pairwise ``1 - cos`` of ``embedder`` embeddings).
Rank zero only.

The prompt's text comes from ``describe``, else from the datamodule's ``describe_prompt(condition)``
(the built-in and audio datamodules have one). Without a ``TensorBoardLogger`` the clips are written as
WAV files under the first logger's ``log_dir`` (``audio/step<N>/...``) and the diversity goes to every
logger's ``log_metrics``, with one warning saying so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from einops import rearrange
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from lightning_cfgrl.core.checks import check_int, check_seed, check_settings
from lightning_cfgrl.core.condition import Condition, condition_batch_size, condition_to, select_condition
from lightning_cfgrl.core.decoder import AudioDecoder
from lightning_cfgrl.core.eval_mode import eval_mode
from lightning_cfgrl.core.sampling import SamplingConfig, sample
from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity

# TensorBoard's tag alphabet (and a safe file name): anything else becomes "_"
_SAFE = re.compile(r"[^-\w.]+")


@dataclass(frozen=True)
class LoggedClips:
    """What :class:`AudioSampleLogger` generates at each log: the same prompts and seed every time, so
    what changes between logs is the model.

    Args:
        num_prompts: prompts taken from the first batch when the logger's ``prompts`` is not given.
        num_samples: samples per prompt (the diversity needs >= 2).
        num_frames: frames per sample; None: ``pl_module.num_frames`` (``CFGRLModule``'s rollout length).
        seed: sampling seed, the same at every log.
    """

    num_prompts: int = 2
    num_samples: int = 3
    num_frames: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_prompts", "num_samples"):
            value = check_int(f"clips.{name}", getattr(self, name))
            if value < 1:
                raise ValueError(f"clips.{name} must be >= 1, got {value}")
        num_frames = check_int("clips.num_frames", self.num_frames, allow_none=True)
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"clips.num_frames must be >= 1 or None, got {self.num_frames}")
        check_seed(self.seed, "clips.seed")


@dataclass(frozen=True)
class LogSchedule:
    """When :class:`AudioSampleLogger` logs.

    Args:
        every_n_steps: log every this many optimizer steps (0: never during training).
        on_validation: also log at the end of each validation (not the sanity check).
    """

    every_n_steps: int = 500
    on_validation: bool = True

    def __post_init__(self) -> None:
        if check_int("schedule.every_n_steps", self.every_n_steps) < 0:
            raise ValueError(
                f"schedule.every_n_steps must be >= 0 (0 = only at validation), got {self.every_n_steps}"
            )


class AudioSampleLogger(Callback):
    """Log generated audio and its diversity to TensorBoard.

    Args:
        decoder: tokens -> audio. Default: the generator itself if it has ``decode`` and ``sample_rate``
            (``MusicgenGenerator``), else a ``SyntheticSynth`` for the generator's vocabulary.
        prompts: fixed prompt conditions ``[P, ...]`` (e.g. attribute ids ``[[1, 2, 3], [4, 1, 2]]``);
            default: the first ``clips.num_prompts`` conditions of the first batch seen.
        clips: how many prompts, samples and frames, and the seed (:class:`LoggedClips`).
        sampling: how to sample (:class:`~lightning_cfgrl.core.sampling.SamplingConfig`: temperature,
            top_k, top_p, guidance_scale); default: the model's own distribution.
        schedule: when to log (:class:`LogSchedule`).
        embedder: tokens ``[N, K, T]`` -> ``[N, D]`` for the diversity; default token-bigram histograms.
        tag: TensorBoard tag prefix.
        describe: one prompt's condition (``[A]`` ids) -> its text for the tag; default: the
            datamodule's ``describe_prompt``, if it has one.
    """

    # the flat arguments of earlier versions -> their place now (named when an old config gives them)
    moved_settings: ClassVar[dict[str, str]] = {
        **{key: f"clips.{key}" for key in ("num_prompts", "num_samples", "num_frames", "seed")},
        "guidance_scale": "sampling.guidance_scale",
        "temperature": "sampling.temperature",
        "every_n_steps": "schedule.every_n_steps",
        "log_on_validation": "schedule.on_validation",
    }

    def __init__(
        self,
        decoder: AudioDecoder | None = None,
        prompts: list[list[int]] | Tensor | None = None,
        clips: LoggedClips = LoggedClips(),
        sampling: SamplingConfig = SamplingConfig(),
        schedule: LogSchedule = LogSchedule(),
        embedder: nn.Module | None = None,
        tag: str = "audio",
        describe: Callable[[Condition], str] | None = None,
    ) -> None:
        super().__init__()
        clips = check_settings("clips", clips, LoggedClips)
        sampling = check_settings("sampling", sampling, SamplingConfig)
        schedule = check_settings("schedule", schedule, LogSchedule)
        if decoder is not None and not isinstance(decoder, AudioDecoder):
            raise TypeError(
                f"decoder must have .decode(tokens) and .sample_rate, got {type(decoder).__name__}"
            )
        self.decoder, self.embedder = decoder, embedder
        self.prompts: Condition | None = (
            torch.as_tensor(prompts, dtype=torch.long) if prompts is not None else None
        )
        self.clips, self.sampling, self.schedule = clips, sampling, schedule
        # clips.num_frames, else pl_module.num_frames once setup has run
        self.num_frames: int | None = clips.num_frames
        self.tag = tag
        self.describe, self._describe_given = describe, describe
        self._disabled = False
        self._wav_dir: str | None = None  # set when no TensorBoardLogger: WAV files instead
        self._warned: set[str] = set()
        self._last_step = -1

    # -- hooks ---------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        generator = getattr(pl_module, "generator", None)
        if generator is None:
            raise ValueError(
                f"AudioSampleLogger samples pl_module.generator; {type(pl_module).__name__} has none"
            )
        if self.decoder is None:
            if isinstance(generator, AudioDecoder):
                self.decoder = generator
            else:
                from lightning_cfgrl.audio.synth import SyntheticSynth

                self.decoder = SyntheticSynth(vocab_size=generator.vocab_size)
        size = getattr(self.decoder, "codebook_size", None)
        if size is not None and size != generator.vocab_size:
            raise ValueError(
                f"the decoder's codebook_size {size} differs from the generator's vocab_size "
                f"{generator.vocab_size}: its tokens would decode to the wrong sounds"
            )
        if self.num_frames is None:
            self.num_frames = getattr(pl_module, "num_frames", None)
            if self.num_frames is None:
                raise ValueError(
                    f"{type(pl_module).__name__} has no num_frames; pass "
                    "AudioSampleLogger(clips=LoggedClips(num_frames=...))"
                )
        if self.embedder is None:
            from lightning_cfgrl.embedders.histogram import TokenHistogramEmbedder

            self.embedder = TokenHistogramEmbedder(generator.vocab_size)
        self.describe = self._describe_given or getattr(trainer.datamodule, "describe_prompt", None)
        self._disabled, self._wav_dir = False, None
        if isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy)):
            self._disable(
                f"AudioSampleLogger is off under {type(trainer.strategy).__name__}: sampling a sharded "
                "model on rank zero alone would hang"
            )
        elif not trainer.loggers:
            self._disable(
                "AudioSampleLogger has no logger to write to (Trainer(logger=False)): no audio is logged"
            )
        elif not any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):
            first = trainer.loggers[0]
            self._wav_dir = os.path.join(first.log_dir or trainer.default_root_dir, self.tag)
            self._warn_once(
                f"AudioSampleLogger plays audio in TensorBoard, and the Trainer has no TensorBoardLogger "
                f"(loggers: {', '.join(type(lg).__name__ for lg in trainer.loggers)}): writing WAV files under "
                f"{self._wav_dir} instead, and the diversity to the loggers' metrics"
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._capture_prompts(batch)

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._capture_prompts(batch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        every = self.schedule.every_n_steps
        if every and step > 0 and step % every == 0:
            self.log_samples(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.on_validation and not trainer.sanity_checking:
            self.log_samples(trainer, pl_module)

    # -- logging -------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Tensor] | None:
        """Sample, decode and log now (once per global step); returns what was logged, or None."""
        step = trainer.global_step
        if self._disabled or not trainer.is_global_zero or self.prompts is None or step == self._last_step:
            return None
        self._last_step = step
        generator = pl_module.generator
        prompts = condition_to(self.prompts, pl_module.device)
        with eval_mode(generator):
            steps = sample(
                generator,
                prompts,
                self.num_frames,
                self.sampling,
                num_samples=self.clips.num_samples,
                seed=self.clips.seed,
            )
        frames = generator.pattern.steps_to_frames(steps)  # [P * G, K, T]
        wav = self.decoder.decode(frames).float().cpu()  # [P * G, C, L]
        wav = wav.mean(1, keepdim=True)  # TensorBoard plays mono
        peak = wav.abs().amax(dim=(1, 2), keepdim=True)
        wav = torch.where(peak > 1, wav / peak, wav)  # instead of TensorBoard's clipping
        names = [self._clip_name(p) for p in range(condition_batch_size(self.prompts))]
        num_prompts = len(names)
        writer = next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        for i, clip in enumerate(wav):
            p, g = divmod(i, self.clips.num_samples)
            if writer is not None:
                writer.add_audio(
                    f"{self.tag}/{names[p]}/sample{g}", clip, step, sample_rate=self.decoder.sample_rate
                )
            else:
                from lightning_cfgrl.io.audio import write_audio

                folder = os.path.join(self._wav_dir, f"step{step}", names[p])
                os.makedirs(folder, exist_ok=True)
                partial = os.path.join(folder, f".sample{g}.partial.wav")  # then renamed: atomic
                write_audio(partial, clip, self.decoder.sample_rate)
                os.replace(partial, os.path.join(folder, f"sample{g}.wav"))
        logged = {"audio": rearrange(wav, "(p g) 1 l -> p g l", p=num_prompts)}
        if self.clips.num_samples >= 2:
            param = next(self.embedder.parameters(), None)  # a frozen embedder may live elsewhere
            embeddings = self.embedder(frames.to(param.device) if param is not None else frames).float().cpu()
            diversity = pairwise_cosine_diversity(rearrange(embeddings, "(p g) d -> p g d", p=num_prompts))
            if writer is not None:
                writer.add_scalar(f"{self.tag}/diversity", float(diversity.mean()), step)
            else:
                for lg in trainer.loggers:
                    lg.log_metrics({f"{self.tag}/diversity": float(diversity.mean())}, step)
            logged["diversity"] = diversity.cpu()
        return logged

    # -- helpers -------------------------------------------------------------------------------------
    def _capture_prompts(self, batch: Any) -> None:
        if self.prompts is not None or not isinstance(batch, dict) or "condition" not in batch:
            return
        condition = batch["condition"]
        count = min(self.clips.num_prompts, condition_batch_size(condition))
        self.prompts = condition_to(select_condition(condition, slice(0, count)), "cpu")

    def _clip_name(self, p: int) -> str:
        """``prompt<p>_<text>`` (text made tag- and file-safe), or ``prompt<p>`` without a description."""
        if self.describe is None:
            return f"prompt{p}"
        text = _SAFE.sub("_", str(self.describe(select_condition(self.prompts, p)))).strip("_")
        return f"prompt{p}_{text[:80]}" if text else f"prompt{p}"

    def _disable(self, message: str) -> None:
        self._disabled = True
        self._warn_once(message)

    def _warn_once(self, message: str) -> None:
        # setup runs once per fit/validate; one warning per kind of problem is enough
        if message not in self._warned:
            self._warned.add(message)
            rank_zero_warn(message)

    @property
    def state_key(self) -> str:
        # one logger per tag can sit on a Trainer (e.g. one every N steps, one at validation)
        return self._generate_state_key(tag=self.tag)

    def state_dict(self) -> dict[str, Any]:
        # the captured prompts are kept, so a resumed run goes on logging the same prompts
        return {"prompts": self.prompts, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.prompts = state_dict.get("prompts", self.prompts)
        self._last_step = state_dict.get("last_step", -1)


__all__ = ["AudioDecoder", "AudioSampleLogger", "LogSchedule", "LoggedClips"]
