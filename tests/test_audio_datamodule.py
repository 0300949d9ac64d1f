"""Audio datamodules: prompt tables (CSV/JSON) -> conditions, token crops, RL prompts, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_cfgrl.audio import (
    AudioCrops,
    AudioPromptDataModule,
    AudioTokenDataModule,
    EncodecTokenizer,
    FileSplit,
    PromptTable,
    write_audio,
)
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.audio import small_codec, tones

CSV = """file,genre,mood
a.wav,jazz,calm
b.wav,techno,dark
c.wav,jazz,
d.wav,ambient,calm
e.wav,techno,calm
f.wav,jazz,dark
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def folder(tmp_path):
    """Six 0.5 s clips at 8 kHz (125 token frames at the codec's 4 kHz / hop 16) and a prompts.csv."""
    for i, name in enumerate("abcdef"):
        write_audio(tmp_path / f"{name}.wav", tones(1, 0.5, sample_rate=8000, seed=i)[0], 8000)
    (tmp_path / "prompts.csv").write_text(CSV)
    return tmp_path


def test_prompt_table_vocabularies_and_conditions(folder):
    table = PromptTable.load(folder / "prompts.csv")
    assert table.columns == ["genre", "mood"]
    assert table.vocabularies == {"genre": ["ambient", "jazz", "techno"], "mood": ["calm", "dark"]}
    assert table.condition_sizes == (3, 2)
    expected = [[2, 1], [3, 2], [2, 0], [1, 1], [3, 1], [2, 2]]  # 1-based sorted ids; empty mood -> 0 (null)
    assert table.conditions().tolist() == expected
    assert table.encode({"genre": "techno"}).tolist() == [3, 0]
    # describe inverts encode (the audio logger's tag text); null slots are left out
    assert table.describe(torch.tensor([2, 1])) == "genre=jazz, mood=calm"
    assert table.describe(torch.tensor([3, 0])) == "genre=techno"
    assert table.describe(torch.tensor([0, 0])) == "(no prompt)"
    with pytest.raises(ValueError, match="genre='polka' is not in the vocabulary"):
        table.encode({"genre": "polka"})

    (folder / "text.json").write_text(
        json.dumps({"a.wav": "calm piano", "b.wav": "dark techno", "c.wav": "calm piano"})
    )
    text = PromptTable.load(folder / "text.json")
    assert text.columns == ["prompt"] and text.conditions().squeeze(1).tolist() == [1, 2, 1]
    assert text.encode("dark techno").tolist() == [2]
    assert text.describe(torch.tensor([2])) == "dark techno"  # one column: the text alone
    (folder / "attrs.json").write_text(
        json.dumps([{"file": "a.wav", "genre": "jazz"}, {"file": "b.wav", "genre": "folk"}])
    )
    same_ids = PromptTable.load(
        folder / "attrs.json", vocabularies={"genre": table.vocabularies["genre"] + ["folk"]}
    )
    assert same_ids.conditions().tolist() == [[2], [4]]


def test_token_crops_for_pretraining(folder):
    tok = EncodecTokenizer(small_codec(), bandwidth=2.5)
    dm = AudioTokenDataModule(
        str(folder),
        tok,
        batch_size=2,
        crops=AudioCrops(num_frames=40, per_file=3),
        split=FileSplit(val_fraction=0.34),
    )
    dm.setup("fit")
    assert dm.condition_sizes == (3, 2)
    assert dm.describe_prompt(torch.tensor([3, 2])) == "genre=techno, mood=dark"
    assert (len(dm.train_set), len(dm.val_set)) == (4 * 3, 2 * 3)  # files split 4/2, never crops of one file
    full = {
        tuple(c.tolist()): tok.encode_file(folder / name)
        for name, c in zip(dm.table.files, dm.table.conditions(), strict=True)
    }
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (2, 2, 40) and batch["frames"].dtype == torch.long
    assert batch["condition"].shape == (2, 2)
    for frames, condition in zip(batch["frames"], batch["condition"], strict=True):
        codes = full[tuple(condition.tolist())]  # the crop is a contiguous window of that file's tokens
        assert any(torch.equal(codes[:, s : s + 40], frames) for s in range(codes.shape[1] - 40 + 1))
    val = [b["frames"] for b in dm.val_dataloader()]
    assert all(
        torch.equal(x, y) for x, y in zip(val, [b["frames"] for b in dm.val_dataloader()], strict=True)
    )
    first_val = dm.val_set[0]
    assert torch.equal(
        first_val["frames"], full[tuple(first_val["condition"].tolist())][:, :40]
    )  # crop 0 at the start


