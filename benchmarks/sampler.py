"""Sampler efficiency: ``lightning_cfgrl.sample`` against its floor and against HF ``generate()``.

* **Floor**: the model's own incremental forward calls for the same tokens, timed alone — the bare loop
  ``model(steps[..., :s + 1], cond, cache=cache)`` over a preallocated cache, on tokens sampled
  beforehand. ``overhead = sampler / floor - 1`` is what the sampler adds (CFG mixing, drawing,
  writing tokens); target: at most 10 % at batch 8. Measured without CFG and with CFG (guidance 3, the
  floor then runs the doubled batch ``[cond; null]``).
* **HF**: ``transformers``' ``GPT2LMHeadModel.generate()`` with the same layers / width / heads /
  vocabulary / GELU, the same number of new tokens and batch, KV cache on, plain sampling
  (``do_sample=True, top_k=0, top_p=1, temperature=1``), its default dynamic cache and its static cache.
  The package's model has K = 1 codebook (so one token per step, as GPT-2) and a 3-slot prompt prefix;
  GPT-2 gets a 3-token prompt. Target: the package's sampler at least as fast.

Weights are random (cost does not depend on them). The compared calls run round-robin after a warm-up
round, in the same process with the same threads; the table shows medians and the median of the
per-round ratios. Needs ``pip install transformers`` (the ``bench`` extra) for the HF rows; without it
they are skipped.

* **Baseline** (``--baseline DIR``): the same runs with an older copy of the package, interleaved in the
  same process — ``DIR`` holds a ``lightning_cfgrl/`` folder (e.g. ``git archive <rev> lightning_cfgrl |
  tar -x -C DIR``), imported under another name, its model loaded with the same weights. Reports the
  speed-up of the current tree over it and checks that both sample the same tokens for the same seed.

* **Compiled** (``--compile``): ``sample(..., decoding=DecodeConfig(compile=True))``, the model's static-shape ``decode_step``
  (a preallocated cache attended over its whole length with a mask) traced once by ``torch.compile``,
  plain and CFG. Reports its speed-up over the eager sampler and over the eager floor, the compile time
  (the first call less one run) and the break-even number of sampled tokens (compile time / time saved
  per token), and checks that it samples the eager path's tokens for the same seed.

``--codebooks K`` (default 1) runs the package's model with K codebooks and the delay pattern (then
there are no HF rows: GPT-2 has one token per step).

    python benchmarks/sampler.py [--quick] [--device cpu|cuda] [--threads N] [--new-tokens 256]
        [--codebooks K] [--baseline DIR] [--compile [--compile-mode reduce-overhead]]
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (  # noqa: E402
    add_device_args,
    add_model_shape_args,
    describe_machine,
    resolve_device,
    save_result,
    set_threads,
    synchronize,
)

import lightning_cfgrl  # noqa: E402
from lightning_cfgrl.core.sampling import DecodeConfig, SamplingConfig, sample  # noqa: E402
from lightning_cfgrl.models import AudioTokenTransformer  # noqa: E402

CONDITION_SIZES = (4, 4, 3)  # 3 prompt slots -> a 3-position prefix, matched by a 3-token GPT-2 prompt
GUIDANCE = 3.0


def build_model(
    dim: int,
    layers: int,
    heads: int,
    vocab: int,
    frames: int,
    device: torch.device,
    codebooks: int = 1,
    model_class: Any = AudioTokenTransformer,
) -> AudioTokenTransformer:
    torch.manual_seed(0)
    return (
        model_class(
            num_codebooks=codebooks,
            vocab_size=vocab,
            condition_sizes=CONDITION_SIZES,
            dim=dim,
            num_layers=layers,
            num_heads=heads,
            max_frames=frames,
        )
        .to(device)
        .eval()
    )


def import_baseline(tree: str) -> Any:
    """The ``lightning_cfgrl`` package found in ``tree``, imported as ``lightning_cfgrl_baseline`` (a copy
    with its self-imports renamed, in a temporary folder), so old and new code run in one process."""
    source = Path(tree) / "lightning_cfgrl"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"--baseline {tree}: no lightning_cfgrl/__init__.py there")
    target = Path(tempfile.mkdtemp(prefix="cfgrl_baseline_")) / "lightning_cfgrl_baseline"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(re.sub(r"\blightning_cfgrl\b", "lightning_cfgrl_baseline", path.read_text()))
    sys.path.insert(0, str(target.parent))
    package = importlib.import_module("lightning_cfgrl_baseline")
    for name in ("models", "core.sampling"):
        importlib.import_module(f"lightning_cfgrl_baseline.{name}")
    return package


def floor_runner(
    model: AudioTokenTransformer,
    cond: torch.Tensor,
    frames: int,
    guided: bool,
    device: torch.device,
    sample_fn: Callable[..., torch.Tensor] = sample,
    config_class: Any = SamplingConfig,
) -> Callable[[], None]:
    """The bare loop of incremental forwards on pre-sampled tokens (doubled batch when guided)."""
    config = config_class(guidance_scale=GUIDANCE if guided else 1.0)
    steps = sample_fn(model, cond, frames, config, seed=0)
    if guided:
        steps = torch.cat([steps, steps])
        cond = torch.cat([cond, model.null_condition(cond)])

    @torch.no_grad()
    def run() -> None:
        cache = model.new_cache(steps.shape[0], steps.shape[2])
        for s in range(steps.shape[2]):
            model(steps[..., : s + 1], cond, cache=cache)
        synchronize(device)

    return run


def sampler_runner(
    model: AudioTokenTransformer,
    cond: torch.Tensor,
    frames: int,
    guided: bool,
    device: torch.device,
    sample_fn: Callable[..., torch.Tensor] = sample,
    config_class: Any = SamplingConfig,
    compiled: bool | str = False,
) -> Callable[[], None]:
    config = config_class(guidance_scale=GUIDANCE if guided else 1.0)
    seed = iter(range(1, 10**9))
    extra = {"decoding": DecodeConfig(compile=compiled)} if compiled else {}

    def run() -> None:
        sample_fn(model, cond, frames, config, seed=next(seed), **extra)
        synchronize(device)

    return run


def compile_runners(
    runners: dict[str, Callable[[], None]],
    model: AudioTokenTransformer,
    cond: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Add the compiled sampler (plain and CFG) to ``runners``; time each first call (the trace and
    compile, plus one run) and check it samples the eager path's tokens for the same seed."""
    info: dict[str, Any] = {}
    for guided, suffix in ((False, ""), (True, "_cfg")):
        config = SamplingConfig(guidance_scale=GUIDANCE if guided else 1.0)
        start = time.perf_counter()
        compiled = sample(
            model,
            cond,
            args.new_tokens,
            config,
            seed=5,
            decoding=DecodeConfig(compile=args.compile_mode or True),
        )
        synchronize(device)
        info[f"compile_s{suffix}"] = time.perf_counter() - start
        info[f"same_tokens_compiled{suffix}"] = bool(
            torch.equal(compiled, sample(model, cond, args.new_tokens, config, seed=5))
        )
        print(
            f"compiled{suffix}: first call {info[f'compile_s{suffix}']:.1f} s, same tokens as eager: "
            f"{info[f'same_tokens_compiled{suffix}']}",
            flush=True,
        )
        runners[f"sampler_compiled{suffix}"] = sampler_runner(
            model, cond, args.new_tokens, guided, device, compiled=args.compile_mode or True
        )
    return info


