"""Cost of `cfgrl merge` on a ~100M-parameter model: wall time and peak memory (RSS).

Two Lightning-style checkpoints (generator weights plus Adam-like optimizer state, random values) are
merged at 1 and at 5 lambdas by :func:`lightning_cfgrl.cli.merge.merge_checkpoints`, each run in a
fresh subprocess. Peak RSS is the child's ``VmHWM`` (Linux): ``ru_maxrss`` is kept too, but Linux
carries the parent's RSS at fork into a child's ``ru_maxrss``, so the parent here never imports torch or
holds tensors (the checkpoints are built in a child as well). A naive merge (load both checkpoints into
memory, build the merged dict, save) is measured the same way for comparison. Peak RSS is reported net
of a child that only imports the same libraries, and as a multiple of one model's size.

    python benchmarks/merge_cost.py [--params-millions 100] [--out benchmarks/results/merge_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only in the child processes, so this one stays small
    import torch

CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench_dir"])
import torch
from safetensors.torch import save_file
from lightning_cfgrl.cli.merge import merge_checkpoints
from lightning_cfgrl.merging.streaming import merge_state_dicts, merged_checkpoint
torch.set_num_threads(args["threads"])
start = time.perf_counter()
if args["mode"] == "prepare":
    from merge_cost import build_generator_state, save_lightning_checkpoint
    for seed, name in enumerate(("quality", "diversity")):
        save_lightning_checkpoint(build_generator_state(args["params_millions"], args["width"], seed), args[name], seed)
elif args["mode"] == "stream":
    merge_checkpoints(args["quality"], args["diversity"], args["lambdas"], args["out"], method=args["method"])
elif args["mode"] == "naive":
    q = torch.load(args["quality"], weights_only=True, map_location="cpu")
    d = torch.load(args["diversity"], weights_only=True, map_location="cpu")
    strip = lambda sd: {k[len("generator."):]: v for k, v in sd.items() if k.startswith("generator.")}
    gq, gd = strip(q["state_dict"]), strip(d["state_dict"])
    for lam in args["lambdas"]:
        merged = merge_state_dicts(gq, gd, lam, args["method"])
        torch.save(merged_checkpoint(q, merged), f"{args['out']}/naive_{lam}.ckpt")
        save_file(merged, f"{args['out']}/naive_{lam}.safetensors")
        del merged
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print(json.dumps({"seconds": seconds, "vmhwm_kb": int(status["VmHWM"].split()[0]),
                  "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""


def build_generator_state(params_millions: float, width: int, seed: int) -> dict[str, torch.Tensor]:
    """A stack of ``[width, width]`` Linear layers (+ biases, + an int64 step buffer), ~params_millions."""
    import torch

    g = torch.Generator().manual_seed(seed)
    layers = max(1, round(params_millions * 1e6 / (width * width + width)))
    state: dict[str, torch.Tensor] = {}
    for i in range(layers):
        state[f"layers.{i}.weight"] = torch.randn(width, width, generator=g) * width**-0.5
        state[f"layers.{i}.bias"] = torch.randn(width, generator=g) * 0.01
    state["steps"] = torch.tensor(seed, dtype=torch.int64)
    return state


def save_lightning_checkpoint(state: dict[str, torch.Tensor], path: str, seed: int) -> None:
    """A checkpoint shaped like Lightning's, with Adam moments so the file is ~3x the weights."""
    import torch

    g = torch.Generator().manual_seed(seed + 1000)
    floats = [t for t in state.values() if t.is_floating_point()]
    moments = {
        i: {"exp_avg": torch.randn(t.shape, generator=g), "exp_avg_sq": torch.rand(t.shape, generator=g)}
        for i, t in enumerate(floats)
    }
    torch.save(
        {
            "state_dict": {f"generator.{k}": v for k, v in state.items()},
            "optimizer_states": [{"state": moments, "param_groups": [{"lr": 1e-4, "params": list(moments)}]}],
            "callbacks": {},
            "lr_schedulers": [],
            "hyper_parameters": {},
            "pytorch-lightning_version": "2.6.6",
            "epoch": 0,
            "global_step": 1,
        },
        path,
    )


