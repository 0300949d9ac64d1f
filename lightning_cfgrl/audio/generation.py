"""Sample a checkpoint's generator on prompts and write the tokens, and audio when a decoder is given.

``generate(...)`` (and ``cfgrl generate``) writes into ``out``:

* ``tokens.safetensors``: ``frames`` int64 ``[P * G, K, T]`` (the G samples of a prompt adjacent),
  ``prompt_index`` and ``sample_index`` int64 ``[P * G]``, and the prompts as ``condition`` (or
  ``condition.<key>`` for a dict condition) ``[P, ...]``; safetensors, so loading it runs no code;
* ``audio/prompt<p>_sample<g>.wav`` per sample when a decoder is configured (16-bit PCM), and
  ``audio/prompt<p>_sample<g>.mid`` beside it when the decoder writes MIDI (has ``write_midi``, e.g.
  ``lightning_cfgrl.experiments.folk.FolkRenderer``);
* ``generation.json``: the checkpoint (with its sha256), the sampling settings, seeds and file names.

Every argument is checked and the checkpoint loaded before the first sample; every file is written
atomically. What is drawn is a :class:`GenerationConfig`; prompt batch b is sampled with seed
``seed + b``, so the tokens depend on the checkpoint, the prompts and that object only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lightning_cfgrl.core.condition import Condition, condition_batch_size, condition_to, select_condition
from lightning_cfgrl.core.controls import DIVERSITY_WEIGHT, GUIDANCE, check_controls, expand_controls
from lightning_cfgrl.core.decoder import AudioDecoder
from lightning_cfgrl.core.sampling import DecodeConfig, SamplingConfig, check_compilable, sample
from lightning_cfgrl.eval.plan import load_candidate
from lightning_cfgrl.io.audio import write_audio
from lightning_cfgrl.io.checkpoints import (
    atomic_save_json,
    atomic_save_safetensors,
    file_sha256,
    load_checkpoint,
)
from lightning_cfgrl.io.outputs import check_not_an_input


@dataclass
class GeneratedFiles:
    """What :func:`generate` wrote."""

    tokens: Path
    metadata: Path
    audio: list[Path] = field(default_factory=list)
    frames: Tensor | None = None  # [P * G, K, T] int64


@dataclass(frozen=True)
class GenerationConfig:
    """What :func:`generate` draws; the tokens depend on the checkpoint, the prompts and these settings only.

    Args:
        num_samples: G samples per prompt (the G samples of a prompt are adjacent in the output).
        num_frames: frames T per sample (None: the ``rollout.num_frames`` the checkpoint recorded).
        sampling: temperature / top-k / top-p / guidance; the default is the model's own distribution.
        seed: prompt batch b is sampled with seed ``seed + b``.
        batch_size: prompts per sampling call (the tokens depend on it, through the seeds).
        controls: the control values of a steerable student (``{"guidance_scale": 3.0,
            "diversity_weight": 0.0}``), every control it takes; ``"off"`` samples it with the control
            path off, a mode it never trained in, so only on request.
        decoding: KV cache and ``torch.compile`` (:class:`~lightning_cfgrl.core.sampling.DecodeConfig`):
            the tokens do not depend on it (compiled: up to the rounding of the logits).
    """

    num_samples: int = 1
    num_frames: int | None = None
    sampling: SamplingConfig = SamplingConfig()
    seed: int = 0
    batch_size: int = 8
    controls: Mapping[str, float] | str | None = None
    decoding: DecodeConfig = DecodeConfig()

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch_size", "num_frames"):
            value = getattr(self, name)
            if name == "num_frames" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, cls in (("sampling", SamplingConfig), ("decoding", DecodeConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")


def resolve_decoder(decoder: AudioDecoder | str | None, generator: nn.Module) -> AudioDecoder | None:
    """``None``; ``"synth"`` (a :class:`~lightning_cfgrl.audio.SyntheticSynth` for the generator's
    vocabulary); ``"generator"`` (a generator that decodes its own tokens, e.g. MusicGen's); or a decoder
    (``EncodecTokenizer``, ``SyntheticSynth``, anything with ``decode`` and ``sample_rate``), checked to
    match the generator's vocabulary and codebooks."""
    if decoder is None:
        return None
    if decoder == "synth":
        from lightning_cfgrl.audio.synth import SyntheticSynth

        return SyntheticSynth(vocab_size=generator.vocab_size)
    if decoder == "generator":
        if not isinstance(generator, AudioDecoder):
            raise ValueError(
                f"decoder='generator' needs a generator with decode() and sample_rate; {type(generator).__name__} "
                "has none: use decoder='synth' or an EncodecTokenizer"
            )
        return generator
    if isinstance(decoder, str):
        raise ValueError(f"decoder must be 'synth', 'generator', a decoder object or None, got {decoder!r}")
    if not isinstance(decoder, AudioDecoder):
        raise TypeError(f"decoder must have .decode(tokens) and .sample_rate, got {type(decoder).__name__}")
    size = getattr(decoder, "codebook_size", None) or getattr(decoder, "vocab_size", None)
    if size is not None and int(size) != generator.vocab_size:
        raise ValueError(
            f"the decoder's vocabulary ({size} ids) differs from the generator's vocab_size "
            f"{generator.vocab_size}: its tokens would decode to the wrong sounds"
        )
    k = getattr(decoder, "num_codebooks", None)
    if isinstance(k, int) and k != generator.num_codebooks:
        raise ValueError(f"the decoder reads {k} codebooks, the generator writes {generator.num_codebooks}")
    return decoder


def checkpoint_num_frames(path: str) -> int | None:
    """``num_frames`` a training checkpoint recorded in its hyperparameters (``CFGRLModule``'s
    ``rollout.num_frames``, or the flat ``num_frames`` of checkpoints written before the grouping), if any."""
    if Path(path).is_dir():  # a transformers folder records none
        return None
    hparams = load_checkpoint(path, mmap=True).get("hyper_parameters", {})
    rollout = hparams.get("rollout") if isinstance(hparams, dict) else None
    value = rollout.get("num_frames") if isinstance(rollout, dict) else hparams.get("num_frames")
    return int(value) if isinstance(value, int) else None


def generate(
    checkpoint: str,
    prompts: Condition,
    out: str | Path,
    settings: GenerationConfig = GenerationConfig(),
    decoder: AudioDecoder | str | None = None,
    device: str = "cpu",
    progress: bool = True,
    prompt_texts: Sequence[str] | None = None,
) -> GeneratedFiles:
    """Sample ``settings.num_samples`` sequences per prompt ``[P, ...]`` from ``checkpoint`` and write them
    (module docs). ``checkpoint`` may also be a transformers folder (a local MusicGen); ``settings`` says
    what is drawn (:class:`GenerationConfig`); ``decoder`` turns tokens into audio (:func:`resolve_decoder`);
    ``prompt_texts``: the prompts as text, recorded in ``generation.json`` beside their index."""
    if not isinstance(settings, GenerationConfig):
        raise TypeError(
            f"settings must be a GenerationConfig (a SamplingConfig goes in its sampling field), got "
            f"{type(settings).__name__}"
        )
    config, num_samples, batch_size = settings.sampling, settings.num_samples, settings.batch_size
    num_frames, seed, compile = settings.num_frames, settings.seed, settings.decoding.compile
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; expected a folder (existing or to create)")
    for name in ("tokens.safetensors", "generation.json"):  # the files this writes, never an input
        check_not_an_input(out / name, {"checkpoint": checkpoint}, flag=f"out={str(out)!r} ({name})")
    _check_device(device)
    num_prompts = condition_batch_size(prompts)
    if num_prompts == 0:
        raise ValueError("prompts holds no prompt")
    generator = load_candidate(str(checkpoint))
    if num_frames is None:
        num_frames = checkpoint_num_frames(checkpoint)
        if num_frames is None:
            raise ValueError(f"{checkpoint} records no num_frames; pass num_frames (--num_frames)")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    max_steps = getattr(generator, "max_steps", None)
    if isinstance(max_steps, int) and generator.pattern.num_steps(num_frames) > max_steps:
        raise ValueError(
            f"num_frames={num_frames} needs {generator.pattern.num_steps(num_frames)} decoding steps, more than "
            f"the generator's max_steps={max_steps}"
        )
    controls = resolve_controls(settings.controls, generator, checkpoint)
    if prompt_texts is not None and len(prompt_texts) != num_prompts:
        raise ValueError(f"prompt_texts has {len(prompt_texts)} entries for {num_prompts} prompts")
    decoder = resolve_decoder(decoder, generator)
    if compile:
        check_compilable(generator)
    generator = generator.to(device).eval()

    batches = [slice(i, min(i + batch_size, num_prompts)) for i in range(0, num_prompts, batch_size)]
    frames: list[Tensor] = []
    written: list[Path] = []
    with tqdm(
        total=num_prompts * num_samples, desc="cfgrl generate", unit="sample", disable=not progress
    ) as bar:
        if compile and progress:  # the bar stands still meanwhile: say why
            bar.write("compiling the decode step (torch.compile, once per batch shape: ~10-40 s on a CPU)")
        for b, part in enumerate(batches):
            condition = condition_to(select_condition(prompts, part), device)
            steps = sample(
                generator,
                condition,
                num_frames,
                config,
                num_samples=num_samples,
                seed=seed + b,
                controls=controls or None,
                decoding=settings.decoding,
            )
            chunk = generator.pattern.steps_to_frames(steps).cpu()  # [n * G, K, T]
            frames.append(chunk)
            if decoder is not None:
                wavs = decoder.decode(chunk).detach().float().cpu()  # [n * G, C, L]
                for j, wav in enumerate(wavs):
                    p, g = part.start + j // num_samples, j % num_samples
                    path = out / "audio" / f"prompt{p:03d}_sample{g:02d}.wav"
                    write_audio(path, wav, int(decoder.sample_rate))
                    written.append(path)
                    if callable(getattr(decoder, "write_midi", None)):  # a symbolic decoder: MIDI too
                        written.append(decoder.write_midi(chunk[j], path.with_suffix(".mid")))
            bar.update(chunk.shape[0])
    all_frames = torch.cat(frames)  # [P * G, K, T]
    prompt_index = torch.arange(num_prompts).repeat_interleave(num_samples)
    sample_index = torch.arange(num_samples).repeat(num_prompts)
    tensors = {"frames": all_frames, "prompt_index": prompt_index, "sample_index": sample_index}
    tensors.update(_condition_tensors(prompts))
    atomic_save_safetensors(tensors, out / "tokens.safetensors", metadata={"format": "cfgrl-generate"})
    metadata = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": _sha256(checkpoint),
        "num_prompts": num_prompts,
        "prompts": list(prompt_texts) if prompt_texts is not None else None,
        "controls": controls or None,
        "num_samples": num_samples,
        "num_frames": num_frames,
        "sampling": {
            "guidance_scale": config.guidance_scale,
            "temperature": config.temperature,
            "top_k": config.top_k,
            "top_p": config.top_p,
        },
        "compiled": compile,
        "seed": seed,
        "batch_size": batch_size,
        "tokens": "tokens.safetensors",
        "audio": [str(p.relative_to(out)) for p in written],
        "decoder": None if decoder is None else type(decoder).__name__,
        "sample_rate": None if decoder is None else int(decoder.sample_rate),
    }
    atomic_save_json(metadata, out / "generation.json")
    return GeneratedFiles(out / "tokens.safetensors", out / "generation.json", written, all_frames)


