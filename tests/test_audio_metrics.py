"""Audio metrics with local weights: the Fréchet distance (closed forms, float64), FAD and CLAP
text-adherence scorers on tiny random models, and FAD through ``cfgrl evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from lightning_cfgrl.audio.scorers import (  # noqa: E402
    ClapTextAdherence,
    EncodecFeatures,
    FrechetAudioDistance,
)
from lightning_cfgrl.audio.synth import SyntheticSynth  # noqa: E402
from lightning_cfgrl.eval.frechet import frechet_distance, gaussian_stats, psd_sqrt  # noqa: E402
from lightning_cfgrl.io.audio import write_audio  # noqa: E402
from lightning_cfgrl.training.prompts import PromptSplit  # noqa: E402
from tests.helpers.clap import save_tiny_clap  # noqa: E402

D = torch.float64


def random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=D)
    return a @ a.T + 0.1 * torch.eye(d, dtype=D)


def test_frechet_distance_closed_forms() -> None:
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]])
    )
    assert float(d) == pytest.approx(9.0 + 1.0, rel=1e-14)
    # commuting (diagonal) covariances: |mu|^2 + sum (sqrt a - sqrt b)^2
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=D), torch.tensor([4.0, 1.0, 0.25], dtype=D)
    mu = torch.tensor([1.0, 0.0, -1.0], dtype=D)
    expected = 2.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    assert float(
        frechet_distance(mu, torch.diag(a), torch.zeros(3, dtype=D), torch.diag(b))
    ) == pytest.approx(expected, rel=1e-13)
    # a non-commuting pair: S1 = c I gives tr (S1 S2)^{1/2} = sqrt(c) * sum sqrt(eig S2)
    s2 = random_spd(6, 0)
    c = 2.5
    closed = 6 * c + float(s2.trace()) - 2 * math.sqrt(c) * float(torch.linalg.eigvalsh(s2).sqrt().sum())
    zero = torch.zeros(6, dtype=D)
    assert float(frechet_distance(zero, c * torch.eye(6, dtype=D), zero, s2)) == pytest.approx(
        closed, rel=1e-12
    )
    # general: symmetric, zero on itself, and the root is a root
    s1 = random_spd(6, 1)
    assert float(frechet_distance(zero, s1, zero, s2)) == pytest.approx(
        float(frechet_distance(zero, s2, zero, s1)), rel=1e-10
    )
    assert float(frechet_distance(zero, s1, zero, s1)) == pytest.approx(0.0, abs=1e-10)
    torch.testing.assert_close(psd_sqrt(s1) @ psd_sqrt(s1), s1, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(zero, s1, torch.zeros(5, dtype=D), s2)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = random_spd(5, 2), random_spd(5, 3)
    mu1, mu2 = torch.arange(5, dtype=D), torch.ones(5, dtype=D)
    root = linalg.sqrtm((s1 @ s2).numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace()) - 2 * float(root.trace())
    assert float(frechet_distance(mu1, s1, mu2, s2)) == pytest.approx(expected, rel=1e-9)


def test_gaussian_stats_are_the_unbiased_mean_and_covariance() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mu, sigma = gaussian_stats(x)
    centred = x.double() - x.double().mean(0)
    torch.testing.assert_close(sigma, centred.T @ centred / 49)
    torch.testing.assert_close(mu, x.double().mean(0))
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        gaussian_stats(x[:1])


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory) -> Path:
    return save_tiny_clap(tmp_path_factory.mktemp("clap"))


def synth_frames(seed: int, n: int = 6, low: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, low + 8, (n, 2, 8), generator=g)


def test_fad_scorer_is_the_frechet_distance_of_the_embeddings(clap_folder, tmp_path) -> None:
    from lightning_cfgrl.audio.clap import ClapEncoder

    synth = SyntheticSynth(vocab_size=32)
    encoder = ClapEncoder(str(clap_folder))
    reference = synth_frames(0)
    for i, wav in enumerate(synth.decode(reference)):
        write_audio(tmp_path / f"ref{i}.wav", wav, synth.sample_rate)
    fad = FrechetAudioDistance(str(tmp_path), embedder=encoder, decoder=synth)
    generated = synth_frames(1, low=20)  # other pitches
    scores = fad(generated, torch.zeros(6, 3, dtype=torch.long))
    assert scores.shape == (6,) and torch.all(scores == scores[0])
    from lightning_cfgrl.io.audio import read_audio

    wavs = [read_audio(tmp_path / f"ref{i}.wav")[0] for i in range(6)]
    # the references one file at a time, as the scorer reads them: a float32 embedding of a batch differs from
    # that of its rows in the last bits on some CPUs (seen: Intel Xeon, rel 3e-6), so mirror the scorer
    ref = torch.cat([encoder.embed_audio(w[None], synth.sample_rate) for w in wavs]).double()
    ref_stats = gaussian_stats(ref)
    gen_stats = gaussian_stats(encoder.embed_audio(synth.decode(generated), synth.sample_rate))
    expected = float(frechet_distance(*gen_stats, *ref_stats))
    # float32 embeddings: allow their rounding, scaled by the size of the terms the distance subtracts
    scale = float(gen_stats[1].trace() + ref_stats[1].trace() + (gen_stats[0] - ref_stats[0]).pow(2).sum())
    assert float(scores[0]) == pytest.approx(expected, abs=64 * torch.finfo(torch.float32).eps * scale)
    same = float(fad(reference, None)[0])
    assert expected > 0 and same < 0.02 * expected  # the reference itself (up to its 16-bit WAVs) is near 0
    assert fad.higher_is_better is False and fad.name == "fad"


def test_fad_on_encodec_features_of_a_musicgen_codec(tmp_path) -> None:
    from lightning_cfgrl.adapters.musicgen import import_musicgen
    from tests.helpers.musicgen import save_tiny_musicgen

    folder = save_tiny_musicgen(import_musicgen(), tmp_path / "mg")
    features = EncodecFeatures(str(folder))
    synth = SyntheticSynth(vocab_size=32)
    (tmp_path / "ref").mkdir()
    for i, wav in enumerate(synth.decode(synth_frames(0))):
        write_audio(tmp_path / "ref" / f"{i}.wav", wav, synth.sample_rate)
    fad = FrechetAudioDistance(str(tmp_path / "ref"), embedder=features, decoder=synth, name="fad_encodec")
    value = fad(synth_frames(1, low=20), None)
    assert value.shape == (6,) and float(value[0]) > 0 and math.isfinite(float(value[0]))


def test_fad_and_clap_scorers_refuse_bad_input(clap_folder, tmp_path) -> None:
    from lightning_cfgrl.audio.clap import ClapEncoder

    synth = SyntheticSynth(vocab_size=32)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        FrechetAudioDistance(str(tmp_path / "missing"), ClapEncoder(str(clap_folder)), synth)
    with pytest.raises(ValueError, match="holds 0 audio file"):
        FrechetAudioDistance(str(tmp_path), ClapEncoder(str(clap_folder)), synth)
    with pytest.raises(TypeError, match="decoder must have .decode"):
        FrechetAudioDistance([str(tmp_path / "a.wav")] * 2, ClapEncoder(str(clap_folder)), object())
    with pytest.raises(FileNotFoundError, match="has no config.json.*nothing is downloaded"):
        ClapEncoder(str(tmp_path))


def test_fad_scorer_through_cfgrl_evaluate(clap_folder, tmp_path, monkeypatch) -> None:
    from lightning_cfgrl.cli.evaluate import evaluate_main
    from lightning_cfgrl.io.checkpoint_io import atomic_save
    from lightning_cfgrl.models import AudioTokenTransformer
    from tests.helpers.models import BASE_ARGS

    synth = SyntheticSynth(vocab_size=32)
    (tmp_path / "ref").mkdir()
    for i, wav in enumerate(synth.decode(synth_frames(0, n=8))):
        write_audio(tmp_path / "ref" / f"{i}.wav", wav, synth.sample_rate)
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**BASE_ARGS)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    atomic_save(
        {"state_dict": state, "hyper_parameters": {"generator": generator.spec()}}, tmp_path / "base.ckpt"
    )
    (tmp_path / "eval.yaml").write_text(
        f"""
