"""On-policy distillation against the peer an LLM user would pick: TRL's GKD vs this package.

Both train the same small GPT-2-shaped student (random init: cost does not depend on the weights) by
on-policy distillation from a frozen teacher of the same size, on the same batch (N prompts, one
completion each), prompt length, completion length and optimizer (AdamW, constant learning rate, no
weight decay, no gradient clipping), with their own training loops:

* ``trl_gkd``: TRL's ``GKDTrainer`` (``trl.experimental.gkd``) with ``lmbda = 1`` (every step generates
  its completions with the student: fully on-policy), ``beta = 1`` (TRL's generalised JSD at beta = 1 is
  ``KL(student || teacher)``, the reverse KL), ``temperature = 1``, ``seq_kd = False``, on a
  ``GPT2LMHeadModel`` (the teacher: a frozen copy), ``gradient_checkpointing = False``, so generation is
  HF ``generate()`` with its KV cache, as the package's sampler.
* ``trl_gkd_defaults``: the same with TRL's default ``gradient_checkpointing = True`` (what a TRL user
  gets unless they change it): GKD then generates with ``use_cache=False`` (every new token recomputes
  the whole prefix) and the backward recomputes the forward. Shown for what it costs; the ratios are
  against ``trl_gkd``.
* ``cfgrl_g1``: :class:`~lightning_cfgrl.CFGRLModule` + :class:`~lightning_cfgrl.CFGDistillCallback`
  (reverse KL) at guidance 1, the like-for-like run (the teacher is one forward per step, as TRL's),
  on the package's ``AudioTokenTransformer`` with the same layers / width / heads / vocabulary / exact
  GELU and K = 1 codebook; its P prompt positions are P condition slots, as GPT-2's P prompt tokens.
* ``cfgrl_g3``: the same at guidance 3 (what the package is for: the teacher runs the doubled
  ``[cond; null]`` batch).

The three run interleaved in one process: each round runs a few steps of each in turn (a fresh
Trainer per block, the models carried over), the first step of every block is its warm-up and is not
timed. Reported per run: the median step time (optimizer step included), trained tokens/s (completion
tokens in the loss, ``N * T``, per second), the share of the step spent generating (TRL's
``generate_on_policy_outputs``, the package's ``CFGRLModule.rollout``), and peak memory over a block, the
median over blocks (CPU: peak RSS; CUDA: ``max_memory_allocated``; net of what was there before: the
student; the teacher copy and the optimizer state are made inside the block by both). Needs ``pip install trl``
(the ``benchmark`` extra); without it the script says so and exits.

    python benchmarks/vs_trl.py [--quick] [--device cpu|cuda] [--threads N] [--completion 64]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (  # noqa: E402
    PeakMemory,
    add_device_args,
    add_model_shape_args,
    describe_machine,
    resolve_device,
    save_result,
    set_threads,
    synchronize,
)
from sampler import _import_gpt2  # noqa: E402  (transformers without a broken torchaudio)

import lightning_cfgrl  # noqa: E402

RUNS = ("trl_gkd", "trl_gkd_defaults", "cfgrl_g1", "cfgrl_g3")


def import_trl() -> tuple[Any, Any, str]:
    """``(GKDConfig, GKDTrainer, trl version)``; ImportError when TRL (or its GKD) is missing."""
    _import_gpt2()  # makes a torchaudio that cannot load look absent before TRL imports transformers
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl

    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError:  # TRL < 0.24 had it at the top level
        from trl import GKDConfig, GKDTrainer
    return GKDConfig, GKDTrainer, trl.__version__


def word_tokenizer(vocab: int) -> Any:
    """A tokenizer GKDTrainer accepts (it reads ``pad_token_id``), built offline: ids are the tokens."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="t0")))
    tok.pad_token, tok.eos_token = "t0", None
    return tok


