"""Cost of one on-policy training step, phase by phase, and its peak memory against plain fine-tuning.

The phases of ``CFGRLModule.training_step`` are timed by calling the pieces directly (nothing in the
package is instrumented), after a warm-up step, as medians over repeats:

1. ``rollout``: ``module.rollout`` — the student samples G sequences per prompt (no grad, KV cache);
2. ``student_forward``: the generator's forward with grad on the rollout;
3. ``teacher``: ``CFGDistillCallback.teacher_logits`` — the frozen base, cond + null in one batched pass;
4. ``embedder``: ``DiversityRewardCallback.rewards`` — frozen embedder + pairwise rewards (a randomly
   initialised ``ContrastiveTokenEmbedder``), skipped when the callback is not available;
5. ``loss_backward``: reverse KL (as ``CFGDistillCallback.loss_terms``) plus the diversity surrogate,
   then ``backward()``;
6. ``optimizer``: ``AdamW.step()`` and ``zero_grad()``.

The first step of each configuration is its warm-up and the one whose peak memory is read (AdamW's
state is allocated before it). Trained tokens/s counts generated codebook tokens (``N * K * T``, N = prompts x G) per second of the
whole step. Peak memory (CPU: peak RSS; CUDA: ``max_memory_allocated``) is read over one step, net of
the memory before it (model, teacher, optimizer state already there), and compared with a plain
fine-tuning step of the same model on the same number of tokens (teacher-forced cross-entropy,
backward, AdamW). Each configuration runs in its own subprocess. Weights are random (cost does not
depend on them).

Three sweeps: the example config (``examples/configs/distill.yaml``: dim 64, 2 layers, K 2, V 32,
32 frames, 8 prompts x G 2); sequence length (256, 512, 1024 frames, example model); model size
(S = the example model, M = dim 256 / 4 layers / K 4 / V 1024, L = dim 512 / 6 layers / K 4 / V 1024,
at 64 frames).

    python benchmarks/train_step.py [--quick] [--full] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "examples" / "configs" / "distill.yaml"
FALLBACK_EXAMPLE = dict(
    generator=dict(
        num_codebooks=2, vocab_size=32, condition_sizes=[4, 4, 3], dim=64, num_layers=2, num_heads=4
    ),
    num_frames=32,
    prompts=8,
    group_size=2,
    learning_rate=3e-4,
    guidance_scale=3.0,
)
SIZES = {
    "M": dict(num_codebooks=4, vocab_size=1024, dim=256, num_layers=4, num_heads=4),
    "L": dict(num_codebooks=4, vocab_size=1024, dim=512, num_layers=6, num_heads=8),
}
T = TypeVar("T")
PHASES = ("rollout", "student_forward", "teacher", "embedder", "loss_backward", "optimizer")


def example_config() -> dict:
    """The example's generator, frames, prompts per batch, G, learning rate and guidance (from its YAML)."""
    try:
        import yaml

        from lightning_cfgrl.training.configs import build_group

        cfg = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        model = cfg["model"]["init_args"]
        distill = next(
            cb.get("init_args", {})
            for cb in cfg["trainer"]["callbacks"]
            if cb["class_path"].endswith("CFGDistillCallback")
        )
        generator = {k: v for k, v in model["generator"]["init_args"].items() if k != "max_frames"}
        # the config states what differs from the recipe; the defaults fill in the rest
        rollout = build_group("rollout", model.get("rollout"))
        optimization = build_group("optimization", model.get("optimization"))
        return dict(
            generator=generator,
            num_frames=rollout.num_frames,
            prompts=cfg["data"]["init_args"]["batch_size"],
            group_size=rollout.num_samples_per_prompt,
            learning_rate=optimization.learning_rate,
            guidance_scale=distill.get("guidance_scale", 3.0),
        )
    except (OSError, KeyError, StopIteration, ImportError) as err:
        print(
            f"could not read {EXAMPLE_CONFIG} ({err!r}); using the values it had when this was written",
            flush=True,
        )
        return dict(FALLBACK_EXAMPLE)


