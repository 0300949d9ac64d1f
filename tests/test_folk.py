"""The folk-tune domain (lightning_cfgrl.experiments.folk): parsing, tokens, prompts, judges, cache,
rendering. Reads a few tunes of the corpus inside the installed music21 wheel; never downloads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

music21 = pytest.importorskip(
    "music21", reason="the folk-tune domain needs the optional extra [music] (music21)"
)

from lightning_cfgrl.experiments.folk import (  # noqa: E402
    FolkCorpus,
    FolkPrompts,
    FolkRenderer,
    FolkTokenizer,
    MelodyProfileEmbedder,
    Tune,
    TuneSplit,
    cached_tunes,
    essen_files,
    key_correlations,
    meter_alignment,
    parse_files,
)
from lightning_cfgrl.experiments.folk.rules import meter_grid  # noqa: E402
from lightning_cfgrl.experiments.folk.tokens import END, END_ARTIC, ONSET, REST  # noqa: E402

CORPUS = Path(music21.__file__).parent / "corpus"


def first_tunes(stem: str, n: int, folder: Path) -> Path:
    """The first ``n`` tunes of an Essen file, copied to a small file (parsing all of it takes a minute)."""
    text = (CORPUS / "essenFolksong" / f"{stem}.abc").read_text(encoding="latin-1")
    tunes = text.split("\nX:")[1 : n + 1]
    path = folder / f"{stem}.abc"
    path.write_text("".join("\nX:" + t for t in tunes), encoding="latin-1")
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_CFGRL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("essen")
    return [first_tunes("han1", 12, folder), first_tunes("lux", 12, folder)]


def test_essen_files_are_the_wheel_corpus():
    files = essen_files()
    assert len(files) >= 25 and all(f.suffix == ".abc" for f in files)
    assert not any(f.stem.startswith(("test", "variant")) for f in files)
    with pytest.raises(ValueError, match="unknown Essen collection"):
        essen_files(["nowhere"])


def test_parse_and_tokenise_round_trip(tmp_path):
    tunes = parse_files([first_tunes("han1", 3, tmp_path)])
    assert len(tunes) == 3
    first = tunes[0]  # "Renmin gongshe shizai hao": 2/4, signature C, ends on D
    assert (first.collection, first.meter, first.tonic) == ("han", "2/4", 0)
    assert first.notes[:4] == [(0, 4, 74), (4, 2, 69), (6, 2, 72), (8, 4, 74)]  # d4 A2 c2 | d4 (L:1/16)
    assert first.mode == "modal"  # final D over the key of C: re
    tok = FolkTokenizer(num_frames=64)
    for tune in tunes:
        frames = tok.encode(tune.notes)
        assert frames.shape == (2, 64) and frames.dtype == torch.long
        window = [(o, min(d, 64 - o), tok.fold(m) if m >= 0 else -1) for o, d, m in tune.notes if o < 64]
        assert tok.decode(frames) == window
        assert torch.equal(tok.encode(tok.decode(frames)), frames)


def test_tokens_gaps_end_and_folding():
    tok = FolkTokenizer(num_frames=16, vocab_size=40, low_note=48)
    frames = tok.encode([(0, 2, 60), (4, 2, 100), (6, 1, -1)])
    assert frames[0].tolist()[:8] == [14, 14, REST, REST, 2 + 76 - 48, 2 + 76 - 48, REST, END]
    assert frames[1].tolist()[:8] == [ONSET, 0, ONSET, 0, ONSET, 0, ONSET, END_ARTIC]
    assert tok.decode(frames) == [(0, 2, 60), (2, 2, -1), (4, 2, 76), (6, 1, -1)]
    # a pitch change without an onset is still a new note (a model may write one)
    frames[1, 1] = 0
    frames[0, 1] = 15
    assert tok.decode(frames)[:2] == [(0, 1, 60), (1, 1, 61)]
    with pytest.raises(ValueError, match="vocab_size"):
        FolkTokenizer(vocab_size=5)


def test_cache_is_safetensors_and_json_not_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_CFGRL_CACHE", str(tmp_path / "c"))
    path = first_tunes("han1", 2, tmp_path)
    tunes = cached_tunes([path])
    files = sorted((tmp_path / "c" / "folk").iterdir())
    assert {f.suffix for f in files} == {".safetensors", ".json"} and len(files) == 2
    blob = next(f for f in files if f.suffix == ".safetensors").read_bytes()
    header = int.from_bytes(blob[:8], "little")  # safetensors: u64 header size, then a JSON header
    assert json.loads(blob[8 : 8 + header])["notes"]["dtype"] == "I32"
    meta = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert [t["source"] for t in meta["tunes"]] == ["han1.abc#0", "han1.abc#1"]
    again = cached_tunes([path])  # read back from the cache: the same tunes
    assert [t.notes for t in again] == [t.notes for t in tunes]


def test_second_collection_loads_without_code_changes():
    """Single-tune ABC files of another collection of the same corpus (Ryan's Mammoth)."""
    files = sorted((CORPUS / "ryansMammoth").glob("*.abc"))[:3]
    tunes = cached_tunes(files)
    assert len(tunes) == 3
    assert all(t.collection == "ryansMammoth" and t.meter != "none" and len(t.notes) > 8 for t in tunes)
    frames = FolkTokenizer().encode_tunes(tunes)
    assert frames.shape == (3, 2, 64) and bool((frames[:, 1] == ONSET).any(1).all())


def test_prompts_and_splits_are_disjoint(small_files):
    corpus = FolkCorpus(files=[str(f) for f in small_files], min_tunes=2, heldout_fraction=0.34)
    train = {tuple(p) for p in corpus.train_prompts.tolist()}
    held = {tuple(p) for p in corpus.heldout_prompts.tolist()}
    assert train and held and not (train & held)
    assert train | held == {tuple(p) for p in corpus.prompts.tolist()}
    masks = torch.stack(list(corpus.share.values()))
    assert bool((masks.sum(0) == 1).all())  # every tune in exactly one share
    for row, tune in zip(corpus.prompt_rows.tolist(), corpus.kept_tunes, strict=True):
        assert corpus.prompt_table.combos[row] == (tune.collection, tune.meter, tune.mode)
    assert corpus.describe(corpus.prompts[0]).startswith(corpus.prompt_table.combos[0][0])
    with pytest.raises(ValueError, match="not one of the"):
        corpus.prompt_table.prompt_index(torch.tensor([[1, 1, 99]]))


def test_prompt_table_keeps_combinations_with_enough_tunes():
    tunes = [Tune("a", "2/4", "major", 0, "", f"x#{i}") for i in range(5)]
    tunes += [Tune("b", "3/4", "minor", 0, "", f"y#{i}") for i in range(2)]
    tunes += [Tune("a", "none", "major", 0, "", f"z#{i}") for i in range(9)]  # no meter: never a prompt
    table = FolkPrompts(tunes, min_tunes=3)
    assert table.combos == [("a", "2/4", "major")] and table.counts == [5]
    with pytest.raises(ValueError, match="min_tunes"):
        FolkPrompts(tunes, min_tunes=10)
    split = TuneSplit()
    shares = [split.share_of(Tune("a", "2/4", "major", 0, "", f"s#{i}")) for i in range(2000)]
    assert abs(shares.count("generator") / 2000 - 0.6) < 0.05 and shares.count("test") > 100


def test_meter_alignment_on_hand_made_rhythms():
    assert meter_grid("6/8") == (12, 6) and meter_grid("3/4") == (12, 4) and meter_grid("3/8") == (6, 2)
    T = 48
    live = torch.ones(1, T, dtype=torch.bool)
    quarters = torch.zeros(1, T, dtype=torch.bool)
    quarters[0, ::4] = True
    waltz = torch.zeros(1, T, dtype=torch.bool)
    waltz[0, ::12] = True  # one onset per 3/4 bar
    offbeats = torch.zeros(1, T, dtype=torch.bool)
    offbeats[0, 1::4] = True
    assert meter_alignment(quarters, live, "4/4").item() > 0.5
    assert meter_alignment(waltz, live, "3/4").item() > meter_alignment(waltz, live, "4/4").item() + 0.2
    assert meter_alignment(offbeats, live, "4/4").item() < -0.3
    assert meter_alignment(torch.zeros(1, T, dtype=torch.bool), live, "4/4").item() == 0.0
    # only the live frames count: an off-beat tail after the end changes nothing
    cut = live.clone()
    cut[0, 32:] = False
    tail = quarters.clone()
    tail[0, 33::4] = True
    assert math.isclose(
        meter_alignment(tail, cut, "4/4").item(),
        meter_alignment(quarters[:, :32], live[:, :32], "4/4").item(),
    )


def test_key_profiles_tell_major_from_minor():
    c_major = torch.tensor([[60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60, 60]])
    a_minor = torch.tensor([[57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57, 57]])  # harmonic minor
    major, minor = key_correlations(c_major)
    assert major.item() > 0.8 and major.item() > minor.item() + 0.1
    major, minor = key_correlations(a_minor)
    assert minor.item() > 0.8 and minor.item() > major.item() + 0.1
    silent = key_correlations(torch.full((1, 8), -1))
    assert silent[0].item() == 0.0 and silent[1].item() == 0.0


def test_render_wav_and_midi(tmp_path):
    tok = FolkTokenizer(num_frames=16)
    frames = tok.encode([(0, 4, 60), (4, 4, 67), (8, 4, -1), (12, 4, 72)])[None]
    renderer = FolkRenderer(tok, sample_rate=8000, tempo=120.0)
    wav = renderer.decode(frames)
    assert wav.shape == (1, 1, round(16 * 0.125 * 8000)) and bool(torch.isfinite(wav).all())
    third = wav.shape[-1] // 4
    assert (
        wav[0, 0, :third].abs().max() > 0.05 and wav[0, 0, 2 * third + 50 : 3 * third - 50].abs().max() == 0
    )
    path = renderer.write_midi(frames[0], tmp_path / "x.mid", meter="4/4")
    back = music21.converter.parse(str(path)).flatten().notes
    assert [n.pitch.midi for n in back] == [60, 67, 72]
    assert [float(n.duration.quarterLength) for n in back] == [1.0, 1.0, 1.0]


def test_melody_profile_embedder_sees_rhythm_and_intervals():
    tok = FolkTokenizer(num_frames=32)
    emb = MelodyProfileEmbedder(num_frames=32)
    steps = tok.encode([(4 * i, 4, 60 + 2 * (i % 3)) for i in range(8)])
    same_shape_up = tok.encode([(4 * i, 4, 65 + 2 * (i % 3)) for i in range(8)])
    leaps = tok.encode([(2 * i, 2, 60 + 7 * (i % 2)) for i in range(16)])
    e = emb(torch.stack([steps, same_shape_up, leaps]))
    cos = torch.nn.functional.cosine_similarity
    assert e.shape == (3, 25 + 16 + 16 + 12 + 1)
    assert cos(e[0], e[1], dim=0) > cos(e[0], e[2], dim=0) + 0.3  # transposition keeps intervals, rhythm


def test_judge_prior_and_calibration(small_files, tmp_path):
    from lightning_cfgrl.experiments.folk.judge import (
        calibrate_temperature,
        judge_accuracy,
        judge_log_posterior,
        load_judge,
        save_judge,
        train_judge,
    )

    corpus = FolkCorpus(files=[str(f) for f in small_files], min_tunes=2, heldout_fraction=0.34)
    model, prior = train_judge(corpus, steps=40, dim=16)
    frames, condition = corpus.data("generator")
    post = judge_log_posterior(model, prior, frames)
    assert post.shape == (len(frames), corpus.num_prompts)
    assert torch.allclose(post.exp().sum(1), torch.ones(len(frames), dtype=torch.float64))
    t = calibrate_temperature(model, prior, corpus, "generator")
    rows = corpus.prompt_table.prompt_index(condition)[:, None]
    nll = [-judge_log_posterior(model, prior, frames, x).gather(1, rows).mean() for x in (1.0, t)]
    assert 0.5 <= t <= 8.0 and nll[1] <= nll[0] + 1e-12
    save_judge(model, prior, corpus, tmp_path / "judge.safetensors", t)
    _, _, loaded_t = load_judge(tmp_path / "judge.safetensors", corpus)
    assert loaded_t == pytest.approx(t)
    report = judge_accuracy(model, prior, corpus, "generator", t)
    assert report["chance_adherence"] == pytest.approx(-math.log(corpus.num_prompts))
    other = FolkCorpus(files=[str(small_files[0])], min_tunes=2)
    with pytest.raises(ValueError, match="differ from this corpus"):
        load_judge(tmp_path / "judge.safetensors", other)


def test_cfgrl_generate_writes_wav_and_midi_for_folk_tokens(tmp_path, capsys):
    from lightning_cfgrl.cli.main import main
    from lightning_cfgrl.io.checkpoints import atomic_save
    from lightning_cfgrl.models import AudioTokenTransformer

    torch.manual_seed(0)
    generator = AudioTokenTransformer(2, 40, (4, 6, 3), dim=16, num_layers=1, num_heads=2, max_frames=16)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    ckpt = tmp_path / "folk.ckpt"
    atomic_save(
        {"state_dict": state, "hyper_parameters": {"generator": generator.spec(), "num_frames": 16}}, ckpt
    )
    out = tmp_path / "samples"
    argv = ["generate", "--checkpoint", str(ckpt), "--prompts", "[[1, 2, 1]]", "--num_samples", "2"]
    decoder = "lightning_cfgrl.experiments.folk.FolkRenderer"
    assert main([*argv, "--decoder", decoder, "--out", str(out), "--progress", "false"]) == 0, (
        capsys.readouterr().err
    )
    names = sorted(p.name for p in (out / "audio").iterdir())
    assert names == [
        "prompt000_sample00.mid",
        "prompt000_sample00.wav",
        "prompt000_sample01.mid",
        "prompt000_sample01.wav",
    ]
    meta = json.loads((out / "generation.json").read_text())
    assert meta["decoder"] == "FolkRenderer" and len(meta["audio"]) == 4
    assert music21.converter.parse(str(out / "audio" / "prompt000_sample00.mid")) is not None
