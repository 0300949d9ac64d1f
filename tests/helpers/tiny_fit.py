"""Small fits of ``CFGRLModule`` with both objective callbacks, shared by the DDP, sharded, resume and
numerics tests.

Run as a script for the multi-process runs (Lightning launches the other ranks by re-running the same
command)::

    python -m tests.helpers.tiny_fit --strategy ddp --out DIR

Every rank writes ``DIR/rank<r>.pt`` (final weights, teacher, embedder, running baseline, metrics,
the prompts it trained on), loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DiversityGradientConfig
from lightning_cfgrl.core.condition import Condition
from lightning_cfgrl.core.eval_mode import eval_mode
from lightning_cfgrl.core.sampling import SamplingConfig, sample, step_seed
from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit

TINY_ARGS: dict[str, Any] = dict(
    num_codebooks=2, vocab_size=32, condition_sizes=(4, 4, 3), dim=32, num_layers=1, num_heads=2, max_frames=8
)
NUM_FRAMES = 8
GLOBAL_BATCH = 8  # prompts per optimizer step, over all processes
VAL_METRICS = ("val/token_entropy", "val/distinct_tokens", "val/histogram_diversity")
GRAD_METRICS = ("train/grad_norm/diversity", "train/grad_norm/total", "train/grad_norm/other_terms")


def tiny_generator(seed: int = 0, **overrides: Any) -> AudioTokenTransformer:
    torch.manual_seed(seed)
    return AudioTokenTransformer(**{**TINY_ARGS, **overrides})


def tiny_embedder(seed: int = 1) -> ContrastiveTokenEmbedder:
    torch.manual_seed(seed)
    return ContrastiveTokenEmbedder(num_codebooks=2, vocab_size=32, dim=16, embed_dim=16, num_layers=1)


def objective_callbacks(
    embedder: torch.nn.Module | None = None, beta: float = 1.0, log_grad_norm: bool = False
) -> list[Callback]:
    """Distillation at guidance 3 plus the diversity reward with the running-mean baseline."""
    return [
        CFGDistillCallback(guidance_scale=3.0),
        DiversityRewardCallback(
            embedder if embedder is not None else tiny_embedder(),
            beta=beta,
            gradient=DiversityGradientConfig(log_norm=log_grad_norm),
        ),
    ]


class PerPromptSeedModule(CFGRLModule):
    """Samples each prompt's G sequences with a seed of its own, from (seed, step, phase, prompt ids).

    ``CFGRLModule`` seeds one generator per batch from (seed, step, rank), so a 2-process run samples
    other sequences than a 1-process run with the same global batch. With this seeding a prompt gets the
    same samples wherever it lands, which is what lets the tests compare the runs number for number.
    """

    def rollout(
        self,
        condition: Condition,
        num_samples: int,
        config: SamplingConfig,
        seed: int,
        controls: dict[str, Tensor] | None = None,
    ) -> Tensor:
        assert isinstance(condition, Tensor) and not controls
        phase = 0 if self.trainer.training else 500_009
        base = step_seed(self.seed, self.global_step, salt=phase)
        with eval_mode(self.generator):
            return torch.cat(
                [
                    sample(
                        self.generator,
                        prompt[None],
                        self.num_frames,
                        config,
                        num_samples=num_samples,
                        seed=base + _prompt_code(prompt),
                    )
                    for prompt in condition
                ]
            )


def _prompt_code(prompt: Tensor) -> int:
    return sum(int(v) * 31**i for i, v in enumerate(prompt.tolist()))


class ShardedModule(PerPromptSeedModule):
    """FSDP2 under ``ModelParallelStrategy``: ``fully_shard`` on every transformer block, then the root,
    for the student and (sharded the same way) the distillation teacher, which the callback's ``setup``
    has already deep-copied from the unsharded student by the time ``configure_model`` runs."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        mesh = self.device_mesh["data_parallel"]
        teachers = [cb.teacher for cb in self.objectives if isinstance(cb, CFGDistillCallback)]
        for model in [self.generator, *teachers]:
            if isinstance(model, FSDPModule):  # configure_model runs again for validate/test
                continue
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)


class RecordPrompts(Callback):
    """Keeps the prompts each training batch held (to check that the ranks split the global batch)."""

    def __init__(self) -> None:
        self.prompts: list[Tensor] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.prompts.append(batch["condition"].detach().cpu().clone())


def prompt_data(processes: int) -> SyntheticPromptDataModule:
    return SyntheticPromptDataModule(
        batch_size=GLOBAL_BATCH // processes, split=PromptSplit(shuffle_seed=0, repeats=4)
    )