@pytest.mark.slow  # trains a model
def test_pretraining_runs_on_audio_tokens(folder):
    import lightning.pytorch as pl

    from lightning_cfgrl.models import AudioTokenTransformer
    from lightning_cfgrl.training.pretrain import PretrainModule

    tok = EncodecTokenizer(small_codec(), bandwidth=2.5)
    dm = AudioTokenDataModule(
        str(folder), tok, batch_size=2, crops=AudioCrops(num_frames=16), split=FileSplit(val_fraction=0.0)
    )
    generator = AudioTokenTransformer(
        num_codebooks=tok.num_codebooks,
        vocab_size=tok.codebook_size,
        condition_sizes=dm.condition_sizes,
        dim=16,
        num_layers=1,
        num_heads=2,
        max_frames=16,
    )
    module = PretrainModule(generator)
    before = generator.heads.weight.clone()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, dm)
    assert trainer.global_step == 2 and not torch.equal(before, generator.heads.weight)


def test_prepare_data_fills_the_cache_and_setup_reads_it(folder):
    tok = EncodecTokenizer(small_codec(), cache_dir=str(folder / "cache"))
    calls = []
    tok.codec.encoder.register_forward_hook(lambda *args: calls.append(1))
    dm = AudioTokenDataModule(
        str(folder), tok, crops=AudioCrops(num_frames=16), split=FileSplit(val_fraction=0.2)
    )
    dm.prepare_data()
    assert calls and len(list((folder / "cache").rglob("*.pt"))) == 6
    calls.clear()
    dm.setup("fit")
    assert calls == [] and len(dm.train_set) + len(dm.val_set) == 6


def test_prompt_datamodule_for_rl(folder):
    dm = AudioPromptDataModule(
        str(folder / "prompts.csv"), batch_size=2, split=PromptSplit(heldout_fraction=0.34, repeats=3)
    )
    everything = torch.cat([dm.train_prompts, dm.heldout_prompts])
    assert sorted(map(tuple, everything.tolist())) == sorted({(2, 1), (3, 2), (2, 0), (1, 1), (3, 1), (2, 2)})
    assert (len(dm.train_prompts), len(dm.heldout_prompts)) == (4, 2)
    batches = list(dm.train_dataloader())
    assert len(batches) == 6 and set(batches[0]) == {"condition"} and batches[0]["condition"].shape == (2, 2)
    assert dm.condition_sizes == (3, 2)


