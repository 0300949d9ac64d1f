"""SyntheticSynth (tokens -> sound) and AudioSampleLogger (samples -> TensorBoard audio + diversity)."""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_cfgrl import SamplingConfig, sample
from lightning_cfgrl.audio import EncodecTokenizer, SyntheticSynth
from lightning_cfgrl.callbacks.audio_logger import AudioSampleLogger, LoggedClips, LogSchedule
from lightning_cfgrl.eval.diversity import pairwise_cosine_diversity
from lightning_cfgrl.experiments import SyntheticMusic, SyntheticMusicDataModule
from lightning_cfgrl.io.audio import read_audio
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.pretrain import PretrainModule
from tests.helpers.audio import small_codec

# -- SyntheticSynth ------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_thread")


def _spectrum(x: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    window = torch.hann_window(x.shape[-1], periodic=False, dtype=torch.float64)
    mags = torch.fft.rfft(x.double() * window).abs()
    return torch.fft.rfftfreq(x.shape[-1], 1 / sample_rate), mags


def test_synth_pitch_timbre_silence_and_smooth_joins():
    synth = SyntheticSynth(vocab_size=32)
    n = synth.samples_per_frame
    assert (synth.sample_rate, n) == (16_000, 2000)
    tokens = torch.tensor([[[0, 12, 21, 32, 21, 21], [0, 0, 0, 0, 16, 31]]])  # [1, 2, 6]; 32 = pad
    wav = synth.decode(tokens)
    assert wav.shape == (1, 1, 6 * n) and float(wav.abs().max()) <= 1.0
    frames = wav[0, 0].reshape(6, n)
    for i, expected in enumerate([130.81, 261.63, 440.0]):  # C3, C4 (+12 semitones), A4 (+21)
        freqs, mags = _spectrum(frames[i], synth.sample_rate)
        assert abs(float(freqs[mags.argmax()]) - expected) < synth.sample_rate / n, (i, expected)
    assert float(frames[3].abs().max()) == 0.0, "pad id: a silent frame"

    def centroid(frame):
        freqs, mags = _spectrum(frame, synth.sample_rate)
        return float((freqs * mags).sum() / mags.sum())

    assert centroid(frames[2]) < centroid(frames[4]) < centroid(frames[5]), "codebook 1 brightens the timbre"

    assert float(frames[:, [0, -1]].abs().max()) < 0.01, "each note fades in and out: no clicks at the joins"
    assert float(wav.diff().abs().max()) < 2 * math.pi * 6 * 1000 / 16_000, (
        "no jump steeper than its partials"
    )
    assert torch.equal(synth.decode(tokens[0]), wav[0])  # [K, T] in, [1, L] out


def test_synth_errors():
    with pytest.raises(ValueError, match=r"frame_seconds \(0.01\) must exceed 2 \* fade_seconds \(0.01\)"):
        SyntheticSynth(frame_seconds=0.01)
    with pytest.raises(ValueError, match=r"tokens must be integer ids .*float32"):
        SyntheticSynth().decode(torch.zeros(1, 2, 3))


# -- AudioSampleLogger -----------------------------------------------------------------------------------

NUM_FRAMES = 4


def _module(vocab_size: int = 32) -> PretrainModule:
    torch.manual_seed(0)
    generator = AudioTokenTransformer(
        num_codebooks=2,
        vocab_size=vocab_size,
        condition_sizes=(4, 4, 3),
        dim=16,
        num_layers=1,
        num_heads=2,
        max_frames=32,
    )
    return PretrainModule(generator, learning_rate=1e-2)


def _trainer(tmp_path, callbacks, logger, **kwargs) -> pl.Trainer:
    settings = dict(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
    )
    return pl.Trainer(**{**settings, **kwargs})


def _data() -> SyntheticMusicDataModule:
    return SyntheticMusicDataModule(SyntheticMusic(), num_train=8, num_val=4, batch_size=4)


def _pcm(event) -> np.ndarray:
    with wave.open(io.BytesIO(event.encoded_audio_string)) as f:
        assert f.getnchannels() == 1
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2") / np.iinfo(np.int16).max


@pytest.mark.slow  # trains a model
def test_logs_audio_and_diversity_to_tensorboard(tmp_path):
    every_step = AudioSampleLogger(
        tag="train_audio",
        clips=LoggedClips(num_prompts=2, num_samples=3, num_frames=NUM_FRAMES, seed=5),
        schedule=LogSchedule(every_n_steps=1, on_validation=False),
    )
    at_validation = AudioSampleLogger(
        prompts=[[1, 2, 3]],
        tag="val_audio",
        clips=LoggedClips(num_samples=2, num_frames=NUM_FRAMES),
        schedule=LogSchedule(every_n_steps=0),
        sampling=SamplingConfig(guidance_scale=3.0),
    )
    module = _module()
    logger = TensorBoardLogger(tmp_path, name="tb")
    _trainer(tmp_path, [every_step, at_validation], logger).fit(module, _data())  # 2 steps, then validation

    events = EventAccumulator(logger.log_dir, size_guidance={"audio": 0, "scalars": 0})
    events.Reload()
    # the prompt's text is in the tag: the datamodule's describe_prompt, e.g. "jazz, dark, fast"
    prompts = every_step.prompts
    assert prompts.shape == (2, 3)
    names = [f"prompt{p}_" + SyntheticMusic().describe(prompts[p]).replace(", ", "_") for p in range(2)]
    tags = set(events.Tags()["audio"])
    assert tags == {f"train_audio/{names[p]}/sample{g}" for p in range(2) for g in range(3)} | {
        "val_audio/prompt0_ambient_happy_fast/sample0",
        "val_audio/prompt0_ambient_happy_fast/sample1",
    }
    clip = events.Audio(f"train_audio/{names[1]}/sample2")
    assert [e.step for e in clip] == [1, 2]
    assert clip[-1].sample_rate == 16_000 and clip[-1].length_frames == NUM_FRAMES * 2000
    assert [e.step for e in events.Audio("val_audio/prompt0_ambient_happy_fast/sample0")] == [2], (
        "validation only, no sanity check"
    )

    # the last clips are exactly what the final generator samples with that seed, rendered by the synth
    steps = sample(module.generator.eval(), prompts, NUM_FRAMES, SamplingConfig(), num_samples=3, seed=5)
    frames = module.generator.pattern.steps_to_frames(steps)
    expected = SyntheticSynth(vocab_size=32).decode(frames)[:, 0].numpy()
    for i in range(6):
        logged = _pcm(events.Audio(f"train_audio/{names[i // 3]}/sample{i % 3}")[-1])
        np.testing.assert_allclose(logged, expected[i], atol=2e-4)

    diversity = events.Scalars("train_audio/diversity")
    assert [e.step for e in diversity] == [1, 2]
    from lightning_cfgrl.embedders import TokenHistogramEmbedder

    reference = pairwise_cosine_diversity(TokenHistogramEmbedder(32)(frames).reshape(2, 3, -1)).mean()
    assert diversity[-1].value == pytest.approx(float(reference), abs=1e-6)
    assert 0.0 < diversity[-1].value <= 2.0


@pytest.mark.slow  # trains a model
def test_encodec_decoder_and_other_loggers(tmp_path):
    tokenizer = EncodecTokenizer(small_codec(), bandwidth=2.5)  # 2 codebooks of 32, 4 kHz, hop 16
    callback = AudioSampleLogger(
        tokenizer,
        clips=LoggedClips(num_prompts=1, num_samples=2, num_frames=NUM_FRAMES),
        schedule=LogSchedule(every_n_steps=1, on_validation=False),
        describe=lambda condition: f"my prompt: {condition.tolist()}",  # any text; made tag-safe
    )
    logger = TensorBoardLogger(tmp_path, name="tb")
    _trainer(tmp_path, [callback], logger, max_steps=1, limit_val_batches=0).fit(_module(), _data())
    events = EventAccumulator(logger.log_dir, size_guidance={"audio": 0})
    events.Reload()
    ids = "_".join(str(i) for i in callback.prompts[0].tolist())
    clip = events.Audio(f"audio/prompt0_my_prompt_{ids}/sample1")[0]
    assert (clip.sample_rate, clip.length_frames) == (4000, NUM_FRAMES * 16)
    assert np.abs(_pcm(clip)).max() > 0

    with pytest.warns(UserWarning, match="no logger to write to") as record:
        _trainer(
            tmp_path,
            [
                AudioSampleLogger(
                    clips=LoggedClips(num_frames=NUM_FRAMES), schedule=LogSchedule(every_n_steps=1)
                )
            ],
            False,
        ).fit(_module(), _data())
    assert sum("no logger" in str(w.message) for w in record) == 1
    with pytest.raises(ValueError, match="codebook_size 32 differs from the generator's vocab_size 16"):
        _trainer(
            tmp_path, [AudioSampleLogger(tokenizer, clips=LoggedClips(num_frames=NUM_FRAMES))], False
        ).fit(_module(16), _data())
    with pytest.raises(ValueError, match=r"clips.num_samples must be >= 1, got 0"):
        AudioSampleLogger(clips=LoggedClips(num_samples=0))


@pytest.mark.slow  # trains a model
def test_other_loggers_get_wav_files_and_the_diversity_with_one_warning(tmp_path):
    callback = AudioSampleLogger(
        prompts=[[1, 2, 3]],
        clips=LoggedClips(num_samples=2, num_frames=NUM_FRAMES),
        schedule=LogSchedule(every_n_steps=1, on_validation=False),
    )
    csv = CSVLogger(tmp_path, name="csv")
    module = _module()
    with pytest.warns(
        UserWarning, match="the Trainer has no TensorBoardLogger \\(loggers: CSVLogger\\)"
    ) as record:
        _trainer(tmp_path, [callback], csv, limit_val_batches=0).fit(module, _data())
    assert sum("TensorBoardLogger" in str(w.message) for w in record) == 1, "one warning, not one per step"
    folder = Path(csv.log_dir) / "audio"
    wavs = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.wav"))
    assert wavs == [f"step{s}/prompt0_ambient_happy_fast/sample{g}.wav" for s in (1, 2) for g in (0, 1)]
    steps = sample(
        module.generator.eval(), callback.prompts, NUM_FRAMES, SamplingConfig(), num_samples=2, seed=0
    )
    expected = SyntheticSynth(vocab_size=32).decode(module.generator.pattern.steps_to_frames(steps))
    wav, rate = read_audio(folder / "step2/prompt0_ambient_happy_fast/sample1.wav")
    assert rate == 16_000
    np.testing.assert_allclose(wav[0].numpy(), expected[1, 0].numpy(), atol=1 / 32768)
    metrics = (Path(csv.log_dir) / "metrics.csv").read_text()
    assert "audio/diversity" in metrics.splitlines()[0]