def _timed(device: torch.device, fn: Callable[[], T]) -> tuple[T, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def run_config(spec: dict) -> dict:
    """One configuration (``kind`` = "distill" or "finetune") in this process: phase times and peak memory."""
    import warnings

    from lightning_cfgrl import CFGDistillCallback, CFGRLModule
    from lightning_cfgrl.core.condition import repeat_condition
    from lightning_cfgrl.core.divergences import token_divergence
    from lightning_cfgrl.models import AudioTokenTransformer
    from lightning_cfgrl.training.rollout import RolloutBatch

    warnings.filterwarnings("ignore")
    device = torch.device(spec["device"])
    set_threads(spec["threads"])
    torch.manual_seed(0)
    frames, prompts, group = spec["num_frames"], spec["prompts"], spec["group_size"]
    generator = AudioTokenTransformer(**spec["generator"], max_frames=frames)
    # a constant learning rate: the phases are timed without a Trainer, which the schedule needs
    module = CFGRLModule(
        generator,
        rollout={"num_frames": frames, "num_samples_per_prompt": group},
        optimization={"learning_rate": spec["learning_rate"], "lr_warmup_steps": 0, "lr_decay": "constant"},
    )
    module.to(device).train()
    optimizer = module.configure_optimizers()
    k, vocab = generator.num_codebooks, generator.vocab_size
    sizes = generator.condition_sizes
    condition = torch.stack([torch.randint(1, n + 1, (prompts,)) for n in sizes], dim=1).to(device)
    repeated = repeat_condition(condition, group)
    num_steps = generator.pattern.num_steps(frames)
    mask = generator.pattern.valid_mask(num_steps, device).expand(prompts * group, k, num_steps)

    distill = diversity = None
    notes: list[str] = []
    if spec["kind"] == "distill":
        distill = CFGDistillCallback(guidance_scale=spec["guidance_scale"])
        distill.setup(None, module, "fit")  # type: ignore[arg-type]  # setup only copies the generator
        distill.teacher.to(device)
        diversity, note = _diversity_callback(k, vocab, device)
        if note:
            notes.append(note)

    def distill_step(seed: int) -> dict[str, float]:
        times: dict[str, float] = {}
        steps, times["rollout"] = _timed(
            device, lambda: module.rollout(condition, group, module.rollout_sampling, seed)
        )
        logits, times["student_forward"] = _timed(device, lambda: module.generator(steps, repeated))
        batch = RolloutBatch(steps, repeated, mask, group, logits, module.rollout_sampling)
        teacher, times["teacher"] = _timed(device, lambda: distill.teacher_logits(batch))
        advantages = None
        if diversity is not None:
            (_, rewards), times["embedder"] = _timed(device, lambda: diversity.rewards(module, batch))
            advantages = (rewards - rewards.mean()).flatten()

        def loss_backward() -> None:
            per_token = token_divergence(batch.student_logits, teacher, distill.divergence)
            loss = torch.where(batch.mask, per_token, torch.zeros_like(per_token)).sum(dim=(1, 2)).mean()
            if advantages is not None:
                from lightning_cfgrl.core.diversity import diversity_surrogate

                loss = loss - diversity.beta * diversity_surrogate(advantages, batch.sequence_logprobs)
            loss.backward()

        _, times["loss_backward"] = _timed(device, loss_backward)
        _, times["optimizer"] = _timed(device, optimizer_step)
        return times

    def finetune_step(seed: int) -> dict[str, float]:
        times: dict[str, float] = {}
        g = torch.Generator().manual_seed(seed)
        frames_t = torch.randint(0, vocab, (prompts * group, k, frames), generator=g)
        steps = generator.pattern.frames_to_steps(frames_t, vocab).to(device)
        logits, times["student_forward"] = _timed(device, lambda: module.generator(steps, repeated))

        def loss_backward() -> None:
            loss = torch.nn.functional.cross_entropy(logits[mask].float(), steps[mask])
            loss.backward()

        _, times["loss_backward"] = _timed(device, loss_backward)
        _, times["optimizer"] = _timed(device, optimizer_step)
        return times

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step = distill_step if spec["kind"] == "distill" else finetune_step
    # AdamW's state exists before the measured step (a step on zero grads leaves the weights as they are)
    for p in module.generator.parameters():
        p.grad = torch.zeros_like(p)
    optimizer_step()
    # memory: the first step in this fresh process, so no freed-and-kept heap of an earlier step hides
    # its allocations from the RSS; it is also the warm-up of the timed steps
    with PeakMemory(device) as mem:
        step(10_000)
    peak, method = mem.mb, mem.method
    runs = [step(r) for r in range(spec["repeats"])]
    phases = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    step_s = statistics.median(sum(run.values()) for run in runs)
    tokens = int(mask.sum())
    return {
        "kind": spec["kind"],
        "sweep": spec["sweep"],
        "size": spec["size"],
        "num_frames": frames,
        "sequences": prompts * group,
        "trained_tokens": tokens,
        "step_s": step_s,
        "phases_s": phases,
        "phase_fraction": {name: t / sum(phases.values()) for name, t in phases.items()},
        "trained_tokens_per_s": tokens / step_s,
        "peak_mem_mb": peak,
        "peak_mem_method": method,
        "params": sum(p.numel() for p in generator.parameters()),
        "generator": spec["generator"],
        "repeats": spec["repeats"],
        "step_times_s": [sum(run.values()) for run in runs],
        "notes": notes,
    }


def _diversity_callback(k: int, vocab: int, device: torch.device) -> tuple[Any, str]:
    """A DiversityRewardCallback with a random ContrastiveTokenEmbedder, or (None, why not)."""
    try:
        try:
            from lightning_cfgrl import DiversityRewardCallback
        except ImportError:
            from lightning_cfgrl.training.diversity import DiversityRewardCallback
        from lightning_cfgrl.embedders import ContrastiveTokenEmbedder

        try:  # the gradient settings are a group since DiversityGradientConfig
            from lightning_cfgrl import DiversityGradientConfig

            settings: dict = {"gradient": DiversityGradientConfig(baseline="none")}
        except ImportError:
            settings = {"baseline": "none"}
        callback = DiversityRewardCallback(
            ContrastiveTokenEmbedder(num_codebooks=k, vocab_size=vocab), beta=15.0, **settings
        )
        callback.embedder.to(device)
        return callback, ""
    except Exception as err:  # the callback may not exist yet, or have another signature
        return None, f"embedder phase skipped: {type(err).__name__}: {err}"


def run_in_subprocess(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"configuration {spec['sweep']}/{spec['size']}/{spec['num_frames']} failed:\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan(args: argparse.Namespace, example: dict) -> list[dict]:
    """The configurations of the three sweeps (each run as "distill" and as "finetune")."""
    base = dict(
        prompts=example["prompts"],
        group_size=example["group_size"],
        learning_rate=example["learning_rate"],
        guidance_scale=example["guidance_scale"],
        repeats=args.repeats,
    )
    configs = [
        dict(
            base, sweep="example", size="S", generator=example["generator"], num_frames=example["num_frames"]
        )
    ]
    for frames in args.lengths:
        configs.append(
            dict(
                base,
                sweep="length",
                size=args.length_size,
                num_frames=frames,
                generator=example["generator"] if args.length_size == "S" else SIZES[args.length_size],
            )
        )
    for size in args.sizes:
        generator = (
            example["generator"]
            if size == "S"
            else {**SIZES[size], "condition_sizes": example["generator"]["condition_sizes"]}
        )
        configs.append(dict(base, sweep="size", size=size, num_frames=args.size_frames, generator=generator))
    for c in configs:
        c["generator"] = {**c["generator"], "condition_sizes": list(example["generator"]["condition_sizes"])}
    return configs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_args(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="lengths 64/128, sizes S/M, 1 repeat")
    size.add_argument("--full", action="store_true", help="length sweep on the M model, 3 repeats")
    p.add_argument(
        "--lengths", type=int, nargs="+", default=None, help="frames of the length sweep (256 512 1024)"
    )
    p.add_argument(
        "--length-size", choices=["S", "M", "L"], default=None, help="model of the length sweep (S)"
    )
    p.add_argument(
        "--sizes", nargs="+", choices=["S", "M", "L"], default=None, help="models of the size sweep"
    )
    p.add_argument("--size-frames", type=int, default=None, help="frames of the size sweep (64)")
    p.add_argument("--prompts", type=int, default=None, help="override the example's prompts per batch")
    p.add_argument("--repeats", type=int, default=None, help="timed steps after the warm-up step (default 3)")
    p.add_argument("--in-process", action="store_true", help="no subprocess per configuration (smoke tests)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_step.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = "quick" if args.quick else "full" if args.full else "default"
    defaults = {
        "quick": dict(lengths=[64, 128], length_size="S", sizes=["S", "M"], size_frames=32, repeats=1),
        "default": dict(
            lengths=[256, 512, 1024], length_size="S", sizes=["S", "M", "L"], size_frames=64, repeats=3
        ),
        "full": dict(
            lengths=[256, 512, 1024], length_size="M", sizes=["S", "M", "L"], size_frames=256, repeats=3
        ),
    }[preset]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.preset = preset
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_config(json.loads(args.child))))
        return {}
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    machine = describe_machine(device)
    print(f"machine: {machine}", flush=True)
    example = example_config()
    if args.prompts is not None:
        example["prompts"] = args.prompts
    records = []
    begin = time.perf_counter()
    for config in plan(args, example):
        for kind in ("distill", "finetune"):
            spec = dict(config, kind=kind, device=str(device), threads=threads)
            record = run_config(spec) if args.in_process else run_in_subprocess(spec)
            records.append(record)
            phases = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in record["phases_s"].items())
            print(
                f"[{time.perf_counter() - begin:6.0f} s] {record['sweep']:7s} {record['size']} {record['num_frames']:5d} frames "
                f"{kind:8s}: step {record['step_s']:.2f} s ({phases} ms), peak {record['peak_mem_mb']:.0f} MB"
                + (f"; {'; '.join(record['notes'])}" if record["notes"] else ""),
                flush=True,
            )
    argv_used = sys.argv[1:] if argv is None else argv
    result = {
        "benchmark": "train_step",
        "command": "python benchmarks/train_step.py " + " ".join(argv_used),
        "preset": args.preset,
        "example": example,
        "machine": machine,
        "machine_after": {"load_average_1_5_15": describe_machine(device).get("load_average_1_5_15")},
        "wall_s": time.perf_counter() - begin,
        "weights": "random init (cost does not depend on the weights)",
        "records": records,
    }
    save_result(result, args.out, markdown_tables(result))
    return result