CONTROLS_OFF = "off"


def resolve_controls(
    controls: Mapping[str, float] | str | None, generator: nn.Module, checkpoint: str | Path
) -> dict[str, float]:
    """The controls to sample with (``{}``: none). A steerable generator (one with ``control_names``) is
    refused without a value for each of its controls, unless ``controls == "off"`` says so explicitly."""
    accepted = tuple(getattr(generator, "control_names", None) or ())
    if controls == CONTROLS_OFF:
        return {}
    if isinstance(controls, str):
        raise ValueError(f"controls must be a mapping {{name: value}}, 'off' or None, got {controls!r}")
    given = {str(k): float(v) for k, v in (controls or {}).items()}
    if given:
        check_controls(generator, expand_controls(given, 1, 1), 1)  # names the generator and the control
    missing = [name for name in accepted if name not in given]
    if missing:
        example = ", ".join(f"{name}: {DEFAULT_CONTROL.get(name, 1.0):g}" for name in accepted)
        raise ValueError(
            f"{checkpoint} is a steerable student (controls {list(accepted)}), trained with a value for each; "
            f"without {missing} it would be sampled in a mode it never trained in. Pass them, e.g. "
            f"--controls '{{{example}}}', or --controls off to sample with the control path off on purpose"
        )
    return given


