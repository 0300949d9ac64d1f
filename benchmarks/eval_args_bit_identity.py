"""Bit-identity of the grouped ``Evaluation`` / ``generate`` / ``sample`` arguments against the flat ones.

With the code of ``--before`` (a commit from before the grouping, exported with ``git archive``) and with
this tree's code, in the same folder: ``cfgrl evaluate`` of the custom domain of ``tests/test_evaluate.py``
(two tiny checkpoints and their merge: CFG, temperature and top-p sweeps, the selection seeds, distilled,
merged and placebo candidates, claims), from its flat YAML (the old tree's) before and its grouped YAML after; and
``cfgrl generate`` of one tiny checkpoint (plain; CFG 3 with top-k 8; several prompt batches). Compared:
every number of ``results.json`` but the timings (tokens/s, the machine) and the token files' sha256.

    python benchmarks/eval_args_bit_identity.py --before 17c0768 --work /tmp/eval_args_bitid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
# With --before's code: its tests/test_evaluate.py writes the domain, the flat-layout YAML and the
# checkpoints (so both codes read files of the old layout; this tree upgrades them on read).
SETUP = """
from pathlib import Path
from lightning_cfgrl.cli.merge import merge_checkpoints
from tests.test_evaluate import CONFIG, DOMAIN, tiny_checkpoint
Path("my_domain.py").write_text(DOMAIN)
Path("flat.yaml").write_text(CONFIG)
tiny_checkpoint(Path("base.ckpt"), 0)
tiny_checkpoint(Path("other.ckpt"), 1)
merge_checkpoints("other.ckpt", "base.ckpt", [0.0, 0.5, 1.0], "merged")
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
    from tests.test_evaluate import CONFIG

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    old = export(args.before, work / "before_src")
    subprocess.run([PY, "-c", SETUP], cwd=work, env=dict(os.environ, PYTHONPATH=str(old)), check=True)
    (work / "grouped.yaml").write_text(
        CONFIG.replace("out: out\n", "out: out_after\n").replace("out/tb", "out_after/tb")
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
