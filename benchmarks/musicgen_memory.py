"""Memory and time of a MusicGen CFG-distillation step at a realistic size: the full-copy teacher vs a
LoRA student (teacher = its adapter-disabled self) vs LoRA + gradient checkpointing; checkpoint sizes.

Model: ``MusicgenGenerator`` over a randomly initialised ``MusicgenForConditionalGeneration`` whose
decoder is musicgen-small's (hidden 1024, 24 layers, 16 heads, FFN 4096, 4 codebooks of 2048; the
defaults of ``MusicgenDecoderConfig``). The T5 text encoder and the EnCodec codec are small here (both
are frozen, the codec plays no part in a step); ``--real-encoders`` gives them musicgen-small's sizes
(T5-base, EnCodec 32 kHz). Weights are random: cost does not depend on them.

Configurations, each in its own subprocess:

* ``full``: the whole decoder is trained (AdamW), the teacher is a frozen deep copy of the generator
  (``CFGDistillCallback``'s default; it is also saved in every checkpoint);
* ``lora``: ``peft_config`` r = 16 on the decoder's q/k/v/out/fc1/fc2, the teacher is the student with
  its adapters disabled (no copy);
* ``lora_gc``: ``lora`` plus ``gradient_checkpointing``;
* ``lora_gc_bf16`` (``--configs``): plus ``teacher=TeacherConfig(dtype="bfloat16", chunk_size=2)``.

Each runs ``--steps`` real Lightning training steps (rollout with the KV cache, student forward and
backward, teacher, AdamW) on ``--prompts`` prompts x G = 2 samples x ``--frames`` frames. Peak memory
is over building the model and all steps, net of the process after its imports (CPU: peak RSS, read
from ``VmHWM``; CUDA: ``max_memory_allocated``): weights, teacher, gradients, optimizer state and
activations, i.e. what the run needs. Step time is the median of the steps after the first (which
allocates AdamW's state). Checkpoint size is the bytes of the tensors in Lightning's checkpoint dict
(``dump_checkpoint``), and for the LoRA configurations also the size of the written file.

    python benchmarks/musicgen_memory.py [--device cuda] [--threads N] [--steps 3] [--frames 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (
    PeakMemory,
    describe_machine,
    resolve_device,
    rss_mb,
    save_result,
    set_threads,
    synchronize,
)  # noqa: E402

CONFIGS = {
    "full": dict(lora=False, gradient_checkpointing=False),
    "lora": dict(lora=True, gradient_checkpointing=False),
    "lora_gc": dict(lora=True, gradient_checkpointing=True),
    "lora_gc_bf16": dict(
        lora=True, gradient_checkpointing=True, teacher={"dtype": "bfloat16", "chunk_size": 2}
    ),
}
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]}


def musicgen_config(hf: Any, args: argparse.Namespace) -> Any:
    """musicgen-small's decoder (``--hidden`` etc. shrink it for smoke tests) with small or real encoders."""
    decoder = hf.MusicgenDecoderConfig(
        vocab_size=args.vocab,
        num_codebooks=4,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        ffn_dim=args.ffn,
        max_position_embeddings=2048,
        pad_token_id=args.vocab,
        decoder_start_token_id=args.vocab,
        bos_token_id=args.vocab,
    )
    if args.real_encoders:  # t5-base and the 32 kHz EnCodec of musicgen-small
        text = hf.T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
        audio = hf.EncodecConfig(
            sampling_rate=32000,
            codebook_size=args.vocab,
            target_bandwidths=[2.2],
            upsampling_ratios=[8, 5, 4, 4],
            num_filters=64,
            hidden_size=128,
            audio_channels=1,
            normalize=False,
            use_causal_conv=False,
        )
    else:
        text = hf.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
        audio = hf.EncodecConfig(
            sampling_rate=32000,
            codebook_size=args.vocab,
            target_bandwidths=[2.2],
            upsampling_ratios=[8, 5, 4, 4],
            num_filters=4,
            hidden_size=16,
            codebook_dim=16,
            audio_channels=1,
            num_residual_layers=1,
        )
    return hf.MusicgenConfig(
        text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict()
    )