def markdown_tables(result: dict) -> str:
    m = result["machine"]
    distill = [r for r in result["records"] if r["kind"] == "distill"]
    lines = [
        f"Training step ({m['device']}, {m['torch_threads']} threads); times in ms, medians",
        "",
        "| sweep | model | params | frames | seqs | " + " | ".join(PHASES) + " | step | trained tokens/s |",
        "|---|---|---:|---:|---:|" + "---:|" * (len(PHASES) + 2),
    ]
    for r in distill:
        cells = [
            f"{1e3 * r['phases_s'][p]:.0f} ({100 * r['phase_fraction'][p]:.0f} %)"
            if p in r["phases_s"]
            else "skipped"
            for p in PHASES
        ]
        lines.append(
            f"| {r['sweep']} | {r['size']} | {r['params'] / 1e6:.2f} M | {r['num_frames']} | {r['sequences']} | "
            + " | ".join(cells)
            + f" | {1e3 * r['step_s']:.0f} | {r['trained_tokens_per_s']:.0f} |"
        )
    lines += [
        "",
        "Peak memory of one step (MB, net of model/teacher/optimizer state) and step time against plain "
        "fine-tuning (teacher-forced cross-entropy on the same tokens)",
        "",
        "| sweep | model | frames | distill MB | fine-tune MB | memory ratio | distill step s | fine-tune step s | time ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in distill:
        f = next(
            x
            for x in result["records"]
            if x["kind"] == "finetune"
            and (x["sweep"], x["size"], x["num_frames"]) == (r["sweep"], r["size"], r["num_frames"])
        )
        lines.append(
            f"| {r['sweep']} | {r['size']} | {r['num_frames']} | {r['peak_mem_mb']:.0f} | {f['peak_mem_mb']:.0f} | "
            f"{_ratio(r['peak_mem_mb'], f['peak_mem_mb'])} | {r['step_s']:.2f} | {f['step_s']:.2f} | "
            f"{r['step_s'] / f['step_s']:.1f}x |"
        )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b >= 1 else "n/a (< 1 MB)"


if __name__ == "__main__":
    main()
