"""Rollouts of one's own model through ``ModuleAdapter``: incremental (``module.step``) vs recompute.

The model is the recurrent example of the adapter docs (``tests/helpers/gru_lm.py`` ``RecurrentGRU``: a
GRU LM whose ``step`` carries its hidden state), K codebooks on MusicGen's delay pattern, random weights.

* **Floor**: the module's own ``step`` called in a bare loop on tokens sampled beforehand (the adapter's
  input stream: start id, then each previous step), state carried; CFG's floor runs the doubled batch
  ``[cond; null]``. ``sampler / floor`` is what the adapter and the sampler add per step (target <= 1.2x).
* **Sampler**: ``lightning_cfgrl.sample(adapter, ...)``, which uses the adapter's ``StepCache``.
* **Recompute**: the same call with ``decoding=DecodeConfig(use_cache=False)``: every step runs the module's ``forward`` over the
  whole prefix (what a module without ``step`` costs): O(T^2). Timed for lengths up to
  ``--recompute-max`` frames only (128 by default: about a minute and a half per run on one busy CPU thread).

Runs are interleaved (ABBA) after a warm-up round; ratios are medians of per-round ratios. Before
timing, the incremental and recompute samplers are checked to draw the same tokens for one seed, with
and without CFG.

    python benchmarks/adapter_rollout.py [--frames 128 256 1024] [--batch 8] [--dim 256] [--layers 2]
        [--codebooks 4] [--vocab 1024] [--rounds 3] [--recompute-max 128] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from machine import (  # noqa: E402
    add_device_args,
    describe_machine,
    git_state,
    resolve_device,
    save_result,
    set_threads,
    synchronize,
)
from timing import best_ratio, interleaved, paired_ratio, summary_rows  # noqa: E402

import lightning_cfgrl  # noqa: E402
from lightning_cfgrl import DecodeConfig, ModuleAdapter, SamplingConfig, sample  # noqa: E402
from lightning_cfgrl.core.delay_pattern import DelayPattern  # noqa: E402
from tests.helpers.gru_lm import RecurrentGRU  # noqa: E402

GUIDANCE = 3.0


def build_adapter(args: argparse.Namespace, device: torch.device) -> ModuleAdapter:
    torch.manual_seed(0)
    module = RecurrentGRU(args.codebooks, args.vocab, args.dim, num_layers=args.layers)
    delays = DelayPattern.musicgen(args.codebooks).delays
    adapter = ModuleAdapter(module, args.codebooks, args.vocab, args.vocab, null_condition=0, delays=delays)
    return adapter.to(device).eval()


def floor_runner(
    adapter: ModuleAdapter, cond: torch.Tensor, frames: int, guided: bool, device: torch.device
) -> Callable[[], None]:
    """The module's bare ``step`` loop over the input stream of pre-sampled tokens."""
    config = SamplingConfig(guidance_scale=GUIDANCE if guided else 1.0)
    steps = sample(adapter, cond, frames, config, seed=0)
    if guided:
        steps, cond = torch.cat([steps, steps]), torch.cat([cond, adapter.null_condition(cond)])
    inputs = torch.cat([torch.full_like(steps[:, :, :1], adapter.bos_id), steps[:, :, :-1]], dim=2)
    columns = [inputs[:, :, s : s + 1] for s in range(inputs.shape[2])]
    step = adapter.module.step

    @torch.no_grad()
    def run() -> None:
        state = None
        for tokens in columns:
            _, state = step(tokens, state, cond)
        synchronize(device)

    return run


def sampler_runner(
    adapter: ModuleAdapter, cond: torch.Tensor, frames: int, guided: bool, device: torch.device, cache: bool
) -> Callable[[], None]:
    config = SamplingConfig(guidance_scale=GUIDANCE if guided else 1.0)
    seeds = iter(range(1, 10**9))

    def run() -> None:
        sample(adapter, cond, frames, config, seed=next(seeds), decoding=DecodeConfig(use_cache=cache))
        synchronize(device)

    return run