def _tensor_bytes(obj: Any, seen: set[int]) -> int:
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr() if obj.numel() else id(obj)
        if key in seen:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def run_config(name: str, args: argparse.Namespace) -> dict:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    from lightning_cfgrl import CFGDistillCallback, CFGRLModule, TeacherConfig
    from lightning_cfgrl.adapters.musicgen import MusicgenGenerator, import_musicgen

    hf = import_musicgen()
    hf.logging.set_verbosity_error()
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    options = CONFIGS[name]
    g = torch.Generator().manual_seed(0)
    text_vocab = 32128 if args.real_encoders else 256
    rows = [
        {
            "condition": {
                "input_ids": torch.randint(0, text_vocab, (12,), generator=g),
                "attention_mask": torch.ones(12, dtype=torch.long),
            }
        }
        for _ in range(args.prompts * (args.steps + 1))
    ]
    data = DataLoader(rows, batch_size=args.prompts)

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, *unused: Any) -> None:
            synchronize(device)
            self._start = time.perf_counter()

        def on_train_batch_end(self, *unused: Any) -> None:
            synchronize(device)
            self.times.append(time.perf_counter() - self._start)

    rss_imports = rss_mb()
    timer = StepTimer()
    with PeakMemory(device) as peak:
        torch.manual_seed(0)
        model = hf.MusicgenForConditionalGeneration(musicgen_config(hf, args))
        generator = MusicgenGenerator(model, gradient_checkpointing=options["gradient_checkpointing"])
        params = sum(p.numel() for p in generator.parameters())
        decoder_params = sum(p.numel() for p in model.decoder.parameters())
        module = CFGRLModule(
            generator,
            peft_config=LORA if options["lora"] else None,
            rollout={"num_frames": args.frames, "num_samples_per_prompt": 2},
            optimization={"learning_rate": 1e-5},
        )
        built_mb = (
            rss_mb() - rss_imports if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
        )
        distill = CFGDistillCallback(guidance_scale=3.0, teacher=TeacherConfig(**options.get("teacher", {})))
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
            max_steps=args.steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[distill, timer],
        )
        trainer.fit(module, data)
    trainable = sum(p.numel() for p in module.generator.parameters() if p.requires_grad)
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    ckpt_bytes = _tensor_bytes(checkpoint, set())
    parts = {
        "state_dict": _tensor_bytes(checkpoint["state_dict"], set()),
        "optimizer": _tensor_bytes(checkpoint.get("optimizer_states", []), set()),
        "teacher": _tensor_bytes(checkpoint.get("callbacks", {}).get("CFGDistillCallback", {}), set()),
    }
    del checkpoint
    file_bytes = None
    if options["lora"] or args.write_full_checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "last.ckpt"
            trainer.save_checkpoint(path)
            file_bytes = path.stat().st_size
    return {
        "config": name,
        "options": options,
        "params": params,
        "decoder_params": decoder_params,
        "trainable_params": trainable,
        "prompts": args.prompts,
        "group_size": 2,
        "num_frames": args.frames,
        "steps": args.steps,
        "step_times_s": timer.times,
        "step_s": statistics.median(timer.times[1:] or timer.times),
        "peak_mem_mb": peak.mb,
        "peak_mem_method": peak.method,
        "built_mem_mb": built_mb,
        "checkpoint_tensor_mb": ckpt_bytes / 2**20,
        "checkpoint_parts_mb": {k: v / 2**20 for k, v in parts.items()},
        "checkpoint_file_mb": file_bytes / 2**20 if file_bytes is not None else None,
        "threads": threads,
    }


def run_in_subprocess(name: str, argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--child", name], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"configuration {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    full = next((r for r in results if r["config"] == "full"), None)
    lines = [
        "| config | trainable params | peak mem MB | vs full | step s | checkpoint MB (tensors) | file MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r['peak_mem_mb'] / full['peak_mem_mb']:.2f}x" if full else ""
        file_mb = f"{r['checkpoint_file_mb']:.1f}" if r["checkpoint_file_mb"] is not None else ""
        lines.append(
            f"| {r['config']} | {r['trainable_params'] / 1e6:.2f} M | {r['peak_mem_mb']:.0f} | {ratio} | "
            f"{r['step_s']:.2f} | {r['checkpoint_tensor_mb']:.1f} | {file_mb} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["full", "lora", "lora_gc"])
    p.add_argument("--steps", type=int, default=3, help="training steps per configuration (>= 2)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step (G = 2 samples each)")
    p.add_argument("--frames", type=int, default=16, help="frames per rollout (50 per second of audio)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--real-encoders", action="store_true", help="T5-base and EnCodec 32 kHz at full size")
    p.add_argument("--write-full-checkpoint", action="store_true", help="also write the full config's file")
    p.add_argument("--in-process", action="store_true", help="no subprocess per configuration (smoke tests)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "musicgen_memory.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_config(args.child, args)), flush=True)
        return {}
    device = resolve_device(args.device)
    set_threads(args.threads)
    machine = describe_machine(device)
    print(f"machine: {json.dumps(machine)}", flush=True)
    results = []
    for name in args.configs:
        start = time.perf_counter()
        result = run_config(name, args) if args.in_process else run_in_subprocess(name, argv)
        results.append(result)
        print(
            f"{name}: peak {result['peak_mem_mb']:.0f} MB, step {result['step_s']:.2f} s "
            f"({time.perf_counter() - start:.0f} s wall)",
            flush=True,
        )
    out = {
        "machine": machine,
        "machine_after": {"load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]},
        "model": {
            k: getattr(args, k) for k in ("hidden", "layers", "heads", "ffn", "vocab", "real_encoders")
        },
        "results": results,
    }
    save_result(out, args.out, table(results))
    return out


if __name__ == "__main__":
    main()