def run_child(args: dict) -> dict:
    """Run CHILD with ``args`` in a fresh interpreter; returns its report plus RUSAGE_CHILDREN's maxrss."""
    args = {"bench_dir": str(Path(__file__).resolve().parent), **args}
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"benchmark child failed:\n{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The largest child so far; equals this child's own when it is the largest yet.
    report["children_maxrss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-millions", type=float, default=100.0)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--method", default="lerp", choices=["lerp", "slerp"])
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "merge_cost.json"))
    parser.add_argument("--skip-naive", action="store_true")
    opts = parser.parse_args()

    load_before = os.getloadavg()[0]  # timings are only comparable on an otherwise idle machine
    five = [0.0, 0.25, 0.5, 0.75, 1.0]
    runs = [("cfgrl merge (streaming)", "stream", [0.5]), ("cfgrl merge (streaming)", "stream", five)]
    if not opts.skip_naive:
        runs.append(("naive (load all, merge, save)", "naive", five))
    with tempfile.TemporaryDirectory(prefix="merge_cost_") as tmp:
        common = {
            "quality": f"{tmp}/quality.ckpt",
            "diversity": f"{tmp}/diversity.ckpt",
            "method": opts.method,
            "threads": opts.threads,
            "params_millions": opts.params_millions,
            "width": opts.width,
        }
        run_child({**common, "mode": "prepare", "lambdas": [], "out": tmp})
        source_mb = os.path.getsize(common["quality"]) / 2**20
        per_layer = opts.width * opts.width + opts.width  # as build_generator_state lays it out
        layers = max(1, round(opts.params_millions * 1e6 / per_layer))
        params = layers * per_layer + 1
        model_mb = (layers * per_layer * 4 + 8) / 2**20
        baseline = run_child({**common, "mode": "import", "lambdas": [], "out": tmp})
        baseline_mb = baseline["vmhwm_kb"] / 1024
        rows = []
        for label, mode, lambdas in runs:
            out_dir = Path(tmp) / f"out_{mode}_{len(lambdas)}"
            out_dir.mkdir()
            report = run_child({**common, "mode": mode, "lambdas": lambdas, "out": str(out_dir)})
            peak_mb = report["vmhwm_kb"] / 1024
            rows.append(
                {
                    "method": label,
                    "merge": opts.method,
                    "num_lambdas": len(lambdas),
                    "seconds": round(report["seconds"], 2),
                    "seconds_per_lambda": round(report["seconds"] / len(lambdas), 2),
                    "peak_rss_mb": round(peak_mb, 1),
                    "peak_rss_net_mb": round(peak_mb - baseline_mb, 1),
                    "net_peak_over_model": round((peak_mb - baseline_mb) / model_mb, 2),
                    "ru_maxrss_mb": round(report["ru_maxrss_kb"] / 1024, 1),
                    "rusage_children_maxrss_mb": round(report["children_maxrss_kb"] / 1024, 1),
                }
            )
            for f in out_dir.iterdir():  # keep the disk footprint to one run's outputs
                f.unlink()

    machine = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": baseline["threads"],
        "torch": baseline["torch"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu",
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    result = {
        "benchmark": "merge_cost",
        "params": params,
        "model_mb": round(model_mb, 1),
        "source_checkpoint_mb": round(source_mb, 1),
        "import_baseline_rss_mb": round(baseline_mb, 1),
        "machine": machine,
        "runs": rows,
    }
    print(
        f"model: {params / 1e6:.1f}M params, {model_mb:.0f} MB of weights; each source checkpoint {source_mb:.0f} MB "
        f"(with optimizer state); import-only RSS {baseline_mb:.0f} MB; {machine['cpu']}, {machine['threads']} threads"
    )
    header = f"{'method':32} {'lambdas':>7} {'seconds':>8} {'s/lambda':>9} {'peak MB':>8} {'net MB':>8} {'net/model':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['method']:32} {r['num_lambdas']:>7} {r['seconds']:>8.2f} {r['seconds_per_lambda']:>9.2f} "
            f"{r['peak_rss_mb']:>8.0f} {r['peak_rss_net_mb']:>8.0f} {r['net_peak_over_model']:>9.2f}"
        )
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {opts.out}")


if __name__ == "__main__":
    main()