def _import_gpt2() -> tuple[Any, Any, str]:
    """``(GPT2Config, GPT2LMHeadModel, transformers version)``.

    transformers imports torchaudio when it is installed; the CUDA torchaudio that pip pulls beside a
    CPU-only torch cannot load (DESIGN.md section 5). GPT-2 needs no audio, so a torchaudio that fails
    to load is made to look absent (and transformers' cached answer, taken when lightning imported it,
    is cleared). This only runs in the benchmark's own process, for the HF rows.
    """
    try:
        import torchaudio  # noqa: F401
    except Exception:  # OSError (missing CUDA libs), ImportError, RuntimeError
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None  # type: ignore[assignment]
        try:
            from transformers.utils import import_utils

            for name in ("is_torchaudio_available", "_is_package_available"):
                getattr(getattr(import_utils, name, None), "cache_clear", lambda: None)()
        except ImportError:
            pass
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2Config, GPT2LMHeadModel, transformers.__version__


def hf_runner(
    args: argparse.Namespace, device: torch.device, static: bool
) -> tuple[Callable[[], None], int, str]:
    GPT2Config, GPT2LMHeadModel, version = _import_gpt2()  # noqa: N806
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=args.vocab,
        n_positions=len(CONDITION_SIZES) + args.new_tokens,
        n_embd=args.dim,
        n_layer=args.layers,
        n_head=args.heads,
        activation_function="gelu",
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config).to(device).eval()
    prompt = torch.randint(0, args.vocab, (args.batch, len(CONDITION_SIZES)), device=device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        use_cache=True,
        pad_token_id=0,
    )
    if static:
        kwargs["cache_implementation"] = "static"

    @torch.no_grad()
    def run() -> None:
        out = model.generate(prompt, **kwargs)
        if out.shape[1] != len(CONDITION_SIZES) + args.new_tokens:
            raise RuntimeError(
                f"HF generate returned {out.shape[1]} positions, expected {len(CONDITION_SIZES) + args.new_tokens}"
            )
        synchronize(device)

    params = sum(p.numel() for p in model.parameters())
    return run, params, version


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_args(p)
    add_model_shape_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--quick", action="store_true", help="64 new tokens, 3 rounds (about 30 s on 2 CPU cores)")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers comparison")
    p.add_argument(
        "--codebooks", type=int, default=1, help="K codebooks of the package's model (HF rows need 1)"
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="folder holding an older lightning_cfgrl/ to time against, interleaved (see the docstring)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time sample(..., decoding=DecodeConfig(compile=True)) (static-shape decode step, torch.compile), plain and CFG",
    )
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode for --compile (e.g. reduce-overhead: CUDA graphs on CUDA)",
    )
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "sampler.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = min(args.new_tokens, 64), min(args.repeats, 3)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    machine = describe_machine(device)
    print(f"machine: {machine}", flush=True)

    size = (args.dim, args.layers, args.heads, args.vocab, args.new_tokens, device, args.codebooks)
    model = build_model(*size)
    cond = torch.randint(1, 4, (args.batch, len(CONDITION_SIZES)), device=device)
    runners: dict[str, Callable[[], None]] = {
        "floor": floor_runner(model, cond, args.new_tokens, False, device),
        "sampler": sampler_runner(model, cond, args.new_tokens, False, device),
        "floor_cfg": floor_runner(model, cond, args.new_tokens, True, device),
        "sampler_cfg": sampler_runner(model, cond, args.new_tokens, True, device),
    }
    compile_info = compile_runners(runners, model, cond, args, device) if args.compile else {}
    baseline_info: dict = {}
    if args.baseline:
        old = import_baseline(args.baseline)
        old_model = build_model(*size, model_class=old.models.AudioTokenTransformer)
        old_model.load_state_dict(model.state_dict())  # the same weights, whatever the init did
        old_kw = dict(sample_fn=old.core.sampling.sample, config_class=old.core.sampling.SamplingConfig)
        same = {}
        for guided in (False, True):
            new_steps = sample(
                model,
                cond,
                args.new_tokens,
                SamplingConfig(guidance_scale=GUIDANCE if guided else 1.0),
                seed=5,
            )
            old_cfg = old.core.sampling.SamplingConfig(guidance_scale=GUIDANCE if guided else 1.0)
            old_steps = old.core.sampling.sample(old_model, cond, args.new_tokens, old_cfg, seed=5)
            same["cfg" if guided else "plain"] = bool(torch.equal(new_steps, old_steps))
        print(f"baseline {args.baseline}: same tokens for the same seed: {same}", flush=True)
        baseline_info = {"baseline_tree": str(Path(args.baseline).resolve()), "baseline_same_tokens": same}
        runners["baseline_floor"] = floor_runner(old_model, cond, args.new_tokens, False, device, **old_kw)
        runners["baseline_sampler"] = sampler_runner(
            old_model, cond, args.new_tokens, False, device, **old_kw
        )
        runners["baseline_floor_cfg"] = floor_runner(old_model, cond, args.new_tokens, True, device, **old_kw)
        runners["baseline_sampler_cfg"] = sampler_runner(
            old_model, cond, args.new_tokens, True, device, **old_kw
        )
    hf_info: dict = {}
    if args.codebooks != 1 and not args.no_hf:
        print("skipping the HF comparison: GPT-2 has one token per step (--codebooks 1)", flush=True)
    elif not args.no_hf:
        try:
            runners["hf_generate"], hf_params, hf_version = hf_runner(args, device, static=False)
            runners["hf_generate_static"], _, _ = hf_runner(args, device, static=True)
            hf_info = {"transformers_version": hf_version, "hf_params": hf_params}
        except ImportError as err:
            print(f"skipping the HF comparison: {err} (pip install transformers)", flush=True)

    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    if args.baseline:  # each run right beside its baseline, so a paired ratio sees the same machine load
        order = [
            n
            for name in order
            if not name.startswith("baseline_")
            for n in (name, f"baseline_{name}")
            if n in runners
        ]
        order += [name for name in runners if name not in order]
    for rnd in range(args.repeats + 1):  # round 0 is the warm-up
        # odd rounds run in reverse order (ABBA), so a drifting load favours neither side of a pair
        for name in order if rnd % 2 == 0 else order[::-1]:
            run = runners[name]
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            if rnd > 0:
                times[name].append(seconds)
            print(f"round {rnd}{' (warm-up)' if rnd == 0 else ''} {name}: {seconds:.3f} s", flush=True)

    def med(name: str) -> float:
        return statistics.median(times[name])

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    tokens = args.batch * args.new_tokens
    rows = []
    for name in runners:
        rows.append(
            {
                "name": name,
                "median_s": med(name),
                "min_s": min(times[name]),
                "max_s": max(times[name]),
                "tokens_per_s": tokens / med(name),
                "ms_per_step": 1e3 * med(name) / args.new_tokens,
                "times_s": times[name],
            }
        )
    summary = {
        "overhead_vs_floor": paired("sampler", "floor") - 1,
        "overhead_vs_floor_cfg": paired("sampler_cfg", "floor_cfg") - 1,
    }
    if "baseline_sampler" in runners:
        for name in ("floor", "sampler", "floor_cfg", "sampler_cfg"):
            summary[f"speedup_{name}_vs_baseline"] = paired(f"baseline_{name}", name)
            # best times: the least disturbed run of each (on a shared machine, steadier than medians)
            summary[f"speedup_{name}_vs_baseline_best"] = min(times[f"baseline_{name}"]) / min(times[name])
    if compile_info:
        for suffix in ("", "_cfg"):
            eager, compiled = f"sampler{suffix}", f"sampler_compiled{suffix}"
            summary[f"compiled_speedup_vs_sampler{suffix}"] = paired(eager, compiled)
            summary[f"compiled_speedup_vs_floor{suffix}"] = paired(f"floor{suffix}", compiled)
            saved = (med(eager) - med(compiled)) / tokens  # seconds saved per sampled token
            compile_s = compile_info[f"compile_s{suffix}"] - med(compiled)  # the first call, less one run
            summary[f"compile_s{suffix}"] = compile_s
            summary[f"break_even_tokens{suffix}"] = compile_s / saved if saved > 0 else None
    if "hf_generate" in runners:
        summary["sampler_speedup_vs_hf"] = paired("hf_generate", "sampler")
        summary["sampler_speedup_vs_hf_static"] = paired("hf_generate_static", "sampler")
    result = {
        "benchmark": "sampler",
        "command": "python benchmarks/sampler.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {
            "dim": args.dim,
            "layers": args.layers,
            "heads": args.heads,
            "vocab": args.vocab,
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "codebooks": args.codebooks,
            "repeats": args.repeats,
            "compile_mode": args.compile_mode,
            "guidance_scale": GUIDANCE,
            "package_params": sum(p.numel() for p in model.parameters()),
            **hf_info,
            **baseline_info,
            **{k: v for k, v in compile_info.items() if k.startswith("same_tokens")},
            "weights": "random init (cost does not depend on the weights)",
            "package_version": lightning_cfgrl.__version__,
        },
        "machine": machine,
        "machine_after": {"load_average_1_5_15": describe_machine(device).get("load_average_1_5_15")},
        "records": rows,
        "summary": summary,
    }
    save_result(result, args.out, markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    c = result["config"]
    lines = [
        f"Sampler, batch {c['batch']}, {c['new_tokens']} new tokens, dim {c['dim']}, {c['layers']} layers, "
        f"{c['heads']} heads, V {c['vocab']}, K {c['codebooks']} ({result['machine']['device']}, {result['machine']['torch_threads']} threads)",
        "",
        "| run | median s | ms / step | tokens/s |",
        "|---|---:|---:|---:|",
    ]
    for r in result["records"]:
        lines.append(
            f"| {r['name']} | {r['median_s']:.3f} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:.0f} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"- sampler overhead over its floor: {100 * s['overhead_vs_floor']:+.1f} % (plain), "
        f"{100 * s['overhead_vs_floor_cfg']:+.1f} % (CFG, guidance {c['guidance_scale']:g})",
    ]
    if "speedup_sampler_vs_baseline" in s:
        lines.append(
            f"- speed-up over the baseline tree (baseline time / this tree's time, median of paired rounds): "
            f"floor {s['speedup_floor_vs_baseline']:.3f}x, sampler {s['speedup_sampler_vs_baseline']:.3f}x, "
            f"floor CFG {s['speedup_floor_cfg_vs_baseline']:.3f}x, sampler CFG {s['speedup_sampler_cfg_vs_baseline']:.3f}x; "
            f"same tokens: {c['baseline_same_tokens']}"
        )
        lines.append(
            f"- best time over best time: floor {s['speedup_floor_vs_baseline_best']:.3f}x, sampler "
            f"{s['speedup_sampler_vs_baseline_best']:.3f}x, floor CFG {s['speedup_floor_cfg_vs_baseline_best']:.3f}x, "
            f"sampler CFG {s['speedup_sampler_cfg_vs_baseline_best']:.3f}x"
        )
    if "compiled_speedup_vs_sampler" in s:
        for suffix, label in (("", "plain"), ("_cfg", "CFG")):
            even = s[f"break_even_tokens{suffix}"]
            lines.append(
                f"- compiled ({label}): {s[f'compiled_speedup_vs_sampler{suffix}']:.3f}x the eager sampler, "
                f"{s[f'compiled_speedup_vs_floor{suffix}']:.3f}x its floor; compile {s[f'compile_s{suffix}']:.1f} s, "
                f"break-even {f'{even:,.0f} sampled tokens' if even else 'never (not faster)'}; same tokens as "
                f"eager: {c[f'same_tokens_compiled{suffix}']}"
            )
    if "sampler_speedup_vs_hf" in s:
        lines.append(
            f"- HF generate time / sampler time: {s['sampler_speedup_vs_hf']:.2f}x (dynamic cache), "
            f"{s['sampler_speedup_vs_hf_static']:.2f}x (static cache)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