def same_tokens(adapter: ModuleAdapter, cond: torch.Tensor, frames: int) -> dict[str, bool]:
    """Incremental and recompute sampling draw the same tokens for one seed (plain and CFG)."""
    out = {}
    for guided, key in ((False, "same_tokens_plain"), (True, "same_tokens_cfg")):
        config = SamplingConfig(guidance_scale=GUIDANCE if guided else 1.0)
        a = sample(adapter, cond, frames, config, seed=11)
        b = sample(adapter, cond, frames, config, seed=11, decoding=DecodeConfig(use_cache=False))
        out[key] = bool(torch.equal(a, b))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_args(parser)
    parser.add_argument("--frames", type=int, nargs="+", default=[128, 256, 1024])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--codebooks", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recompute-max", type=int, default=128, help="longest length timed with recompute")
    parser.add_argument("--check-frames", type=int, default=32, help="length of the same-tokens check")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/adapter_rollout.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    provenance = git_state()  # before the run: the code that runs, not what is committed meanwhile
    device = resolve_device(args.device)
    set_threads(args.threads)
    machine = describe_machine(device)
    adapter = build_adapter(args, device)
    cond = torch.arange(args.batch, device=device) % 4 + 1  # condition ids 1..4 (0 is the null prompt)
    checks = same_tokens(adapter, cond, args.check_frames)
    print(f"incremental vs recompute, same seeded tokens: {checks}", flush=True)
    records, summary = [], {}
    for frames in args.frames:
        runners = {
            "floor": floor_runner(adapter, cond, frames, False, device),
            "sampler": sampler_runner(adapter, cond, frames, False, device, cache=True),
            "floor_cfg": floor_runner(adapter, cond, frames, True, device),
            "sampler_cfg": sampler_runner(adapter, cond, frames, True, device, cache=True),
        }
        if frames <= args.recompute_max:
            runners["recompute"] = sampler_runner(adapter, cond, frames, False, device, cache=False)
        times = interleaved(runners, args.rounds, label=f"T={frames} ")
        tokens = args.batch * args.codebooks * frames
        for row in summary_rows(times, tokens):
            records.append({"frames": frames, **row})
        entry = {}
        pairs = [
            ("sampler_over_floor", "sampler", "floor"),
            ("sampler_over_floor_cfg", "sampler_cfg", "floor_cfg"),
        ]
        if "recompute" in times:
            pairs.append(("recompute_over_incremental", "recompute", "sampler"))
        for key, a, b in pairs:
            entry[key], entry[f"{key}_best"] = paired_ratio(times, a, b), best_ratio(times, a, b)
        summary[str(frames)] = entry
    result = {
        "benchmark": "adapter_rollout",
        "command": "python benchmarks/adapter_rollout.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "model": "tests/helpers/gru_lm.py RecurrentGRU (GRU LM, step carries the hidden state)",
            "params": sum(p.numel() for p in adapter.parameters()),
            "guidance_scale": GUIDANCE,
            "tokens": "batch x codebooks x frames per run",
            "weights": "random init (cost does not depend on the weights)",
            **checks,
            "package_version": lightning_cfgrl.__version__,
        },
        **provenance,
        "machine": machine,
        "machine_after": {"load_average_1_5_15": describe_machine(device).get("load_average_1_5_15")},
        "records": records,
        "summary": summary,
    }
    save_result(result, args.out, markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    c, m = result["config"], result["machine"]
    lines = [
        f"ModuleAdapter rollout, GRU dim {c['dim']} x {c['layers']} layers, K {c['codebooks']}, V {c['vocab']}, "
        f"batch {c['batch']} ({m['device']}, {m['torch_threads']} threads)",
        "",
        "| T | run | median s | tokens/s |",
        "|---:|---|---:|---:|",
    ]
    for r in result["records"]:
        lines.append(f"| {r['frames']} | {r['name']} | {r['median_s']:.3f} | {r['tokens_per_s']:.0f} |")
    lines.append("")
    for frames, s in result["summary"].items():
        text = (
            f"- T={frames}: sampler / floor {s['sampler_over_floor']:.3f}x (plain), "
            f"{s['sampler_over_floor_cfg']:.3f}x (CFG {c['guidance_scale']:g}); best over best "
            f"{s['sampler_over_floor_best']:.3f}x, {s['sampler_over_floor_cfg_best']:.3f}x"
        )
        if "recompute_over_incremental" in s:
            text += f"; recompute / incremental {s['recompute_over_incremental']:.1f}x"
        lines.append(text)
    lines.append(
        f"- same seeded tokens, incremental vs recompute: plain {c['same_tokens_plain']}, CFG {c['same_tokens_cfg']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
