"""Inference cost: the base model sampled with CFG against the distilled model of the same size.

The distilled model has the base's architecture and is sampled without CFG, so its cost is that of the
same network at guidance 1; CFG (guidance 3) doubles the batch (``[cond; null]``, one forward per
step). Weights are random (cost does not depend on them). For each batch (1, 8, 32) and number of new
tokens (frames: 256, 1024) both modes are timed with the KV cache on, in a subprocess of their own,
after a short warm-up generation of each at the same batch size; the repeats alternate the two modes
so that load from other processes hits both alike. Latency is the median over the repeats, peak
memory that of the first timed generation of each mode.

Beside them, in the same process and interleaved with them, the model's own **batch scaling**: the floor
(the bare loop of incremental forwards, no sampling, on pre-sampled tokens) at batch B and at 2B
(``[cond; null]``, what CFG runs). CFG by batch doubling can never cost less than ``floor(2B) /
floor(B)`` times the distilled model, so that ratio is the yardstick for the CFG/distilled ratio: near
1 where a step is bound by per-op latency or by reading the weights (small batches: a doubled batch is
almost free), near 2 where it is bound by arithmetic or by reading the KV cache (large batches, long
sequences). The paper's "2x cheaper" is that upper bound.

Reported per configuration: latency (seconds to generate the batch: the time a caller waits for its
sequence), tokens/s (``batch * frames / latency``; one token = one frame of K codebooks — multiply by K
for codebook tokens) and peak memory during generation, net of the memory in use before it (CPU: peak
RSS; CUDA: ``max_memory_allocated``). The CFG/distilled ratios come from the same run.

    python benchmarks/inference_cost.py            # default: dim 256, 4 layers, K 4, V 1024, 2 repeats (~4-5 min, 2 cores)
    python benchmarks/inference_cost.py --quick    # 64 and 256 frames, 1 repeat (~1 min)
    python benchmarks/inference_cost.py --full     # dim 512, 6 layers, 3 repeats (GPU, or a long CPU run)
    python benchmarks/inference_cost.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (  # noqa: E402
    PeakMemory,
    add_device_args,
    describe_machine,
    resolve_device,
    save_result,
    set_threads,
    synchronize,
)

CONDITION_SIZES = (8, 8, 4)
GUIDANCE = 3.0
PRESETS = {
    "quick": dict(dim=256, layers=4, heads=4, codebooks=4, vocab=1024, new_tokens=[64, 256], repeats=1),
    "default": dict(dim=256, layers=4, heads=4, codebooks=4, vocab=1024, new_tokens=[256, 1024], repeats=2),
    "full": dict(dim=512, layers=6, heads=8, codebooks=4, vocab=1024, new_tokens=[256, 1024], repeats=3),
}


def run_pair(spec: dict) -> list[dict]:
    """Time CFG and distilled for one (batch, frames) in this process, interleaved; one record per mode.

    Both modes share the process, so a busy machine slows both alike: after a warm-up of each, the
    rounds alternate the order (cfg, distilled), (distilled, cfg), ... Peak memory is read on round 0,
    CFG first (the larger), each over its own generation (the RSS high-water mark is reset per run).
    """
    from lightning_cfgrl.core.sampling import SamplingConfig, sample
    from lightning_cfgrl.models import AudioTokenTransformer

    device = torch.device(spec["device"])
    set_threads(spec["threads"])
    torch.manual_seed(0)
    frames, batch = spec["new_tokens"], spec["batch"]
    model = (
        AudioTokenTransformer(
            num_codebooks=spec["codebooks"],
            vocab_size=spec["vocab"],
            condition_sizes=CONDITION_SIZES,
            dim=spec["dim"],
            num_layers=spec["layers"],
            num_heads=spec["heads"],
            max_frames=frames,
        )
        .to(device)
        .eval()
    )
    configs = {"cfg": SamplingConfig(guidance_scale=GUIDANCE), "distilled": SamplingConfig()}
    cond = torch.randint(1, 4, (batch, len(CONDITION_SIZES)), device=device)
    for config in configs.values():  # warm-up: same batch, a few frames (first-call costs, kernels)
        sample(model, cond, min(16, frames), config, seed=0)
    # the floor: bare incremental forwards on pre-sampled tokens, at B and at 2B ([cond; null])
    tokens = sample(model, cond, frames, configs["distilled"], seed=0)
    floor_inputs = {
        "floor": (tokens, cond),
        "floor_2b": (torch.cat([tokens, tokens]), torch.cat([cond, model.null_condition(cond)])),
    }

    @torch.no_grad()
    def floor(mode: str, num_steps: int | None = None) -> None:
        steps, condition = floor_inputs[mode]
        num_steps = steps.shape[2] if num_steps is None else num_steps
        cache = model.new_cache(steps.shape[0], steps.shape[2])
        for s in range(num_steps):
            model(steps[..., : s + 1], condition, cache=cache)

    def run(mode: str, seed: int) -> None:
        if mode in configs:
            sample(model, cond, frames, configs[mode], seed=seed)
        else:
            floor(mode)

    for mode in floor_inputs:
        floor(mode, min(16, tokens.shape[2]))
    synchronize(device)
    modes = ("cfg", "distilled", "floor", "floor_2b")
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, tuple[float, str]] = {}
    for r in range(spec["repeats"]):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            with PeakMemory(device) as mem:
                start = time.perf_counter()
                run(mode, r + 1)
                synchronize(device)
                latencies[mode].append(time.perf_counter() - start)
            if r == 0:
                peaks[mode] = (mem.mb, mem.method)
    records = []
    num_steps = model.pattern.num_steps(frames)
    for mode in modes:
        streams = 2 if mode in ("cfg", "floor_2b") else 1
        positions = len(CONDITION_SIZES) + num_steps
        kv_bytes = 2 * spec["layers"] * streams * batch * positions * spec["dim"] * 4
        latency = statistics.median(latencies[mode])
        records.append(
            {
                "mode": mode,
                "batch": batch,
                "new_tokens": frames,
                "tokens_per_s": batch * frames / latency,
                "codebook_tokens_per_s": batch * frames * spec["codebooks"] / latency,
                "latency_s": latency,
                "latencies_s": latencies[mode],
                "ms_per_step": 1e3 * latency / num_steps,
                "peak_mem_mb": peaks[mode][0],
                "peak_mem_method": peaks[mode][1],
                "kv_cache_mb": kv_bytes / 2**20,
                "forward_batch": streams * batch,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
    return records


def run_in_subprocess(spec: dict) -> list[dict]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_args(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="64 and 256 frames")
    size.add_argument("--full", action="store_true", help="dim 512, 6 layers, 8 heads, 3 repeats")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--new-tokens", type=int, nargs="+", default=None, help="frames per sequence (preset's by default)"
    )
    for name in ("dim", "layers", "heads", "codebooks", "vocab", "repeats"):
        p.add_argument(f"--{name}", type=int, default=None, help="override the preset")
    p.add_argument(
        "--in-process", action="store_true", help="no subprocess per (batch, frames) (smoke tests)"
    )
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "inference_cost.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = "quick" if args.quick else "full" if args.full else "default"
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.preset = preset
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_pair(json.loads(args.child))))
        return {}
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    machine = describe_machine(device)
    print(f"machine: {machine}", flush=True)
    common = dict(
        device=str(device),
        threads=threads,
        dim=args.dim,
        layers=args.layers,
        heads=args.heads,
        codebooks=args.codebooks,
        vocab=args.vocab,
        repeats=args.repeats,
    )
    records = []
    begin = time.perf_counter()
    for frames in args.new_tokens:
        for batch in args.batches:
            spec = dict(common, batch=batch, new_tokens=frames)
            pair = run_pair(spec) if args.in_process else run_in_subprocess(spec)
            records += pair
            for record in pair:
                if record["mode"].startswith("floor"):
                    print(
                        f"           {record['mode']:9s} batch {batch:3d}: {record['latency_s']:.2f} s",
                        flush=True,
                    )
                    continue
                print(
                    f"[{time.perf_counter() - begin:6.0f} s] {record['mode']:9s} batch {batch:3d} frames {frames:5d}: "
                    f"{record['latency_s']:.2f} s, {record['tokens_per_s']:.0f} tokens/s, "
                    f"peak {record['peak_mem_mb']:.0f} MB",
                    flush=True,
                )
    ratios = []
    for frames in args.new_tokens:
        for batch in args.batches:
            cfg, dist, floor_b, floor_2b = (
                next(r for r in records if (r["mode"], r["batch"], r["new_tokens"]) == (m, batch, frames))
                for m in ("cfg", "distilled", "floor", "floor_2b")
            )
            ratios.append(
                {
                    "batch": batch,
                    "new_tokens": frames,
                    "latency_ratio_cfg_over_distilled": cfg["latency_s"] / dist["latency_s"],
                    "tokens_per_s_ratio_distilled_over_cfg": dist["tokens_per_s"] / cfg["tokens_per_s"],
                    "peak_mem_ratio_cfg_over_distilled": cfg["peak_mem_mb"] / dist["peak_mem_mb"]
                    if dist["peak_mem_mb"] >= 1
                    else None,
                    # the model's own batch scaling: what CFG by batch doubling costs at the least
                    "floor_ratio_2b_over_b": floor_2b["latency_s"] / floor_b["latency_s"],
                }
            )
    argv_used = sys.argv[1:] if argv is None else argv
    result = {
        "benchmark": "inference_cost",
        "command": "python benchmarks/inference_cost.py " + " ".join(argv_used),
        "preset": args.preset,
        "config": {
            **{k: v for k, v in common.items() if k not in ("device", "threads")},
            "guidance_scale": GUIDANCE,
            "condition_slots": len(CONDITION_SIZES),
            "kv_cache": True,
            "subprocess_per_batch_and_length": not args.in_process,
            "modes_interleaved": True,
            "weights": "random init (cost does not depend on the weights)",
            "params": records[0]["params"],
        },
        "machine": machine,
        "machine_after": {"load_average_1_5_15": describe_machine(device).get("load_average_1_5_15")},
        "wall_s": time.perf_counter() - begin,
        "records": records,
        "ratios": ratios,
    }
    save_result(result, args.out, markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    c, m = result["config"], result["machine"]
    lines = [
        f"Inference cost: {c['params'] / 1e6:.1f} M params (dim {c['dim']}, {c['layers']} layers, K {c['codebooks']}, "
        f"V {c['vocab']}), KV cache, CFG guidance {c['guidance_scale']:g} vs distilled (no CFG); "
        f"{m['device']}, {m['torch_threads']} threads",
        "",
        "| batch | frames | mode | latency s | tokens/s | peak mem MB | CFG/distilled latency | floor(2B)/floor(B) | CFG/distilled mem |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ratio in result["ratios"]:
        for mode in ("cfg", "distilled"):
            r = next(
                r
                for r in result["records"]
                if (r["mode"], r["batch"], r["new_tokens"]) == (mode, ratio["batch"], ratio["new_tokens"])
            )
            mem = ratio["peak_mem_ratio_cfg_over_distilled"]
            extra = (
                f"{ratio['latency_ratio_cfg_over_distilled']:.2f}x | {ratio['floor_ratio_2b_over_b']:.2f}x | "
                + (f"{mem:.2f}x" if mem is not None else "n/a (< 1 MB)")
                if mode == "cfg"
                else " |  | "
            )
            lines.append(
                f"| {r['batch']} | {r['new_tokens']} | {mode} | {r['latency_s']:.2f} | {r['tokens_per_s']:.0f} | "
                f"{r['peak_mem_mb']:.0f} | {extra} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