# example values in the message above: the shipped recipe's reference guidance and quality setting
DEFAULT_CONTROL = {GUIDANCE: 3.0, DIVERSITY_WEIGHT: 0.0}


def _sha256(path: str | Path) -> str | None:
    """A checkpoint file's sha256; for a transformers folder, that of its weights file (if one)."""
    if Path(path).is_dir():
        weights = Path(path) / "model.safetensors"
        return file_sha256(weights) if weights.is_file() else None
    return file_sha256(path)


def _check_device(device: str) -> None:
    """Fail before loading anything on a device string torch does not know or a backend not available."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); e.g. 'cpu' or 'cuda:0'") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(kind)
    if available is not None and not available():
        raise ValueError(
            f"device {device!r} was asked for, but {kind} is not available on this machine; use 'cpu'"
        )


def _condition_tensors(prompts: Condition) -> dict[str, Tensor]:
    if isinstance(prompts, Tensor):
        return {"condition": prompts.detach().cpu().contiguous()}
    return {f"condition.{k}": v.detach().cpu().contiguous() for k, v in prompts.items()}


__all__ = [
    "CONTROLS_OFF",
    "GeneratedFiles",
    "GenerationConfig",
    "checkpoint_num_frames",
    "generate",
    "resolve_controls",
    "resolve_decoder",
]
