"""MusicGen end to end through ``cfgrl`` alone, on a tiny random MusicGen (``cfgrl tiny-musicgen``): LoRA
distillation and the diversity recipe from the shipped YAMLs with text prompts, ``validate``, ``evaluate``
with the base folder's CFG / temperature sweeps beside the students and an own scorer (``--import``),
``generate`` from text prompts, ``export`` that ``AutoProcessor`` and ``from_pretrained`` load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from lightning_cfgrl.audio import TextPromptDataModule  # noqa: E402
from lightning_cfgrl.cli.main import main  # noqa: E402
from lightning_cfgrl.eval.prompts import load_prompts  # noqa: E402
from lightning_cfgrl.training.prompts import PromptSplit  # noqa: E402
from tests.helpers.musicgen import tiny_text_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "examples" / "prompts" / "musicgen_prompts.csv"
TEXTS = ["calm piano", "loud rock guitar", "dark ambient", "fast techno drums", "soft jazz bass", ""]

SCORER = textwrap.dedent(
    '''
    import torch
    from lightning_cfgrl.eval import Scorer

    class DistinctCodes(Scorer):
        """The share of distinct codes in a sample: an own scorer, imported with --import."""
        name = "distinct"
        chance = 0.0

        def __call__(self, frames, condition):
            flat = frames.reshape(frames.shape[0], -1)
            return torch.tensor([len(set(row.tolist())) / len(row) for row in flat])
    '''
)


def test_text_datamodule_gives_evaluation_tokenised_prompts_not_row_indices():
    data = TextPromptDataModule(
        TEXTS, tokenizer=tiny_text_tokenizer(), split=PromptSplit(heldout_fraction=0.5)
    )
    prompts = load_prompts(datamodule=data)
    assert isinstance(prompts, dict) and set(prompts) == {"input_ids", "attention_mask"}
    held = data.prompt_texts("heldout")
    tok = tiny_text_tokenizer()
    for row, mask, text in zip(prompts["input_ids"], prompts["attention_mask"], held, strict=True):
        want = tok(text)["input_ids"] if text else []
        assert row[mask.bool()].tolist() == want
        assert data.describe_prompt({"input_ids": row, "attention_mask": mask}) == text  # audio tags


def test_text_prompts_file_and_list_are_tokenised(tmp_path):
    (tmp_path / "p.txt").write_text("calm piano\n\nloud rock guitar\n")
    tok = tiny_text_tokenizer()
    for source in (str(tmp_path / "p.txt"), ["calm piano", "loud rock guitar"]):
        prompts = load_prompts(prompts=source, tokenizer=tok)
        assert prompts["input_ids"][0, :3].tolist() == tok("calm piano")["input_ids"]
    with pytest.raises(ValueError, match="need the model's text tokenizer: give tokenizer"):
        load_prompts(prompts=["calm piano"])


def _fit(config: str, folder: Path, workdir: Path, steps: int, val_batches: int = 1) -> Path:
    text = (REPO / "examples" / "configs" / config).read_text()
    text = text.replace("models/musicgen-small", str(folder)).replace(
        "examples/prompts/musicgen_prompts.csv", str(PROMPTS)
    )
    (workdir / config).write_text(text)
    args = ["fit", "--config", str(workdir / config), "--model.init_args.rollout.num_frames=4"]
    args += [f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}"]
    args += [f"--trainer.limit_val_batches={val_batches}", "--trainer.accelerator=cpu"]
    args += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    assert main(args) == 0, config
    return workdir / "runs" / config.removesuffix(".yaml") / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_musicgen_end_to_end_through_the_cli(tmp_path, monkeypatch, capsys, one_thread):
    pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "models" / "tiny-musicgen"
    assert main(["tiny-musicgen", "--out", str(folder)]) == 0
    quality = _fit("musicgen_lora.yaml", folder, tmp_path, steps=2)
    diverse = _fit("musicgen_lora_diversity.yaml", folder, tmp_path, steps=1, val_batches=0)
    hparams = torch.load(diverse, weights_only=True)["hyper_parameters"]
    assert hparams["rollout"]["num_samples_per_prompt"] == 4  # the shipped recipe's G

    # validate a LoRA run's checkpoint with its own YAML
    args = ["validate", "--config", str(tmp_path / "musicgen_lora.yaml"), "--ckpt_path", str(quality)]
    assert main([*args, "--model.init_args.rollout.num_frames=4", "--trainer.limit_val_batches=1"]) == 0

    # evaluate: the base folder under CFG and temperature beside both students, on the held-out text
    # prompts of the training datamodule, with an own scorer trusted by --import
    (tmp_path / "mg_scorers.py").write_text(SCORER)
    config = {
        "prompts": {
            "datamodule": {
                "class_path": "lightning_cfgrl.audio.TextPromptDataModule",
                "init_args": {
                    "prompts": str(PROMPTS),
                    "tokenizer": str(folder),
                    "split": {"heldout_fraction": 0.25},
                },
            }
        },
        "scorers": [{"class_path": "mg_scorers.DistinctCodes"}],
        "embedder": {
            "class_path": "lightning_cfgrl.embedders.TokenHistogramEmbedder",
            "init_args": {"vocab_size": 16},
        },
        "protocol": {"num_frames": 4, "num_samples": 2, "num_seeds": 2, "num_selection_seeds": 2},
        "candidates": {
            "base": str(folder),
            "guidance_scales": [1.0, 3.0],
            "cfg_reference": 3.0,
            "temperatures": [0.8],
            "top_ps": [],
            "distilled": {"beta=0": str(quality), "beta=15": str(diverse)},
            "quality_model": "beta=0",
            "diversity_model": "beta=15",
        },
        "output": {"out": "eval", "progress": False},
    }
    (tmp_path / "eval.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "--import", str(tmp_path / "mg_scorers.py"), "--config", str(tmp_path / "eval.json")]
        )
        == 0
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    names = [r["name"] for r in results["results"]]
    assert names == ["CFG g=1", "CFG g=3", "temperature 0.8", "distilled beta=0", "distilled beta=15"]
    for r in results["results"]:
        assert 0.0 < r["metrics"]["distinct"][0] <= 1.0
    assert results["settings"]["num_prompts"] == 3  # the held-out 25 % of the 12 prompts, tokenised

    # generate from text prompts (the tokenizer is the base folder's, found from the checkpoint's spec)
    texts = ["calm piano", "loud rock guitar"]
    gen = ["generate", "--checkpoint", str(quality), "--prompts", json.dumps(texts), "--num_frames", "4"]
    assert (
        main([*gen, "--num_samples", "2", "--decoder", "generator", "--out", "gen", "--progress", "false"])
        == 0
    )
    meta = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert meta["prompts"] == texts and len(meta["audio"]) == 4
    from safetensors.torch import load_file

    tokens = load_file(tmp_path / "gen" / "tokens.safetensors")
    tok = tiny_text_tokenizer()
    assert tokens["condition.input_ids"][1, :4].tolist() == tok("loud rock guitar")["input_ids"]

    # export: the folder loads with AutoProcessor and from_pretrained, and generate() runs
    assert main(["export", "--checkpoint", str(quality), "--out", "exported"]) == 0
    from lightning_cfgrl.adapters.musicgen import import_musicgen

    hf = import_musicgen()
    processor = hf.AutoProcessor.from_pretrained(tmp_path / "exported", local_files_only=True)
    model = hf.MusicgenForConditionalGeneration.from_pretrained(tmp_path / "exported", local_files_only=True)
    inputs = processor(text=texts, padding=True, return_tensors="pt")
    assert inputs["input_ids"][1, :4].tolist() == tok("loud rock guitar")["input_ids"]
    audio = model.generate(**inputs, max_new_tokens=6, do_sample=False, guidance_scale=3.0)
    assert audio.shape[0] == 2 and bool(torch.isfinite(audio).all())
