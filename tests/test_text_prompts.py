"""TextPromptDataModule: CSV/JSON prompts tokenised with the model's own tokenizer, MusicGen's null prompt."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from lightning_cfgrl.adapters import MusicgenGenerator  # noqa: E402
from lightning_cfgrl.adapters.musicgen import import_musicgen  # noqa: E402
from lightning_cfgrl.audio import TextPromptDataModule  # noqa: E402
from lightning_cfgrl.audio.text_prompts import read_text_prompts  # noqa: E402
from lightning_cfgrl.training.prompts import PromptSplit  # noqa: E402
from tests.helpers.musicgen import save_tiny_musicgen, tiny_text_tokenizer  # noqa: E402

PROMPTS = ["calm piano", "loud rock guitar", "dark ambient", "fast techno drums", "soft jazz bass", ""]


def test_prompts_are_tokenised_split_and_batched():
    data = TextPromptDataModule(
        PROMPTS, tokenizer=tiny_text_tokenizer(), batch_size=2, split=PromptSplit(heldout_fraction=0.34)
    )
    assert data.input_ids.shape[0] == len(PROMPTS) == len(data.texts)
    # "calm piano" -> calm, piano, </s>; right-padded to the longest prompt (3 words + </s>)
    tok = tiny_text_tokenizer()
    assert data.input_ids[0, :3].tolist() == tok("calm piano")["input_ids"]
    assert data.attention_mask[0].tolist() == [1, 1, 1, 0]
    assert data.attention_mask[-1].sum() == 0  # "" is MusicGen's null prompt: an all-zero mask
    assert len(data.prompt_texts("train")) == 4 and len(data.prompt_texts("heldout")) == 2
    assert set(data.prompt_texts("train")) | set(data.prompt_texts("heldout")) == set(PROMPTS)
    batches = list(data.train_dataloader())
    assert len(batches) == 2 * 100  # 4 train prompts x 100 repeats / batch 2
    batch = batches[0]
    cond = batch["condition"]
    assert cond["input_ids"].shape == cond["attention_mask"].shape and cond["input_ids"].shape[0] == 2
    length = int(cond["attention_mask"].sum(1).max())
    assert cond["input_ids"].shape[1] == length  # cut to the batch's longest prompt
    for row, index in zip(cond["input_ids"], batch["prompt_index"], strict=True):
        assert torch.equal(row, data.input_ids[index, :length])
    val = next(iter(data.val_dataloader()))
    assert sorted(val["prompt_index"].tolist()) == sorted(
        data.texts.index(t) for t in data.prompt_texts("heldout")
    )


def test_empty_prompt_is_musicgens_null_condition(tmp_path):
    hf = import_musicgen()
    hf.logging.set_verbosity_error()
    folder = save_tiny_musicgen(hf, tmp_path / "mg")
    data = TextPromptDataModule(
        ["calm piano", ""], tokenizer=str(folder), split=PromptSplit(heldout_fraction=0)
    )
    cond = data.collate([{"condition": torch.tensor([0])}, {"condition": torch.tensor([1])}])["condition"]
    gen = MusicgenGenerator(str(folder)).eval()
    states, mask = gen.encoder_states(cond)
    null_states, null_mask = gen.encoder_states(gen.null_condition(cond))
    assert torch.equal(states[1], null_states[1]) and torch.equal(mask[1], null_mask[1])
    assert not torch.equal(states[0], null_states[0])  # a real prompt is not null


def test_prompt_files(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("file,prompt\na.wav, calm piano \nb.wav,dark ambient\nc.wav,calm piano\n")
    assert read_text_prompts(str(csv)) == ["calm piano", "dark ambient"]  # stripped, duplicates dropped
    for data in (["x", "y"], [{"prompt": "x"}, {"prompt": "y"}], {"a.wav": "x", "b.wav": "y"}):
        path = tmp_path / "p.json"
        path.write_text(json.dumps(data))
        assert read_text_prompts(str(path)) == ["x", "y"]
    (tmp_path / "text.csv").write_text("text\nx\n")
    assert read_text_prompts(str(tmp_path / "text.csv"), column="text") == ["x"]


@pytest.mark.parametrize(
    "content, suffix, error, message",
    [
        (
            "file,genre\na.wav,jazz\n",
            ".csv",
            ValueError,
            r"columns \['file', 'genre'\]; expected a 'prompt' column",
        ),
        ('["x", 3]', ".json", ValueError, "entry 1 is a int, expected a string"),
        ("prompt\n\n \n", ".csv", ValueError, "no non-empty prompt"),
        ("{not json", ".json", ValueError, "is not valid JSON"),
        ('[{"text": "x"}]', ".json", ValueError, r"entry 0 has keys \['text'\], expected 'prompt'"),
    ],
)
def test_bad_prompt_files(tmp_path, content, suffix, error, message):
    path = tmp_path / f"prompts{suffix}"
    path.write_text(content)
    with pytest.raises(error, match=message):
        TextPromptDataModule(str(path), tokenizer=tiny_text_tokenizer())


def test_bad_tokenizer_and_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextPromptDataModule(str(tmp_path / "missing.csv"), tokenizer=tiny_text_tokenizer())
    with pytest.raises(ValueError, match="could not load a text tokenizer"):
        TextPromptDataModule(["x"], tokenizer=str(tmp_path))
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        TextPromptDataModule(["x"], tokenizer=tiny_text_tokenizer(), max_length=0)