def test_errors_name_the_offending_value(folder, tmp_path_factory):
    tok = EncodecTokenizer(small_codec())
    # the settings objects name the field with its group, as YAML spells it
    with pytest.raises(ValueError, match=r"crops.num_frames must be >= 1, got 0"):
        AudioCrops(num_frames=0)
    with pytest.raises(ValueError, match=r"split.val_fraction must be in \[0, 1\), got 1.0"):
        FileSplit(val_fraction=1.0)
    with pytest.raises(ValueError, match=r"crops has no setting\(s\) \['crops_per_file'\]; its settings are"):
        AudioTokenDataModule(str(folder), tok, crops={"crops_per_file": 2})
    with pytest.raises(TypeError, match="split must be a FileSplit or a dict of its fields, got float"):
        AudioTokenDataModule(str(folder), tok, split=0.1)
    with pytest.raises(FileNotFoundError, match="audio_dir '.*nowhere' does not exist"):
        AudioTokenDataModule(str(folder / "nowhere"), tok)
    with pytest.raises(FileNotFoundError, match="prompt table .*other.csv' does not exist"):
        AudioTokenDataModule(str(folder), tok, prompts=str(folder / "other.csv"))

    (folder / "bad.csv").write_text("path,genre\na.wav,jazz\n")
    with pytest.raises(ValueError, match=r"has columns \['path', 'genre'\]; expected a 'file' column"):
        AudioTokenDataModule(str(folder), tok, prompts=str(folder / "bad.csv"))
    with pytest.raises(
        ValueError, match=r"prompt columns \['tempo'\] are not prompt columns .* \['genre', 'mood'\]"
    ):
        AudioTokenDataModule(str(folder), tok, prompt_columns=["tempo"])
    (folder / "empty.csv").write_text("file,genre\n")
    with pytest.raises(ValueError, match="lists no files: the dataset would be empty"):
        AudioTokenDataModule(str(folder), tok, prompts=str(folder / "empty.csv"))
    (folder / "dup.csv").write_text("file,genre\na.wav,jazz\na.wav,folk\n")
    with pytest.raises(ValueError, match="lists file 'a.wav' twice"):
        AudioTokenDataModule(str(folder), tok, prompts=str(folder / "dup.csv"))

    (folder / "missing.csv").write_text("file,genre\na.wav,jazz\nx.wav,jazz\nsub/y.flac,folk\n")
    with pytest.raises(
        FileNotFoundError, match=r"2 file\(s\) listed in .*missing.csv.*'.*x.wav', '.*y.flac'"
    ):
        AudioTokenDataModule(str(folder), tok, prompts=str(folder / "missing.csv")).setup()

    (folder / "junk.wav").write_bytes(b"this is not audio")
    (folder / "junk.csv").write_text("file,genre\na.wav,jazz\njunk.wav,jazz\n")
    with pytest.raises(
        ValueError, match="cannot read audio file .*junk.wav.*listed in prompt table .*junk.csv"
    ):
        AudioTokenDataModule(str(folder), tok, prompts=str(folder / "junk.csv")).setup()

    with pytest.raises(
        ValueError, match=r"no file .* has crops.num_frames=500 token frames \(2.00 s\); the longest has 125"
    ):
        AudioTokenDataModule(str(folder), tok, crops=AudioCrops(num_frames=500)).setup()
    write_audio(folder / "short.wav", tones(1, 0.1, sample_rate=8000)[0], 8000)
    (folder / "short.csv").write_text(CSV + "short.wav,jazz,calm\n")
    dm = AudioTokenDataModule(
        str(folder),
        tok,
        prompts=str(folder / "short.csv"),
        crops=AudioCrops(num_frames=100),
        split=FileSplit(val_fraction=0.0),
    )
    with pytest.warns(
        UserWarning, match=r"skipping 1 file\(s\) shorter than crops.num_frames=100 frames: \['short.wav'\]"
    ):
        dm.setup()
    assert len(dm.train_set) == 6
    with pytest.raises(ValueError, match="has no non-empty prompt"):
        (folder / "null.csv").write_text("file,genre\na.wav,\n")
        AudioPromptDataModule(str(folder / "null.csv"))


@pytest.mark.parametrize(
    "class_path, old, new",
    [
        ("lightning_cfgrl.audio.AudioTokenDataModule", "crops_per_file", "crops.per_file"),
        ("lightning_cfgrl.audio.AudioTokenDataModule", "val_fraction", "split.val_fraction"),
        ("lightning_cfgrl.audio.EncodecTokenizer", "pretrained", "weights.pretrained"),
        ("lightning_cfgrl.AudioSampleLogger", "log_on_validation", "schedule.on_validation"),
        ("lightning_cfgrl.AudioSampleLogger", "guidance_scale", "sampling.guidance_scale"),
        ("lightning_cfgrl.AudioSampleLogger", "num_frames", "clips.num_frames"),
        ("lightning_cfgrl.audio.TextPromptDataModule", "heldout_fraction", "split.heldout_fraction"),
        ("lightning_cfgrl.experiments.SyntheticPromptDataModule", "shuffle_seed", "split.shuffle_seed"),
    ],
)
def test_a_config_with_a_flat_setting_of_before_names_its_new_place(class_path, old, new):
    from lightning_cfgrl.cli.main import parse_error_cause

    report = f"Problem with given class_path '{class_path}':\n  Option '{old}' is not accepted"
    group, field = new.split(".")
    assert parse_error_cause(report).endswith(
        f"{old} is {new} now (init_args: {{{group}: {{{field}: ...}}}})"
    )