def build_module(strategy: str, seed: int = 0, learning_rate: float = 0.05) -> CFGRLModule:
    cls = ShardedModule if strategy == "fsdp" else PerPromptSeedModule
    # SGD: an update is linear in the gradients, so equal gradients give equal weights up to rounding
    # (Adam's first step, g / (|g| + eps), would magnify rounding in near-zero gradients). Momentum
    # because Lightning 2.6.6's ModelParallelStrategy cannot resume an optimizer with empty state
    # (IndexError: list index out of range, in fabric's _rekey_optimizer_state_if_needed)
    return cls(
        tiny_generator(seed),
        rollout={"num_frames": NUM_FRAMES, "num_samples_per_prompt": 2},
        optimization={
            "optimizer": functools.partial(torch.optim.SGD, lr=learning_rate, momentum=0.9),
            "lr_warmup_steps": 0,  # 3 steps: a warm-up would leave the weights almost where they started
            "lr_decay": "constant",
        },
        validation={"samples_per_prompt": 2},
    )


def fit(strategy: str, out: Path, steps: int = 3, resume_to: int | None = None) -> dict[str, Any]:
    """One fit of ``steps`` steps with a global batch of 8 prompts, ending with one validation batch per
    process; returns (and writes to ``out/rank<r>.pt``) what each rank holds at the end.

    With ``resume_to``, a second fit then resumes from the first one's ``last.ckpt`` into a module and
    callbacks built from *other* random weights (so only the checkpoint can bring the right student,
    teacher and embedder back) and runs to step ``resume_to`` (``out/rank<r>_resumed.pt``).
    """
    pl.seed_everything(0, verbose=False)
    processes = 1 if strategy == "single" else 2
    module, callbacks, recorder = (
        build_module(strategy),
        objective_callbacks(log_grad_norm=strategy != "fsdp"),
        RecordPrompts(),
    )
    trainer = _trainer(strategy, processes, steps, out / "checkpoints", [*callbacks, recorder])
    trainer.fit(module, prompt_data(processes))
    result = _dump(trainer, module, callbacks, recorder, out, f"rank{trainer.global_rank}.pt")
    if resume_to is not None:
        module, callbacks, recorder = (
            build_module(strategy, seed=123),
            objective_callbacks(tiny_embedder(99)),
            RecordPrompts(),
        )
        trainer = _trainer(
            strategy, processes, resume_to, out / "resumed_checkpoints", [*callbacks, recorder]
        )
        trainer.fit(module, prompt_data(processes), ckpt_path=out / "checkpoints" / "last.ckpt")
        _dump(trainer, module, callbacks, recorder, out, f"rank{trainer.global_rank}_resumed.pt")
    return result


def _trainer(
    strategy: str, processes: int, steps: int, checkpoints: Path, callbacks: list[Callback]
) -> pl.Trainer:
    kwargs: dict[str, Any] = dict(accelerator="cpu", devices=processes, strategy="auto")
    if strategy == "ddp":
        kwargs["strategy"] = "ddp"
    elif strategy == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        # one consolidated checkpoint file (the default writes a directory of shards)
        kwargs["strategy"] = ModelParallelStrategy(
            data_parallel_size=2, tensor_parallel_size=1, save_distributed_checkpoint=False
        )
    checkpoint = ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0, every_n_train_steps=steps)
    return pl.Trainer(
        max_steps=steps,
        val_check_interval=steps,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, checkpoint],
        **kwargs,
    )


def _dump(
    trainer: pl.Trainer,
    module: CFGRLModule,
    callbacks: list[Callback],
    recorder: RecordPrompts,
    out: Path,
    name: str,
) -> dict[str, Any]:
    distill, diversity = callbacks
    assert isinstance(distill, CFGDistillCallback) and isinstance(diversity, DiversityRewardCallback)
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "generator": _full_state(module.generator),
        "teacher": _full_state(distill.teacher),
        "embedder": {k: v.detach().clone() for k, v in diversity.embedder.state_dict().items()},
        "running": (diversity.running.ema, diversity.running.count),
        "val": {
            name: float(trainer.callback_metrics[name])
            for name in VAL_METRICS
            if name in trainer.callback_metrics
        },
        "grad_norms": {
            name: float(trainer.callback_metrics[name])
            for name in GRAD_METRICS
            if name in trainer.callback_metrics
        },
        "prompts": torch.stack(recorder.prompts),
        "checkpoints": sorted(p.name for p in (out / "checkpoints").iterdir()),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(result, out / name)
    return result


def _full_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """The whole state dict on every rank, gathered from shards when ``model`` is FSDP2-sharded."""
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


REPO = Path(__file__).resolve().parents[2]
_LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK")


def launch(module: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` from the repository root in a clean environment (no leftover
    torch.distributed variables, one thread per process) and return the finished process."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@functools.cache
def single_process_reference() -> tuple[dict[str, Any], dict[str, Any]]:
    """(after 3 steps, after resuming to step 4) of the 1-process run with the same global batch, run
    once per test session in this process."""
    out = Path(tempfile.mkdtemp(prefix="cfgrl_reference_"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses
    try:
        fit("single", out, steps=3, resume_to=4)
    finally:
        torch.set_num_threads(threads)
    return (
        torch.load(out / "rank0.pt", weights_only=True),
        torch.load(out / "rank0_resumed.pt", weights_only=True),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategy", choices=("single", "ddp", "fsdp"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--resume-to", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes share two cores
    fit(args.strategy, args.out, args.steps, args.resume_to)


if __name__ == "__main__":
    main()
