"""Everything that matters for speed and memory, in one command on one GPU (about 8 minutes on an H100).

Sections (each runs one of the benchmark scripts of this folder with sizes for the device, and records
its result, or ``skipped`` with the reason, or ``failed`` with the error; the suite goes on either way):

* ``cfg_vs_distilled``: ``inference_cost.py``, CFG (guidance 3, doubled batch) vs the distilled model of
  the same size at MusicGen-small's decoder shape (dim 1024, 24 layers, 16 heads, K 4, V 2048), batch
  1, 8, 32: tokens/s, latency, peak memory, and the model's own ``floor(2B) / floor(B)``.
* ``sampler_vs_floor_vs_hf``: ``sampler.py``, the sampler over its floor and vs HF ``generate()`` on an
  equal GPT-2 (same width, depth, heads, vocabulary).
* ``musicgen_vs_hf``: ``musicgen_rollout.py``, the package's MusicGen rollout vs
  ``MusicgenForConditionalGeneration.generate()`` and the decoder's forward floor (musicgen-small shape),
  plus the chi-square check of equal token distributions.
* ``adapter_rollout``: ``adapter_rollout.py``, one's own (recurrent) model through ``ModuleAdapter``:
  incremental vs its floor and vs recompute.
* ``compiled_decode``: ``sampler.py --compile --compile-mode reduce-overhead``: the static-shape decode
  step compiled with CUDA graphs (KV cache buffers as static addresses). CUDA only.
* ``vs_trl``: ``vs_trl.py`` (in a subprocess), on-policy distillation vs TRL's GKD; skipped when TRL
  is not installed.
* ``lora_memory``: ``musicgen_memory.py``, a MusicGen-small CFG-distillation step with a full-copy
  teacher vs a LoRA student (with and without gradient checkpointing): peak memory, step time.
* ``fsdp_smoke``: a few training steps of ``CFGRLModule`` + distillation + diversity reward under
  Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard``) on one device, in a subprocess.

``--tiny`` runs every section at tiny sizes on the CPU (CI: under 2 minutes), skipping the CUDA-only
ones with the reason. Sections still to run when ``--budget-s`` is spent are skipped, saying so. One
JSON with the machine, the commit and every section's result (the scripts' own JSON, embedded).

    python benchmarks/gpu_suite.py                  # on CUDA: writes benchmarks/results/gpu_suite.json
    python benchmarks/gpu_suite.py --tiny --out /tmp/suite.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from machine import describe_machine, git_state, resolve_device, set_threads  # noqa: E402

# MusicGen-small's decoder shape, for the package's own transformer and the GPT-2 it is compared with
SMALL = dict(dim=1024, layers=24, heads=16, codebooks=4, vocab=2048)
TINY = dict(dim=16, layers=1, heads=2, codebooks=2, vocab=8)


class Skip(Exception):
    """A section that cannot run here, with the reason."""


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shape_args(shape: dict, codebooks: bool = True) -> list[str]:
    keys = ("dim", "layers", "heads", "vocab") + (("codebooks",) if codebooks else ())
    return [item for key in keys for item in (f"--{key}", str(shape[key]))]


class Suite:
    """The sections, sized for ``--tiny`` (CPU) or for the GPU; each returns the script's result dict."""

    def __init__(self, args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
        self.args, self.device, self.tmp, self.tiny = args, device, tmp, args.tiny
        self.common = ["--device", str(device)] + (["--threads", str(args.threads)] if args.threads else [])

    def out(self, name: str) -> list[str]:
        return ["--out", str(self.tmp / f"{name}.json")]

    def cfg_vs_distilled(self) -> dict:
        sizes = (
            shape_args(TINY) + ["--batches", "1", "2", "--new-tokens", "4", "--repeats", "1", "--in-process"]
            if self.tiny
            else shape_args(SMALL) + ["--batches", "1", "8", "32", "--new-tokens", "256", "--repeats", "1"]
        )
        return load("inference_cost").main(self.common + sizes + self.out("inference_cost"))

    def sampler_vs_floor_vs_hf(self) -> dict:
        sizes = (
            shape_args(TINY, codebooks=False) + ["--batch", "2", "--new-tokens", "4", "--repeats", "1"]
            if self.tiny
            else shape_args(SMALL, codebooks=False)
            + ["--batch", "8", "--new-tokens", "256", "--repeats", "3"]
        )
        return load("sampler").main(self.common + sizes + self.out("sampler"))

    def musicgen_vs_hf(self) -> dict:
        sizes = (
            ["--shapes", "tiny", "--frames", "4", "--batch", "2", "--rounds", "1", "--draws", "200"]
            if self.tiny
            else ["--shapes", "small", "--frames", "256", "--batch", "4", "--rounds", "2"]
        )
        return load("musicgen_rollout").main(self.common + sizes + self.out("musicgen_rollout"))

    def adapter_rollout(self) -> dict:
        sizes = (
            [
                "--frames",
                "8",
                "--batch",
                "2",
                "--dim",
                "16",
                "--layers",
                "1",
                "--codebooks",
                "2",
                "--vocab",
                "8",
            ]
            + ["--rounds", "1", "--recompute-max", "8", "--check-frames", "4"]
            if self.tiny
            else [
                "--frames",
                "256",
                "1024",
                "--batch",
                "8",
                "--dim",
                "1024",
                "--layers",
                "2",
                "--rounds",
                "2",
            ]
            + ["--recompute-max", "256"]
        )
        return load("adapter_rollout").main(self.common + sizes + self.out("adapter_rollout"))

    def compiled_decode(self) -> dict:
        if self.device.type != "cuda":
            raise Skip("CUDA graphs (torch.compile mode='reduce-overhead') need a CUDA device")
        sizes = shape_args(SMALL, codebooks=False) + ["--batch", "8", "--new-tokens", "256", "--repeats", "2"]
        flags = ["--no-hf", "--compile", "--compile-mode", "reduce-overhead"]
        return load("sampler").main(self.common + sizes + flags + self.out("sampler_compiled"))

    def vs_trl(self) -> dict:
        if importlib.util.find_spec("trl") is None:
            raise Skip("trl is not installed (pip install -e '.[benchmark]')")
        sizes = (
            shape_args(TINY, codebooks=False)[:6]
            + ["--vocab", "16", "--batch", "2", "--prompt", "2"]
            + ["--completion", "4", "--steps", "2", "--rounds", "1"]
            if self.tiny
            else ["--dim", "1024", "--layers", "24", "--heads", "16", "--vocab", "2048", "--batch", "16"]
            + ["--completion", "256", "--steps", "3", "--rounds", "2"]
        )
        # a subprocess: importing TRL may hide a torchaudio that cannot load (sys.modules)
        command = [
            sys.executable,
            str(HERE / "vs_trl.py"),
            *self.common,
            *sizes,
            "--tmp",
            str(self.tmp / "trl"),
        ]
        return self.subprocess(command + self.out("vs_trl"), "vs_trl")

    def lora_memory(self) -> dict:
        if importlib.util.find_spec("peft") is None:
            raise Skip("peft is not installed (pip install -e '.[lora]')")
        sizes = (
            [
                "--hidden",
                "32",
                "--layers",
                "1",
                "--heads",
                "2",
                "--ffn",
                "64",
                "--vocab",
                "64",
                "--steps",
                "2",
            ]
            + ["--frames", "3", "--prompts", "1", "--in-process"]
            if self.tiny
            else ["--steps", "3", "--frames", "256", "--prompts", "4", "--real-encoders"]
        )
        configs = ["--configs", "full", "lora", "lora_gc"]
        return load("musicgen_memory").main(self.common + sizes + configs + self.out("musicgen_memory"))

    def fsdp_smoke(self) -> dict:
        command = [sys.executable, str(Path(__file__).resolve()), "--fsdp-child", str(self.tmp / "fsdp.json")]
        command += ["--device", str(self.device)] + (["--tiny"] if self.tiny else [])
        return self.subprocess(command, "fsdp")

    def subprocess(self, command: list[str], name: str) -> dict:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{name} exited with {done.returncode}: {done.stderr[-3000:]}")
        return json.loads((self.tmp / f"{name}.json").read_text())


SECTIONS = (
    "cfg_vs_distilled",
    "sampler_vs_floor_vs_hf",
    "musicgen_vs_hf",
    "adapter_rollout",
    "compiled_decode",
    "vs_trl",
    "lora_memory",
    "fsdp_smoke",
)


def fsdp_child(out: Path, device: torch.device, tiny: bool) -> None:
    """A few steps of distillation + diversity reward, FSDP2-sharded on one device; writes step times,
    peak memory and the final loss to ``out``."""
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import ModelParallelStrategy
    from machine import PeakMemory

    from tests.helpers import tiny_fit

    pl.seed_everything(0, verbose=False)
    steps = 3
    module = tiny_fit.ShardedModule(
        tiny_fit.tiny_generator(0, **({} if tiny else dict(dim=512, num_layers=8, num_heads=8))),
        rollout={"num_frames": tiny_fit.NUM_FRAMES, "num_samples_per_prompt": 2},
        optimization={"lr_warmup_steps": 0},
    )

    class StepTimes(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimes()
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1),
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[*tiny_fit.objective_callbacks(), timer],
    )
    with PeakMemory(device) as peak:
        trainer.fit(module, tiny_fit.prompt_data(1))
    loss = trainer.callback_metrics.get("train/loss")
    result = {
        "steps": trainer.global_step,
        "step_times_s": timer.times,
        "peak_mem_mb": peak.mb,
        "peak_mem_method": peak.method,
        "final_loss": None if loss is None else float(loss),
        "params": sum(p.numel() for p in module.generator.parameters()),
        "strategy": "ModelParallelStrategy(data_parallel_size=1) + fully_shard per block (FSDP2)",
    }
    if (
        trainer.global_step != steps
        or result["final_loss"] is None
        or result["final_loss"] != result["final_loss"]
    ):
        raise SystemExit(f"FSDP smoke did not train {steps} steps to a finite loss: {result}")
    out.write_text(json.dumps(result, indent=2) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--budget-s", type=float, default=450.0, help="skip the sections left after this long")
    p.add_argument("--out", default=None, help="default: benchmarks/results/gpu_suite.json (--tiny: _tiny)")
    p.add_argument("--fsdp-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny and args.device != "cpu":
        raise SystemExit(f"--tiny runs on the CPU; drop --device {args.device}")
    if args.out is None:
        args.out = str(HERE / "results" / ("gpu_suite_tiny.json" if args.tiny else "gpu_suite.json"))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    provenance = git_state()  # before the run: the code that runs, not what is committed meanwhile
    device = resolve_device(args.device)
    if args.fsdp_child:
        fsdp_child(Path(args.fsdp_child), device, args.tiny)
        return {}
    set_threads(args.threads)
    machine = describe_machine(device)
    started = time.perf_counter()
    sections: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cfgrl_gpu_suite_") as tmp:
        suite = Suite(args, device, Path(tmp))
        for name in args.sections:
            elapsed = time.perf_counter() - started
            if elapsed > args.budget_s:
                sections[name] = {"status": "skipped", "reason": f"time budget spent ({elapsed:.0f} s)"}
                continue
            print(f"== {name}", flush=True)
            start = time.perf_counter()
            run: Callable[[], dict] = getattr(suite, name)
            try:
                sections[name] = {"status": "ok", "result": run()}
            except Skip as skip:
                sections[name] = {"status": "skipped", "reason": str(skip)}
            except Exception as err:  # record it and go on: one broken section must not lose the others
                traceback.print_exc()
                sections[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            sections[name]["wall_s"] = time.perf_counter() - start
            print(f"== {name}: {sections[name]['status']} ({sections[name]['wall_s']:.0f} s)", flush=True)
    result = {
        "benchmark": "gpu_suite",
        "command": "python benchmarks/gpu_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {"tiny": args.tiny, "sections": args.sections, "budget_s": args.budget_s},
        **provenance,
        "machine": machine,
        "wall_s": time.perf_counter() - started,
        "sections": sections,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(summary(result), flush=True)
    print(f"saved {args.out}", flush=True)
    return result


def summary(result: dict) -> str:
    lines = [f"GPU suite on {result['machine']['device']} ({result['wall_s']:.0f} s)", ""]
    for name, section in result["sections"].items():
        detail = section.get("reason") or section.get("error") or ""
        lines.append(f"- {name}: {section['status']} ({section.get('wall_s', 0):.0f} s) {detail}".rstrip())
        found = section.get("result", {}).get("summary")
        if isinstance(found, dict):
            lines.append(f"  summary: {json.dumps(found, default=str)[:400]}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
