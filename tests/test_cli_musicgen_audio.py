"""MusicGen's remaining stages through ``cfgrl`` alone, on a tiny random MusicGen and a tiny random CLAP
(nothing downloads): ``merge`` of the LoRA quality and diversity students, then one ``evaluate`` run with
the base folder as a candidate (its CFG sweep) beside the students and the merged model, scored by FAD
(CLAP embeddings against reference WAVs that ``cfgrl generate`` wrote from the base) and CLAP text
adherence together, on the held-out text prompts of the training datamodule."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from lightning_cfgrl.cli.main import main  # noqa: E402
from tests.helpers.clap import save_tiny_clap  # noqa: E402
from tests.test_cli_musicgen import PROMPTS, _fit  # noqa: E402

EVAL_YAML = """
prompts:
  datamodule:
    class_path: lightning_cfgrl.audio.TextPromptDataModule
    init_args: {{prompts: {prompts}, tokenizer: models/tiny-musicgen, split: {{heldout_fraction: 0.25}}}}
protocol:
  num_frames: 4
  num_samples: 2
  num_seeds: 2
  num_selection_seeds: 2
  quality: clap_text
  reference: [0.0, 0.0]  # CLAP has no chance level: the hypervolume reference (quality, diversity) is given
scorers:
  - class_path: lightning_cfgrl.audio.scorers.FrechetAudioDistance
    init_args:
      reference: ref/audio
      embedder: {{class_path: lightning_cfgrl.audio.clap.ClapEncoder, init_args: {{model: models/tiny-clap}}}}
      decoder: {{class_path: lightning_cfgrl.audio.EncodecTokenizer, init_args: {{weights: {{pretrained: models/tiny-musicgen}}}}}}
  - class_path: lightning_cfgrl.audio.scorers.ClapTextAdherence
    init_args:
      model: models/tiny-clap
      prompt_tokenizer: models/tiny-musicgen
      decoder: {{class_path: lightning_cfgrl.audio.EncodecTokenizer, init_args: {{weights: {{pretrained: models/tiny-musicgen}}}}}}
embedder:
  class_path: lightning_cfgrl.embedders.TokenHistogramEmbedder
  init_args: {{vocab_size: 16}}
candidates:
  base: models/tiny-musicgen
  guidance_scales: [1.0, 3.0]
  cfg_reference: 3.0
  temperatures: []
  top_ps: []
  distilled:
    beta=0: runs/musicgen_lora/checkpoints/last.ckpt
    beta=15: runs/musicgen_lora_diversity/checkpoints/last.ckpt
    merged 0.5: "runs/musicgen_merged/merged_lambda=0.50.ckpt"
  quality_model: beta=0
  diversity_model: beta=15
output: {{out: runs/eval_musicgen, progress: false}}
"""


@pytest.mark.slow
def test_musicgen_merge_and_evaluate_with_the_base_fad_and_clap_through_the_cli(
    tmp_path, monkeypatch, one_thread
):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "models" / "tiny-musicgen"
    assert main(["tiny-musicgen", "--out", str(folder)]) == 0
    save_tiny_clap(tmp_path / "models" / "tiny-clap")
    quality = _fit("musicgen_lora.yaml", folder, tmp_path, steps=1, val_batches=0)
    diverse = _fit("musicgen_lora_diversity.yaml", folder, tmp_path, steps=1, val_batches=0)

    # merge the two LoRA students (docs/audio.md, step 4): dense generators at each lambda
    merge = ["merge", "--quality", str(quality), "--diversity", str(diverse), "--lambdas", "0,0.5,1"]
    assert main([*merge, "--out", "runs/musicgen_merged"]) == 0
    merged = sorted(p.name for p in (tmp_path / "runs" / "musicgen_merged").glob("*.ckpt"))
    assert merged == [f"merged_lambda={x}.ckpt" for x in ("0.00", "0.50", "1.00")], merged

    # FAD's reference set: WAVs of the base folder itself, written by cfgrl generate
    texts = json.dumps(["calm piano", "loud rock guitar", "dark ambient", "fast techno drums"])
    ref = [
        "generate",
        "--checkpoint",
        str(folder),
        "--prompts",
        texts,
        "--num_frames",
        "4",
        "--guidance",
        "3",
    ]
    assert main([*ref, "--decoder", "generator", "--out", "ref", "--progress", "false"]) == 0
    assert len(list((tmp_path / "ref" / "audio").glob("*.wav"))) == 4

    (tmp_path / "eval.yaml").write_text(EVAL_YAML.format(prompts=PROMPTS))
    assert main(["evaluate", "--config", "eval.yaml"]) == 0
    results = json.loads((tmp_path / "runs" / "eval_musicgen" / "results.json").read_text())
    rows = {r["name"]: r for r in results["results"]}
    assert list(rows) == [
        "CFG g=1",
        "CFG g=3",
        "distilled beta=0",
        "distilled beta=15",
        "distilled merged 0.5",
    ]
    for name, row in rows.items():
        fad, clap = row["metrics"]["fad"], row["metrics"]["clap_text"]
        assert math.isfinite(fad[0]) and fad[0] >= 0, (name, fad)
        assert -1.0 <= clap[0] <= 1.0, (name, clap)
        assert len(row["per_seed"]["fad"]) == len(row["per_seed"]["clap_text"]) == 2
    assert results["settings"]["num_prompts"] == 3  # the held-out 25 % of the 12 prompts
    merged_state = torch.load(tmp_path / "runs/musicgen_merged/merged_lambda=0.50.ckpt", weights_only=True)
    assert not any("lora_" in k for k in merged_state["state_dict"])  # dense: adapters folded in
