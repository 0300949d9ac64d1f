"""Bit-identity of ``AudioTokenTransformer(..., options=TransformerOptions(...))`` and of the experimental
``ControlFiLMTransformer`` against the flat arguments (``dropout=``, ``controls=``, ``control_layers=``).

With the code of ``--before`` (exported with ``git archive``): a tiny ``pretrain.yaml`` run (5 steps) and
``distill.yaml`` run (3 steps) make a checkpoint whose generator spec is flat, and ``cfgrl generate``
samples it (plain, and CFG 3 with top-k 8). Then two steerable students are distilled 2 steps from
that base in Python, one with controls at the input (and ``dropout=0.1``), one with
``control_layers="every"``, and each is sampled with controls; ``cfgrl fit --ckpt_path`` resumes the
flat base checkpoint for 2 more steps. With this tree's code: the same checkpoints are sampled again
(the "every" one through ``load_control_film_generator``, after checking that ``load_generator``
refuses it naming the experimental class), the same three trainings run with the new arguments, and
the same resume. Compared bit for bit: the token files / tensors and the trained weights.

    python benchmarks/model_args_bit_identity.py --before 17c0768 --work /tmp/model_args_bitid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from configs_bit_identity import GENERATIONS, SHORT, cfgrl, sha256, train_and_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STUDENTS = ("input", "every")
STUDENT_PROMPTS = [[1, 2, 3], [4, 1, 2], [2, 3, 1]]


def worker(kind: str, base: Path, out: Path, checkpoint: Path | None) -> None:
    """Under ``PYTHONPATH`` = the code to test: distill a steerable student of ``kind`` 2 steps from
    ``base`` (writing ``out/<kind>.ckpt``), or with ``checkpoint`` only sample that checkpoint; the
    sampled tokens go to ``out/<kind>_tokens.pt``."""
    import lightning.pytorch as pl
    import torch

    from lightning_cfgrl import CFGDistillCallback, CFGRLModule, sample
    from lightning_cfgrl.core.controls import load_base_weights
    from lightning_cfgrl.experiments import SyntheticMusic, SyntheticPromptDataModule
    from lightning_cfgrl.io.generators import load_generator, load_generator_state

    controls = {"guidance_scale": 2.0, "diversity_weight": 0.0}
    if checkpoint is None:
        size = dict(num_codebooks=2, vocab_size=32, condition_sizes=[4, 4, 3], dim=64, num_layers=2)
        size |= dict(num_heads=4, max_frames=32)
        names = ["guidance_scale", "diversity_weight"]
        dropout = 0.1 if kind == "input" else 0.0
        pl.seed_everything(0)
        try:  # this tree: grouped options, FiLM in every layer in experimental
            from lightning_cfgrl.models.options import TransformerOptions

            options = TransformerOptions(dropout=dropout, controls=names)
            if kind == "every":
                from lightning_cfgrl.experimental import ControlFiLMTransformer

                student = ControlFiLMTransformer(**size, options=options)
            else:
                from lightning_cfgrl.models import AudioTokenTransformer

                student = AudioTokenTransformer(**size, options=options)
        except ImportError:  # --before: the flat arguments
            from lightning_cfgrl.models import AudioTokenTransformer

            student = AudioTokenTransformer(**size, dropout=dropout, controls=names, control_layers=kind)
        load_base_weights(student, load_generator_state(base))
        try:  # this tree: the teacher group
            from lightning_cfgrl import TeacherConfig

            distill = CFGDistillCallback(
                guidance_scale=[1.0, 5.0], teacher=TeacherConfig(checkpoint=str(base))
            )
        except ImportError:  # --before: the flat argument
            distill = CFGDistillCallback(guidance_scale=[1.0, 5.0], teacher_checkpoint=str(base))
        module = CFGRLModule(student, rollout={"num_frames": 8}, optimization={"learning_rate": 1e-3})
        trainer = pl.Trainer(
            accelerator="cpu", max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
            callbacks=[distill],
        )  # fmt: skip
        trainer.fit(module, SyntheticPromptDataModule(SyntheticMusic(), batch_size=4))
        checkpoint = out / f"{kind}.ckpt"
        trainer.save_checkpoint(checkpoint)
    try:
        model = load_generator(checkpoint)
    except ValueError as err:  # this tree, an "every" checkpoint of --before
        print(f"load_generator refused {checkpoint.name}: {err}")
        from lightning_cfgrl.experimental import load_control_film_generator

        model = load_control_film_generator(checkpoint)
    tokens = sample(model, torch.tensor(STUDENT_PROMPTS), 8, num_samples=2, seed=5, controls=controls)
    torch.save(tokens, out / f"{kind}_tokens.pt")


def run_worker(code: Path, kind: str, base: Path, out: Path, checkpoint: Path | None = None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    command = [PY, __file__, "worker", "--kind", kind, "--base", str(base), "--out", str(out)]
    command += ["--checkpoint", str(checkpoint)] if checkpoint else []
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return "\n".join(line for line in done.stdout.splitlines() if line.startswith("load_generator refused"))


def same_weights(a: Path, b: Path) -> bool:
    import torch

    sa = torch.load(a, weights_only=True, map_location="cpu")["state_dict"]
    sb = torch.load(b, weights_only=True, map_location="cpu")["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    run.add_argument("--before", required=True, help="a commit with the flat AudioTokenTransformer arguments")
    run.add_argument("--work", type=Path, required=True, help="an empty folder for the runs")
    run.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/model_args_bit_identity.json")
    work_parser = sub.add_parser("worker")
    work_parser.add_argument("--kind", choices=STUDENTS, required=True)
    work_parser.add_argument("--base", type=Path, required=True)
    work_parser.add_argument("--out", type=Path, required=True)
    work_parser.add_argument("--checkpoint", type=Path)
    args = parser.parse_args(
        sys.argv[1:] if sys.argv[1:2] in (["run"], ["worker"]) else ["run", *sys.argv[1:]]
    )
    if args.command == "worker":
        worker(args.kind, args.base, args.out, args.checkpoint)
        return
    work = args.work
    old, tokens = train_and_sample(args.before, work)
    base = work / "runs/base/checkpoints/last.ckpt"
    checkpoint = work / "runs/distill/checkpoints/last.ckpt"
    weights = {"distill_yaml": same_weights(checkpoint, work / "runs/distill_after/checkpoints/last.ckpt")}
    # `cfgrl fit --ckpt_path` of the flat base checkpoint: 2 more steps with each code
    for side, code in (("before", old), ("after", ROOT)):
        cfgrl(code, work, "fit", "--config", str(code / "examples/configs/pretrain.yaml"), "--ckpt_path", str(base),
              "--trainer.max_steps", "7", "--trainer.val_check_interval", "7", "--data.init_args.num_train", "512",
              "--data.init_args.num_val", "64", "--trainer.logger.init_args.name", f"resume_{side}", *SHORT)  # fmt: skip
    weights["pretrain_yaml_resumed"] = same_weights(
        *(work / f"runs/resume_{side}/checkpoints/last.ckpt" for side in ("before", "after"))
    )
    refusals = {}
    for kind in STUDENTS:
        before, after, loaded = (work / f"{side}_{kind}" for side in ("before", "after", "loaded"))
        run_worker(old, kind, base, before)
        run_worker(ROOT, kind, base, after)
        refusals[kind] = run_worker(ROOT, kind, base, loaded, before / f"{kind}.ckpt")
        weights[f"steerable_{kind}"] = same_weights(before / f"{kind}.ckpt", after / f"{kind}.ckpt")
        for side, folder in (("before", before), ("after", after), ("loaded_by_after", loaded)):
            tokens[f"{side}_steerable_{kind}"] = sha256(folder / f"{kind}_tokens.pt")

    sys.path.insert(0, str(ROOT))
    import torch

    from lightning_cfgrl.eval.machine import code_version, describe_machine

    old_spec = torch.load(checkpoint, weights_only=True, map_location="cpu")["hyper_parameters"]["generator"]
    result = {
        "what": "AudioTokenTransformer options (grouped) and the experimental ControlFiLMTransformer vs the "
        "flat arguments: tokens of checkpoints written by --before, weights of the same runs",
        "before_commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", args.before], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "before_generator_init_args": sorted(old_spec["init_args"]),
        "tokens_sha256": tokens,
        "tokens_identical": {
            name: tokens[f"before_{name}"] == tokens[f"after_{name}"] for name in GENERATIONS
        }
        | {
            f"steerable_{kind}_{side}": tokens[f"before_steerable_{kind}"]
            == tokens[f"{side}_steerable_{kind}"]
            for kind in STUDENTS
            for side in ("after", "loaded_by_after")
        },
        "trained_weights_identical": weights,
        "load_generator_refusals": refusals,
        "runs": "pretrain.yaml 5 steps (512 items), distill.yaml 3 steps, cfgrl generate seed 123, 2 prompts x 4; "
        "steerable students (input controls with dropout 0.1; FiLM in every layer) distilled 2 steps in Python "
        "from the pretrain checkpoint, sampled seed 5, 3 prompts x 2, g = 2; the pretrain checkpoint resumed to step 7",
        **code_version(),
        "machine": describe_machine(),
    }
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: result[k] for k in ("tokens_identical", "trained_weights_identical")}))


if __name__ == "__main__":
    main()
