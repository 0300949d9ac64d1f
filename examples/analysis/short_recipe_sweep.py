"""The CI short recipe's training outcomes over training seeds, on this machine: the margins behind the
thresholds of ``tests/test_recipe.py`` (ASSERTED in CI, RESEARCH only under ``pytest --research``).

    OMP_NUM_THREADS=1 python examples/analysis/short_recipe_sweep.py --domain music --seeds 0 1 2 3
    -> benchmarks/results/short_recipe_sweep_<domain>.json (merged with the file's other CPUs' rows)

Rows are keyed by CPU model and thread count, so a sweep on another CPU adds rows beside this one's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lightning_cfgrl.eval.machine import describe_machine  # noqa: E402
from lightning_cfgrl.io import atomic_save_json  # noqa: E402
from tests.test_recipe import ASSERTED, RESEARCH, run_short_recipe, short_base_and_embedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", choices=["music", "hmm"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the cfgrl fit runs of the short recipe too
    out = ROOT / "benchmarks" / "results" / f"short_recipe_sweep_{args.domain}.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    machine = describe_machine()
    start = time.process_time()
    base = short_base_and_embedder(args.domain)
    runs = {}
    for seed in args.seeds:
        runs[str(seed)] = run_short_recipe(args.domain, seed, base)
        print(args.domain, seed, runs[str(seed)], flush=True)
    thresholds = {"asserted": ASSERTED[args.domain], "research": RESEARCH[args.domain]}
    margins = {
        tier: {k: min(r[k] for r in runs.values()) - t for k, t in table.items()}
        for tier, table in thresholds.items()
    }
    key = f"{machine['cpu_model']} x{machine['torch_threads']}"
    rows = {
        **old.get("rows", {}),
        key: {"seeds": runs, "min_margin_over_threshold": margins, "cpu_s": time.process_time() - start},
    }
    atomic_save_json(
        {
            "what": f"tests/test_recipe.py short recipe, domain {args.domain}, per training seed",
            "command": f"OMP_NUM_THREADS={args.threads} python examples/analysis/short_recipe_sweep.py "
            f"--domain {args.domain} --seeds {' '.join(map(str, args.seeds))}",
            "thresholds": thresholds,
            "rows": rows,
            "machine": machine,
        },
        out,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