prompts:
  datamodule:
    class_path: lightning_cfgrl.experiments.SyntheticPromptDataModule
    init_args: {{split: {{heldout_fraction: 0.25, split_seed: 0}}}}
  max_prompts: 2
protocol: {{num_frames: 32, num_samples: 3, num_seeds: 2, num_selection_seeds: 1}}
scorers:
  - class_path: lightning_cfgrl.experiments.PromptAdherence
  - class_path: lightning_cfgrl.audio.scorers.FrechetAudioDistance
    init_args:
      reference: ref
      embedder: {{class_path: lightning_cfgrl.audio.clap.ClapEncoder, init_args: {{model: {clap_folder}}}}}
      decoder: {{class_path: lightning_cfgrl.audio.synth.SyntheticSynth, init_args: {{vocab_size: 32}}}}
embedder:
  class_path: lightning_cfgrl.embedders.TokenHistogramEmbedder
  init_args: {{vocab_size: 32}}
candidates:
  base: base.ckpt
  guidance_scales: [1.0, 3.0]
  temperatures: []
  top_ps: []
output: {{out: out, progress: false}}
"""
    )
    monkeypatch.chdir(tmp_path)
    assert evaluate_main(["--config", "eval.yaml"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["name"]: r for r in results["results"]}
    assert len(rows) == 2
    for row in rows.values():
        mean, se = row["metrics"]["fad"]
        assert mean > 0 and len(row["per_seed"]["fad"]) == 2


# -- CLAP text adherence: reward and scorer, on a tiny random MusicGen with text prompts ---------------
PROMPTS = ["calm piano", "loud rock guitar", "dark ambient drums", "fast techno bass"]


@pytest.fixture(scope="module")
def musicgen_folder(tmp_path_factory) -> Path:
    from lightning_cfgrl.adapters.musicgen import import_musicgen
    from tests.helpers.musicgen import save_tiny_musicgen

    return save_tiny_musicgen(import_musicgen(), tmp_path_factory.mktemp("mg"))


def independent_clap_similarity(
    clap_folder: Path, texts: list[str], wav: torch.Tensor, rate: int
) -> torch.Tensor:
    """cos(text, audio) straight from transformers (ClapModel, its tokenizer and feature extractor)."""
    import torch.nn.functional as F
    from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

    from lightning_cfgrl.io.audio import resample

    model = ClapModel.from_pretrained(str(clap_folder)).eval()
    extractor = AutoFeatureExtractor.from_pretrained(str(clap_folder))
    tokens = AutoTokenizer.from_pretrained(str(clap_folder))(texts, padding=True, return_tensors="pt")
    mono = resample(wav.mean(1), rate, extractor.sampling_rate)
    features = extractor(list(mono.numpy()), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        audio = model.get_audio_features(**features)
    text, audio = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (text, audio))
    return (F.normalize(text, dim=-1) * F.normalize(audio, dim=-1)).sum(-1)


def musicgen_rollout(musicgen_folder: Path, group_size: int = 3):
    from types import SimpleNamespace

    from lightning_cfgrl import RolloutBatch, SamplingConfig
    from lightning_cfgrl.adapters import MusicgenGenerator
    from lightning_cfgrl.audio import TextPromptDataModule
    from lightning_cfgrl.core.condition import repeat_condition
    from lightning_cfgrl.core.sampling import sample

    generator = MusicgenGenerator(str(musicgen_folder)).eval()
    data = TextPromptDataModule(
        PROMPTS, tokenizer=str(musicgen_folder), batch_size=2, split=PromptSplit(heldout_fraction=0)
    )
    data.setup("fit")
    prompts = next(iter(data.train_dataloader()))["condition"]
    steps = sample(generator, prompts, 16, SamplingConfig(), num_samples=group_size, seed=0)
    condition = repeat_condition(prompts, group_size)
    mask = generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    with torch.no_grad():
        logits = generator(steps, condition)
    module = SimpleNamespace(
        generator=generator,
        global_step=0,
        global_rank=0,
        device=torch.device("cpu"),
        log=lambda *a, **k: None,
        trainer=SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t)),
    )
    return module, RolloutBatch(steps, condition, mask, group_size, logits.requires_grad_(), SamplingConfig())


def test_clap_reward_is_the_cosine_of_prompt_text_and_decoded_audio(clap_folder, musicgen_folder) -> None:
    from types import SimpleNamespace

    from lightning_cfgrl.audio.clap import prompt_texts
    from lightning_cfgrl.core.rewards import RewardSpec
    from lightning_cfgrl.training.reward import PolicyGradientConfig, RewardCallback

    module, batch = musicgen_rollout(musicgen_folder)
    reward = RewardCallback(
        [
            RewardSpec(
                "lightning_cfgrl.audio.clap.ClapTextReward",
                args={"model": str(clap_folder), "prompt_tokenizer": str(musicgen_folder)},
            )
        ],
        gradient=PolicyGradientConfig(baseline="none", advantage_norm="none"),
    )
    reward.setup(SimpleNamespace(datamodule=None), module, "fit")
    assert reward.decoder is module.generator  # MusicGen decodes its own tokens
    reward.loss_terms(module, batch)
    got = batch.records["reward/reward"]
    texts = prompt_texts(batch.condition, str(musicgen_folder))
    assert set(texts) <= set(PROMPTS) and len(set(texts)) == 2  # the T5 ids decoded back to the prompts
    assert texts[:3] == [texts[0]] * 3 and texts[3:] == [texts[3]] * 3
    frames = module.generator.pattern.steps_to_frames(batch.steps)
    wav = module.generator.decode(frames)
    expected = independent_clap_similarity(clap_folder, texts, wav, module.generator.sample_rate)
    torch.testing.assert_close(got, expected.double(), rtol=1e-5, atol=1e-6)
    assert float(got.std()) > 0  # samples differ in how well they match
    # the scorer for cfgrl evaluate gives the same numbers
    scorer = ClapTextAdherence(
        str(clap_folder), decoder=module.generator, prompt_tokenizer=str(musicgen_folder)
    )
    torch.testing.assert_close(scorer(frames, batch.condition).double(), got, rtol=1e-5, atol=1e-6)


def test_clap_reward_trains_musicgen_beside_distillation_and_is_logged(
    clap_folder, musicgen_folder, tmp_path
) -> None:
    import csv

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from lightning_cfgrl import CFGDistillCallback, CFGRLModule
    from lightning_cfgrl.adapters import MusicgenGenerator
    from lightning_cfgrl.audio import TextPromptDataModule
    from lightning_cfgrl.callbacks.completion_log import CompletionLogCallback
    from lightning_cfgrl.core.rewards import RewardSpec
    from lightning_cfgrl.training.reward import RewardCallback

    pl.seed_everything(0)
    module = CFGRLModule(
        MusicgenGenerator(str(musicgen_folder)), rollout={"num_frames": 12, "num_samples_per_prompt": 2}
    )
    clap = RewardSpec(
        "lightning_cfgrl.audio.clap.ClapTextReward",
        args={"model": str(clap_folder), "prompt_tokenizer": str(musicgen_folder)},
    )
    callbacks = [
        CFGDistillCallback(),
        RewardCallback([clap], beta=1.0),
        CompletionLogCallback(every_n_steps=1, max_rows=4),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, TextPromptDataModule(PROMPTS, tokenizer=str(musicgen_folder), batch_size=2))
    assert -1 <= float(trainer.callback_metrics["train/reward/clap_text"]) <= 1
    rows = list(csv.DictReader(open(callbacks[2].path)))
    assert len(rows) == 8 and all(r["audio"].endswith(".wav") for r in rows)
    assert all(-1 <= float(r["reward/reward"]) <= 1 for r in rows)


def test_a_reward_that_reads_audio_needs_a_decoder(clap_folder) -> None:
    from types import SimpleNamespace

    from lightning_cfgrl.core.rewards import RewardSpec
    from lightning_cfgrl.models import AudioTokenTransformer
    from lightning_cfgrl.training.reward import RewardCallback
    from tests.helpers.models import BASE_ARGS

    reward = RewardCallback(
        [RewardSpec("lightning_cfgrl.audio.clap.ClapTextReward", args={"model": str(clap_folder)})]
    )
    module = SimpleNamespace(generator=AudioTokenTransformer(**BASE_ARGS), group_size=4)
    with pytest.raises(ValueError, match=r"\['clap_text'\] read audio.*pass RewardCallback\(decoder=...\)"):
        reward.setup(SimpleNamespace(datamodule=None), module, "fit")


def test_shipped_musicgen_clap_yaml_trains_through_the_cli(
    clap_folder, musicgen_folder, tmp_path, monkeypatch
) -> None:
    """examples/configs/musicgen_lora_clap.yaml with the tiny models in place of the real ones: LoRA
    distillation plus the CLAP reward, and the completion log with the prompts as text."""
    import csv

    from lightning_cfgrl.cli.main import run_cli

    root = Path(__file__).resolve().parents[1]
    text = (root / "examples" / "configs" / "musicgen_lora_clap.yaml").read_text()
    text = text.replace("models/musicgen-small", str(musicgen_folder))
    text = text.replace("models/clap-htsat-unfused", str(clap_folder))
    text = text.replace(
        "examples/prompts/musicgen_prompts.csv", str(root / "examples/prompts/musicgen_prompts.csv")
    )
    (tmp_path / "clap.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    run_cli(
        [
            "fit",
            "--config",
            "clap.yaml",
            "--model.init_args.rollout.num_frames=12",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
        ]
    )
    rows = list(csv.DictReader(open(tmp_path / "runs/musicgen_lora_clap/version_0/completions.csv")))
    # the datamodule describes each prompt by its own text (TextPromptDataModule.describe_prompt)
    csv_prompts = [r["prompt"] for r in csv.DictReader(open(root / "examples/prompts/musicgen_prompts.csv"))]
    prompts = {p.strip() for p in csv_prompts}
    assert len(rows) == 8 and all(r["prompt"] in prompts and r["prompt"] for r in rows), rows[0]["prompt"]
    assert all(-1 <= float(r["reward/reward"]) <= 1 and r["audio"].endswith(".wav") for r in rows)
    assert all(float(r["distill/divergence_per_token"]) >= 0 for r in rows)


@pytest.mark.slow  # ~10 s of CREPE on 2 CPU cores
def test_fad_on_crepe_features_tells_the_domain_from_random_tokens(tmp_path) -> None:
    """Real weights (CREPE ships with torchcrepe): sequences of the domain are nearer its reference
    audio than uniformly random tokens are."""
    from lightning_cfgrl.embedders.crepe import CrepeAudioEmbedder, import_torchcrepe

    try:
        import_torchcrepe()  # copes with a torchaudio that cannot load
    except ImportError:
        pytest.skip("torchcrepe is not installed (pip install lightning-cfgrl[audio])")
    from lightning_cfgrl.experiments import SyntheticMusic

    domain, synth = SyntheticMusic(), SyntheticSynth(vocab_size=32)
    prompts = domain.prompts[:16].repeat_interleave(2, dim=0)
    reference = domain.sample(prompts, torch.Generator().manual_seed(0))
    for i, wav in enumerate(synth.decode(reference)):
        write_audio(tmp_path / f"{i:02d}.wav", wav, synth.sample_rate)
    crepe = CrepeAudioEmbedder(capacity="tiny", layer="pitch", pooling="mean", hop_seconds=0.125)
    fad = FrechetAudioDistance(str(tmp_path), embedder=crepe, decoder=synth)
    same_domain = domain.sample(prompts, torch.Generator().manual_seed(1))
    random = torch.randint(0, 32, same_domain.shape, generator=torch.Generator().manual_seed(2))
    near, far = float(fad(same_domain, None)[0]), float(fad(random, None)[0])
    assert 0 < near < 0.5 * far
