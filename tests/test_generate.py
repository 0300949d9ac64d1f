"""``cfgrl generate``: tokens (safetensors) and playable WAVs for the synthetic domain; bad input fails
before the first sample."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_cfgrl.audio import GenerationConfig, SyntheticSynth, generate, read_audio
from lightning_cfgrl.cli.main import main
from lightning_cfgrl.core.sampling import DecodeConfig, SamplingConfig, sample
from lightning_cfgrl.io.checkpoints import atomic_save, load_safetensors
from lightning_cfgrl.io.generators import load_generator
from lightning_cfgrl.models import AudioTokenTransformer
from tests.helpers.compiler import needs_cxx

# the synthetic domain's shape (K = 2, V = 32, genre x mood x tempo), small and untrained
SYNTHETIC = dict(
    num_codebooks=2,
    vocab_size=32,
    condition_sizes=(4, 4, 3),
    dim=16,
    num_layers=1,
    num_heads=2,
    max_frames=16,
)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**SYNTHETIC)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    path = tmp_path / "model.ckpt"
    atomic_save(
        {"state_dict": state, "hyper_parameters": {"generator": generator.spec(), "num_frames": 12}}, path
    )
    return path


def test_generate_writes_tokens_and_playable_wavs(checkpoint, tmp_path, capsys):
    out = tmp_path / "samples"
    prompts = [[1, 1, 1], [4, 3, 2], [2, 4, 3]]
    argv = [
        "generate",
        "--checkpoint",
        str(checkpoint),
        "--prompts",
        json.dumps(prompts),
        "--num_samples",
        "2",
    ]
    argv += ["--guidance", "2.0", "--decoder", "synth", "--batch_size", "2", "--seed", "5", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err

    tokens = load_safetensors(out / "tokens.safetensors", mmap=False)
    frames = tokens["frames"]
    assert frames.dtype == torch.int64 and frames.shape == (6, 2, 12)  # num_frames from the checkpoint
    assert (
        tokens["prompt_index"].tolist() == [0, 0, 1, 1, 2, 2]
        and tokens["sample_index"].tolist() == [0, 1] * 3
    )
    assert tokens["condition"].tolist() == prompts
    # the same tokens as sampling directly: prompt batch b with seed 5 + b
    generator = load_generator(str(checkpoint))
    config = SamplingConfig(guidance_scale=2.0)
    expected = [
        generator.pattern.steps_to_frames(
            sample(generator, torch.tensor(batch), 12, config, num_samples=2, seed=5 + b)
        )
        for b, batch in enumerate([prompts[:2], prompts[2:]])
    ]
    assert torch.equal(frames, torch.cat(expected))

    synth = SyntheticSynth(vocab_size=32)
    for i in range(6):
        wav, rate = read_audio(out / "audio" / f"prompt{i // 2:03d}_sample{i % 2:02d}.wav")
        assert rate == 16_000 and wav.shape == (1, 12 * synth.samples_per_frame)
        assert wav.abs().max() > 0.1  # audible
        # what the synth renders, up to 16-bit quantisation
        assert (wav - synth.decode(frames[i : i + 1])[0]).abs().max() <= 1 / 32768 + 1e-6
    meta = json.loads((out / "generation.json").read_text())
    assert (
        meta["sampling"]["guidance_scale"] == 2.0
        and meta["sample_rate"] == 16_000
        and len(meta["audio"]) == 6
    )


@pytest.fixture
def no_sampling(monkeypatch):
    calls = []
    monkeypatch.setattr("lightning_cfgrl.audio.generation.sample", lambda *a, **k: calls.append(a))
    return calls


BAD = {
    "out is a file": (["--out", "{file}"], "is a file; expected a folder"),
    "decoder vocabulary": (
        [
            "--decoder.class_path",
            "lightning_cfgrl.audio.SyntheticSynth",
            "--decoder.init_args.vocab_size",
            "16",
        ],
        "the decoder's vocabulary (16 ids) differs from the generator's vocab_size 32",
    ),
    "unknown decoder": (
        ["--decoder", "speaker"],
        "decoder must be 'synth', 'generator', a decoder object or None",
    ),
    "not a self-decoding model": (
        ["--decoder", "generator"],
        "decoder='generator' needs a generator with decode()",
    ),
    "frames exceed the model": (["--num_frames", "40"], "num_frames=40 needs 41 decoding steps"),
    "zero samples": (["--num_samples", "0"], "num_samples must be an integer >= 1, got 0"),
    "bad guidance": (["--guidance", "-1"], "guidance_scale must be a finite number >= 0, got -1.0"),
    "missing checkpoint": (["--checkpoint", "{missing}"], "does not exist"),
    "empty prompts": (["--prompts", "[]"], "prompts must be a non-empty list of prompts"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_generate_arguments_fail_before_sampling(case, checkpoint, tmp_path, no_sampling, capsys):
    (tmp_path / "a_file").write_text("x")
    args, message = BAD[case]
    args = [a.format(file=tmp_path / "a_file", missing=tmp_path / "missing.ckpt") for a in args]
    base = {"--checkpoint": str(checkpoint), "--prompts": "[[1, 1, 1]]", "--out": str(tmp_path / "o")}
    for key, value in base.items():
        if key not in args:
            args += [key, value]
    code = main(["generate", *args])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and no_sampling == []
    assert last_line.startswith("cfgrl generate: error:") and message in last_line, last_line
    assert not (tmp_path / "o").exists()


def test_generate_decodes_with_encodec(checkpoint, tmp_path):
    from lightning_cfgrl.audio import EncodecTokenizer, generate
    from tests.test_audio_tokenizer import small_codec

    tokenizer = EncodecTokenizer(codec=small_codec(), bandwidth=2.5)  # K = 2 codebooks of 32
    files = generate(
        str(checkpoint),
        torch.tensor([[1, 2, 3]]),
        tmp_path / "enc",
        GenerationConfig(num_samples=2),
        decoder=tokenizer,
        progress=False,
    )
    assert [p.name for p in files.audio] == ["prompt000_sample00.wav", "prompt000_sample01.wav"]
    expected = tokenizer.decode(files.frames)  # [2, 1, 12 * hop]
    for path, reference in zip(files.audio, expected, strict=True):
        wav, rate = read_audio(path)
        assert rate == tokenizer.sample_rate and wav.shape == (1, 12 * tokenizer.hop_length)
        assert (wav - reference.clamp(-1, 1)).abs().max() <= 1 / 32768 + 1e-6


@pytest.mark.slow
@needs_cxx
def test_generate_compiled_writes_the_eager_tokens(checkpoint, tmp_path, capsys):
    """``--compile true``: the static-shape decode step compiled (one trace for the batch of 2 prompts x
    2 samples; the last batch of 1 prompt traces again), the same tokens as eager, recorded in metadata."""
    prompts = json.dumps([[1, 1, 1], [4, 3, 2], [2, 4, 3]])
    common = ["generate", "--checkpoint", str(checkpoint), "--prompts", prompts, "--num_samples", "2"]
    common += ["--guidance", "2.0", "--batch_size", "2", "--seed", "5"]
    assert main([*common, "--out", str(tmp_path / "eager")]) == 0, capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "compiled"), "--compile", "true"]) == 0, (
        capsys.readouterr().err
    )
    eager = load_safetensors(tmp_path / "eager" / "tokens.safetensors", mmap=False)["frames"]
    compiled = load_safetensors(tmp_path / "compiled" / "tokens.safetensors", mmap=False)["frames"]
    assert torch.equal(compiled, eager)
    assert json.loads((tmp_path / "compiled" / "generation.json").read_text())["compiled"] is True


@pytest.mark.parametrize("cls", [GenerationConfig, DecodeConfig])
def test_generation_settings_are_typed_dataclasses_with_documented_fields(cls):
    import dataclasses

    import docstring_parser

    documented = {p.arg_name for p in docstring_parser.parse(cls.__doc__).params}
    assert {f.name for f in dataclasses.fields(cls)} == documented


def test_generation_settings_are_checked_where_they_are_built(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        GenerationConfig(batch_size=0)
    with pytest.raises(TypeError, match="sampling must be a SamplingConfig"):
        GenerationConfig(sampling={"temperature": 0.5})
    with pytest.raises(TypeError, match="decoding.use_cache must be True or False"):
        DecodeConfig(use_cache=None)
    with pytest.raises(TypeError, match="a SamplingConfig goes in its sampling field"):
        generate(str(checkpoint), torch.tensor([[1, 1, 1]]), tmp_path / "o", SamplingConfig())