class StepClock:
    """Step and generation times of one block; the first step is the warm-up."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps: list[float] = []
        self.generation: list[float] = []
        self._start = 0.0
        self._gen = 0.0

    def begin(self) -> None:
        synchronize(self.device)
        self._gen = 0.0
        self._start = time.perf_counter()

    def end(self) -> None:
        synchronize(self.device)
        self.steps.append(time.perf_counter() - self._start)
        self.generation.append(self._gen)

    def timed_generation(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        synchronize(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        synchronize(self.device)
        self._gen += time.perf_counter() - start
        return out


def trl_block(
    args: argparse.Namespace, device: torch.device, student: Any, steps: int, checkpointing: bool = False
) -> tuple[StepClock, float]:
    """``steps`` GKD steps with a fresh GKDTrainer (teacher copied from the student inside)."""
    from datasets import Dataset
    from transformers import TrainerCallback

    GKDConfig, GKDTrainer, _ = import_trl()  # noqa: N806
    clock = StepClock(device)

    class TimedGKD(GKDTrainer):
        @staticmethod
        def generate_on_policy_outputs(model, inputs, generation_config):  # noqa: ANN001, ANN205
            return clock.timed_generation(
                GKDTrainer.generate_on_policy_outputs, model, inputs, generation_config
            )

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            clock.begin()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            clock.end()

    prompts = torch.randint(0, args.vocab, (args.batch * steps, args.prompt))
    dataset = Dataset.from_dict({"prompt_ids": prompts.tolist()})

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([e["prompt_ids"] for e in examples])
        ones = torch.ones_like(ids)
        # lmbda = 1: input_ids / labels are replaced by the student's completions before the loss
        return dict(prompts=ids, prompt_attention_mask=ones, input_ids=ids, attention_mask=ones, labels=ids)

    config = GKDConfig(
        output_dir=str(Path(args.tmp) / "trl"),
        lmbda=1.0,
        beta=1.0,
        temperature=1.0,
        seq_kd=False,
        max_new_tokens=args.completion,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=0.0,
        gradient_checkpointing=checkpointing,  # TRL's default is True (then no KV cache in generation)
        max_steps=steps,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        bf16=False,
        fp16=False,
    )
    with PeakMemory(device) as peak:
        teacher = copy.deepcopy(student).eval()
        trainer = TimedGKD(
            model=student,
            teacher_model=teacher,
            args=config,
            data_collator=collate,
            train_dataset=dataset,
            processing_class=word_tokenizer(args.vocab),
            callbacks=[Clock()],
        )
        trainer.train()
    del trainer, teacher
    return clock, peak.mb


def cfgrl_block(
    args: argparse.Namespace, device: torch.device, generator: Any, guidance: float, steps: int
) -> tuple[StepClock, float]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_cfgrl import CFGDistillCallback, CFGRLModule

    clock = StepClock(device)

    class TimedModule(CFGRLModule):
        def rollout(self, *a: Any, **k: Any) -> torch.Tensor:
            return clock.timed_generation(super().rollout, *a, **k)

    class Clock(pl.Callback):
        def on_train_batch_start(self, *a: Any, **k: Any) -> None:
            clock.begin()

        def on_train_batch_end(self, *a: Any, **k: Any) -> None:
            clock.end()

    conditions = torch.randint(1, args.slot_values + 1, (args.batch * steps, args.prompt))
    loader = DataLoader([{"condition": c} for c in conditions], batch_size=args.batch)
    with PeakMemory(device) as peak:
        module = TimedModule(
            generator,
            rollout={"num_frames": args.completion, "num_samples_per_prompt": 1},
            optimization={
                "learning_rate": args.lr,
                "lr_warmup_steps": 0,
                "lr_decay": "constant",
                "optimizer": lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0),
            },
        )
        trainer = pl.Trainer(
            accelerator="cuda" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
            max_steps=steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[CFGDistillCallback(guidance_scale=guidance, divergence="reverse_kl"), Clock()],
        )
        trainer.fit(module, train_dataloaders=loader)
    del trainer, module
    return clock, peak.mb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_args(p)
    add_model_shape_args(p)
    p.add_argument("--batch", type=int, default=16, help="N prompts per step, one completion each")
    p.add_argument("--prompt", type=int, default=4, help="P prompt tokens (the package: P condition slots)")
    p.add_argument("--slot-values", type=int, default=16, help="values per condition slot (package)")
    p.add_argument("--completion", type=int, default=64, help="T generated tokens per sequence")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=4, help="steps per block (the first is the warm-up)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of one block per run")
    p.add_argument("--quick", action="store_true", help="32 tokens, 3 steps x 2 rounds")
    p.add_argument("--tmp", default="/tmp/cfgrl_vs_trl", help="TRL's output_dir (nothing is saved there)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "vs_trl.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.completion, args.steps, args.rounds = (
            min(args.completion, 32),
            min(args.steps, 3),
            min(args.rounds, 2),
        )
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step of a block is its warm-up)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    try:
        _, _, trl_version = import_trl()
    except ImportError as err:
        raise SystemExit(
            f"TRL is not installed ({err}): pip install -e '.[benchmark]' (or pip install trl)"
        ) from err
    import transformers

    from lightning_cfgrl.models import AudioTokenTransformer

    warnings.filterwarnings("ignore")
    machine = describe_machine(device)
    print(f"machine: {machine}\ntrl {trl_version}, transformers {transformers.__version__}", flush=True)

    GPT2Config, GPT2LMHeadModel, _ = _import_gpt2()  # noqa: N806
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=args.vocab,
            n_positions=args.prompt + args.completion,
            n_embd=args.dim,
            n_layer=args.layers,
            n_head=args.heads,
            activation_function="gelu",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
        )
    ).to(device)
    gpt2.generation_config.eos_token_id = None
    generators = {
        g: AudioTokenTransformer(
            num_codebooks=1,
            vocab_size=args.vocab,
            condition_sizes=(args.slot_values,) * args.prompt,
            dim=args.dim,
            num_layers=args.layers,
            num_heads=args.heads,
            max_frames=args.completion,
        ).to(device)
        for g in (1.0, 3.0)
    }
    clocks: dict[str, list[StepClock]] = {name: [] for name in RUNS}
    peaks: dict[str, list[float]] = {name: [] for name in RUNS}
    for rnd in range(args.rounds):
        for name in RUNS:
            if name.startswith("trl_gkd"):
                clock, mb = trl_block(
                    args, device, gpt2, args.steps, checkpointing=name == "trl_gkd_defaults"
                )
                gpt2.gradient_checkpointing_disable()  # a Trainer with it on leaves it on in the model
            else:
                g = 1.0 if name == "cfgrl_g1" else 3.0
                clock, mb = cfgrl_block(args, device, generators[g], g, args.steps)
            if len(clock.steps) != args.steps:
                raise RuntimeError(f"{name}: timed {len(clock.steps)} steps, expected {args.steps}")
            clocks[name].append(clock)
            peaks[name].append(mb)
            timed = clock.steps[1:]
            print(
                f"round {rnd} {name}: steps {', '.join(f'{s:.3f}' for s in timed)} s "
                f"(warm-up {clock.steps[0]:.3f} s), peak {mb:.0f} MB",
                flush=True,
            )

    tokens = args.batch * args.completion
    records = []
    for name in RUNS:
        steps = [s for c in clocks[name] for s in c.steps[1:]]
        shares = [gen / s for c in clocks[name] for gen, s in zip(c.generation[1:], c.steps[1:], strict=True)]
        median = statistics.median(steps)
        model = gpt2 if name.startswith("trl_gkd") else generators[1.0]
        records.append(
            {
                "name": name,
                "step_s_median": median,
                "step_s_min": min(steps),
                "step_s_max": max(steps),
                "trained_tokens_per_s": tokens / median,
                "generation_share": statistics.median(shares),
                "generation_s_median": statistics.median(g for c in clocks[name] for g in c.generation[1:]),
                "peak_mem_mb": statistics.median(peaks[name]),  # the first block also pays one-time setup
                "peak_mem_mb_per_block": peaks[name],
                "params": sum(p.numel() for p in model.parameters()),
                "steps_s": steps,
            }
        )
    by = {r["name"]: r for r in records}
    summary = {
        f"{name}_tokens_per_s_over_trl": by[name]["trained_tokens_per_s"]
        / by["trl_gkd"]["trained_tokens_per_s"]
        for name in ("cfgrl_g1", "cfgrl_g3")
    }
    summary["trl_defaults_tokens_per_s_over_trl"] = (
        by["trl_gkd_defaults"]["trained_tokens_per_s"] / by["trl_gkd"]["trained_tokens_per_s"]
    )
    summary.update(
        {
            f"{name}_peak_mem_over_trl": by[name]["peak_mem_mb"] / by["trl_gkd"]["peak_mem_mb"]
            if by["trl_gkd"]["peak_mem_mb"] > 0
            else None
            for name in ("cfgrl_g1", "cfgrl_g3")
        }
    )
    result = {
        "benchmark": "vs_trl",
        "command": "python benchmarks/vs_trl.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {
            "dim": args.dim,
            "layers": args.layers,
            "heads": args.heads,
            "vocab": args.vocab,
            "batch_sequences": args.batch,
            "prompt_tokens": args.prompt,
            "completion_tokens": args.completion,
            "learning_rate": args.lr,
            "optimizer": "AdamW, weight_decay 0, constant lr, no gradient clipping",
            "steps_per_block": args.steps,
            "rounds": args.rounds,
            "trl": {
                "trainer": "trl.experimental.gkd.GKDTrainer",
                "gradient_checkpointing": {"trl_gkd": False, "trl_gkd_defaults": True},
                "lmbda": 1.0,
                "beta": 1.0,
                "temperature": 1.0,
                "seq_kd": False,
                "divergence": "KL(student||teacher)",
            },
            "cfgrl": {"guidance_scales": [1.0, 3.0], "divergence": "reverse_kl", "num_samples_per_prompt": 1},
            "trl_version": trl_version,
            "transformers_version": transformers.__version__,
            "package_version": lightning_cfgrl.__version__,
            "weights": "random init (cost does not depend on the weights)",
        },
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
        f"On-policy distillation, {c['batch_sequences']} sequences x ({c['prompt_tokens']} prompt + "
        f"{c['completion_tokens']} generated) tokens, dim {c['dim']}, {c['layers']} layers, {c['heads']} heads, "
        f"V {c['vocab']}; TRL {c['trl_version']} ({m['device']}, {m['torch_threads']} threads, "
        f"load {m.get('load_average_1_5_15')})",
        "",
        "| run | params | step s (median) | trained tokens/s | generating | peak mem MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["records"]:
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['step_s_median']:.3f} | {r['trained_tokens_per_s']:.0f} | "
            f"{100 * r['generation_share']:.0f} % | {r['peak_mem_mb']:.0f} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"- trained tokens/s over TRL GKD: {s['cfgrl_g1_tokens_per_s_over_trl']:.2f}x (guidance 1), "
        f"{s['cfgrl_g3_tokens_per_s_over_trl']:.2f}x (guidance 3); TRL with its default gradient checkpointing "
        f"(no KV cache in generation): {s['trl_defaults_tokens_per_s_over_trl']:.2f}x of trl_gkd",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
