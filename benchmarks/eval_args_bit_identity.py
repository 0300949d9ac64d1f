"""Bit-identity of the grouped ``Evaluation`` / ``generate`` / ``sample`` arguments against the flat ones.

With the code of ``--before`` (a commit from before the grouping, exported with ``git archive``) and with
this tree's code, in the same folder: ``cfgrl evaluate`` of the custom domain of ``tests/test_evaluate.py``
(two tiny checkpoints and their merge: CFG, temperature and top-p sweeps, the selection seeds, distilled,
merged and placebo candidates, claims), from its flat YAML before and its grouped YAML after; and
``cfgrl generate`` of one tiny checkpoint (plain; CFG 3 with top-k 8; several prompt batches). Compared:
every number of ``results.json`` but the timings (tokens/s, the machine) and the token files' sha256.

    python benchmarks/eval_args_bit_identity.py --before 17c0768 --work /tmp/eval_args_bitid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from configs_bit_identity import cfgrl, export, sha256  # noqa: E402  (one home for the old-code runner)

sys.path.insert(0, str(ROOT))
PY = sys.executable
GENERATIONS = {
    "plain": ["--num_samples", "3"],
    "cfg3_top_k8": ["--guidance", "3", "--top_k", "8", "--num_samples", "2"],
    "batches_seed5": ["--batch_size", "1", "--seed", "5", "--temperature", "0.7", "--num_frames", "6"],
}
# the flat layout of tests/test_evaluate.py's CONFIG, as it was before the grouping
FLAT_CONFIG = """
datamodule:
  class_path: my_domain.ParityPrompts
num_frames: 6
num_samples: 3
num_seeds: 2
num_selection_seeds: 2
scorers:
  - class_path: my_domain.Distance
  - class_path: my_domain.ParityMatch
embedder:
  class_path: my_domain.CountEmbedder
reward_embedder:
  class_path: lightning_cfgrl.embedders.TokenHistogramEmbedder
  init_args: {vocab_size: 8}
candidates:
  base: base.ckpt
  guidance_scales: [1.0, 3.0]
  temperatures: [0.7]
  top_ps: [0.9]
  distilled: {q: other.ckpt, d: base.ckpt}
  quality_model: q
  diversity_model: d
  merged_dir: merged
  placebo: other.ckpt
out: out
log_dir: out/tb
progress: false
"""


def numbers(path: Path) -> dict:
    """``results.json`` without what depends on the machine or the clock."""
    saved = json.loads(path.read_text())
    saved.pop("machine", None)
    saved["settings"].pop("machine", None)
    for block in (saved["results"], saved["selection"]["results"]):
        for result in block:
            result.pop("tokens_per_s")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a commit with the flat arguments")
    parser.add_argument("--work", type=Path, required=True, help="an empty folder for the runs")
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison to this JSON file")
    args = parser.parse_args()
    from lightning_cfgrl.cli.merge import merge_checkpoints
    from tests.test_evaluate import CONFIG, DOMAIN, tiny_checkpoint

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    old = export(args.before, work / "before_src")
    (work / "my_domain.py").write_text(DOMAIN)
    (work / "flat.yaml").write_text(FLAT_CONFIG)
    (work / "grouped.yaml").write_text(
        CONFIG.replace("out: out\n", "out: out_after\n").replace("out/tb", "out_after/tb")
    )
    tiny_checkpoint(work / "base.ckpt", 0)
    tiny_checkpoint(work / "other.ckpt", 1)
    merge_checkpoints(
        str(work / "other.ckpt"), str(work / "base.ckpt"), [0.0, 0.5, 1.0], str(work / "merged")
    )

    cfgrl(old, work, "evaluate", "--config", "flat.yaml")
    cfgrl(ROOT, work, "evaluate", "--config", "grouped.yaml")
    before, after = numbers(work / "out/results.json"), numbers(work / "out_after/results.json")
    report: dict = {"evaluate": {"results_json_equal": before == after, "candidates": len(after["results"])}}
    prompts = "[[1], [2], [1]]"
    report["generate"] = {}
    for name, extra in GENERATIONS.items():
        hashes = []
        for code, tag in ((old, "before"), (ROOT, "after")):
            out = work / f"gen_{name}_{tag}"
            cfgrl(code, work, "generate", "--checkpoint", "base.ckpt", "--prompts", prompts, "--num_frames", "5",
                  "--progress", "false", "--out", str(out), *extra)  # fmt: skip
            hashes.append(sha256(out / "tokens.safetensors"))
        report["generate"][name] = {"sha256": hashes[1], "equal": hashes[0] == hashes[1]}
    report["all_equal"] = report["evaluate"]["results_json_equal"] and all(
        g["equal"] for g in report["generate"].values()
    )
    report["before"] = args.before
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not report["all_equal"]:
        raise SystemExit("the grouped arguments changed the numbers")


if __name__ == "__main__":
    main()
