"""The reliability rules' cases in the bad-input table: each issue example and one case per rule.

The rows join ``tests/test_bad_inputs.py``'s in ``docs/bad_inputs.md`` (its ``table()`` reads
``CASES`` here too); each is run here with the same check: the error's type, and a message naming the
value and what was expected. The sweeps of each class live in ``tests/test_reliability_*.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, SamplingConfig, sample
from lightning_cfgrl.core.sampling import NoMassError
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import CheckpointError, file_sha256, load_checkpoint
from lightning_cfgrl.io.specs import UnsafeSpecError
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.prompts import PromptSplit
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import TINY_ARGS, tiny_generator
from tests.test_bad_inputs import CONSTRUCT, LOAD, MERGE, RESUME, STEP, Case, _c, _describe

PROMPT = torch.tensor([[1, 1, 1]])
WRITE, SAMPLE = "before any write", "sampling (any step)"


def _ckpt(path: Path, seed: int = 0, generator: Any = None, **hparams: Any) -> Path:
    torch.manual_seed(seed)
    generator = generator if generator is not None else AudioTokenTransformer(**TINY_ARGS)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"generator": generator.spec(), "num_frames": 8, **hparams},
        },
        path,
    )
    return path


def _nan_generator() -> AudioTokenTransformer:
    generator = tiny_generator()
    with torch.no_grad():
        generator.heads.bias.fill_(float("nan"))
    return generator


class _NaNGradient(ObjectiveCallback):
    def loss_terms(self, pl_module: CFGRLModule, batch: Any) -> dict[str, Tensor]:
        return {"nan_grad": torch.sqrt(batch.student_logits.float().sum() * 0.0)}  # 0, gradient NaN


def _fit(
    tmp: Path, steps: int, callbacks: list, ckpt: Path | None = None, lr: float = 1e-2, batch: int = 4
) -> None:
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[*callbacks, ModelCheckpoint(dirpath=tmp, save_last=True)],
    )
    module = CFGRLModule(
        tiny_generator(),
        rollout={"num_frames": 8, "num_samples_per_prompt": 2},
        optimization={"learning_rate": lr},
    )
    trainer.fit(
        module, SyntheticPromptDataModule(batch_size=batch, split=PromptSplit(repeats=1)), ckpt_path=ckpt
    )


def _resume_with_new_lr(tmp: Path) -> None:
    _fit(tmp, 1, [CFGDistillCallback()])
    _fit(tmp, 2, [CFGDistillCallback()], ckpt=tmp / "last.ckpt", lr=5e-2)


def _resume_weights_only(tmp: Path) -> None:
    _fit(tmp, 1, [CFGDistillCallback()])
    ckpt = load_checkpoint(tmp / "last.ckpt")
    torch.save({k: v for k, v in ckpt.items() if k not in ("optimizer_states", "loops")}, tmp / "merged.ckpt")
    _fit(tmp, 2, [CFGDistillCallback()], ckpt=tmp / "merged.ckpt")


def _save_nan_weights(tmp: Path) -> None:
    CFGRLModule(_nan_generator(), rollout={"num_frames": 8}).on_save_checkpoint({})


def _export_into_checkpoint_folder(tmp: Path) -> None:
    from lightning_cfgrl.cli.export import export_pretrained

    ckpt = _ckpt(tmp / "last.ckpt")
    export_pretrained(str(ckpt), str(tmp), overwrite=True)


def _merged(tmp: Path) -> Path:
    from lightning_cfgrl.cli.merge import merge_checkpoints

    (tmp / "runs").mkdir()
    q, d = _ckpt(tmp / "runs" / "base.ckpt", 0), _ckpt(tmp / "runs" / "div.ckpt", 1)
    merge_checkpoints(str(q), str(d), [0.5], str(tmp / "merged"))
    return tmp / "merged" / "merged_lambda=0.50.json"


def _sidecar_names_base(tmp: Path) -> None:
    from lightning_cfgrl.eval.plan import merged_checkpoints

    sidecar = _merged(tmp)
    content = json.loads(sidecar.read_text())
    content["files"]["checkpoint"] = "../runs/base.ckpt"
    content["sha256"]["checkpoint"] = file_sha256(tmp / "runs" / "base.ckpt")
    sidecar.write_text(json.dumps(content))
    merged_checkpoints(str(tmp / "merged"))


def _sidecar_lambda_disagrees(tmp: Path) -> None:
    from lightning_cfgrl.eval.plan import merged_checkpoints

    sidecar = _merged(tmp)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "lambda": 0.25}))
    merged_checkpoints(str(tmp / "merged"))


def _merge_other_spec(tmp: Path) -> None:
    from lightning_cfgrl.cli.merge import merge_checkpoints

    q = _ckpt(tmp / "q.ckpt", generator=tiny_generator(0, num_heads=2))
    d = _ckpt(tmp / "d.ckpt", generator=tiny_generator(1, num_heads=4))
    merge_checkpoints(str(q), str(d), [0.5], str(tmp / "out"))


def _special_file(kind: str) -> Any:
    def build(tmp: Path) -> None:
        path = tmp / "x.ckpt"
        if kind == "fifo":
            os.mkfifo(path)
        else:
            os.symlink(tmp / "y.ckpt", path)
            os.symlink(path, tmp / "y.ckpt")
        load_checkpoint(path)

    return build


CASES: list[Case] = [
    # rule 3: a checkpoint is good only if it is
    _c(
        "finite_loss_nan_gradients",
        "a loss term of value 0 whose gradient is NaN (as JSD gave for a token both models mask)",
        STEP,
        lambda t: _fit(t, 2, [CFGDistillCallback(), _NaNGradient()]),
        FloatingPointError,
        "non-finite gradients at global step 0, before the optimizer step",
    ),
    _c(
        "checkpoint_save_nan_weights",
        "saving a checkpoint of a module whose weights hold NaN",
        "checkpoint save",
        _save_nan_weights,
        FloatingPointError,
        "non-finite weights while saving a checkpoint: generator.heads.bias (64 of 64); refused",
    ),
    # rule 4: the sampler refuses garbage
    _c(
        "sample_nan_logits",
        "sample() from a generator whose logits are NaN (NaN weights)",
        SAMPLE,
        lambda t: sample(_nan_generator(), PROMPT, 4, SamplingConfig(guidance_scale=3.0)),
        NoMassError,
        "sampling refused: at decoding step 0, the logits of AudioTokenTransformer",
    ),
    _c(
        "generate_nan_checkpoint",
        "cfgrl generate / evaluate of a checkpoint with NaN weights",
        LOAD,
        lambda t: __import__("lightning_cfgrl.eval.plan", fromlist=["x"]).load_candidate(
            str(_ckpt(t / "nan.ckpt", generator=_nan_generator()))
        ),
        ValueError,
        "non-finite weights in checkpoint",
    ),
    # rule 1: nothing named in a file imports anything
    _c(
        "hparams_list_spec_imports_a_module",
        "CFGRLModule.load_from_checkpoint of hparams validation: {scorers: [{class_path: this.Scorer}]}",
        LOAD,
        lambda t: CFGRLModule.load_from_checkpoint(
            _ckpt(t / "c.ckpt", validation={"scorers": [{"class_path": "this.Scorer"}]})
        ),
        UnsafeSpecError,
        "refused 'this.Scorer' at validation.scorers[0].class_path of checkpoint",
    ),
    _c(
        "dict_kwargs_spec_imports_a_module",
        "a spec nested in the generator's dict_kwargs naming an unimported module",
        LOAD,
        lambda t: CFGRLModule.load_from_checkpoint(
            _ckpt(t / "c.ckpt", extra={"dict_kwargs": {"x": [{"class_path": "this.Scorer"}]}})
        ),
        UnsafeSpecError,
        "at extra.dict_kwargs.x[0].class_path",
    ),
    # rule 5: a resumed run records what it did
    _c(
        "resume_with_new_learning_rate",
        "Trainer.fit(ckpt_path=last.ckpt) with learning_rate 0.05 where the checkpoint trained with 0.01",
        RESUME,
        _resume_with_new_lr,
        ValueError,
        "resume refused: 1 training setting(s) differ from the checkpoint's: optimization.learning_rate: 0.01 (checkpoint) vs 0.05 (now)",
    ),
    _c(
        "resume_weights_only_checkpoint",
        "Trainer.fit(ckpt_path=) of a merged (weights-only) checkpoint",
        RESUME,
        _resume_weights_only,
        ValueError,
        "holds weights only",
    ),
    # rule 6: outputs never delete inputs
    _c(
        "export_overwrite_into_checkpoint_folder",
        "cfgrl export --overwrite with --out the folder holding --checkpoint",
        WRITE,
        _export_into_checkpoint_folder,
        ValueError,
        "holds an input of this command, the checkpoint",
    ),
    # rule 7: zero work is an error
    _c(
        "zero_training_steps",
        "a prompt batch (64) larger than the training split (36, drop_last)",
        "fit start",
        lambda t: _fit(t, 2, [CFGDistillCallback()], batch=64),
        ValueError,
        "the training data gives zero batches per epoch: a dataset of 36 item(s) in batches of 64 with drop_last=True",
    ),
    # rule 8: merge sidecars confined and consistent
    _c(
        "sidecar_names_the_base_model",
        "a merge sidecar whose checkpoint is '../runs/base.ckpt' (hash matching)",
        LOAD,
        _sidecar_names_base,
        CheckpointError,
        "its checkpoint file '../runs/base.ckpt' is not a plain file name",
    ),
    _c(
        "sidecar_lambda_disagrees",
        "a merge sidecar saying lambda=0.25 beside files that record 0.5",
        LOAD,
        _sidecar_lambda_disagrees,
        CheckpointError,
        "says lambda=0.25, but its",
    ),
    _c(
        "merge_same_shapes_other_spec",
        "cfgrl merge of two generators with equal tensor shapes but num_heads 2 vs 4",
        MERGE,
        _merge_other_spec,
        ValueError,
        "record different generators (init_args.num_heads: 2 vs 4)",
    ),
    # rule 2: stored paths are data
    _c(
        "path_is_a_fifo",
        "a checkpoint path that is a FIFO",
        LOAD,
        _special_file("fifo"),
        CheckpointError,
        "is a FIFO, not a regular file",
    ),
    _c(
        "path_is_a_symlink_loop",
        "a checkpoint path that is a symlink loop",
        LOAD,
        _special_file("loop"),
        CheckpointError,
        "is a symlink loop",
    ),
    # rule 9: Python API types caught where they enter, out-of-range values named
    _c(
        "top_k_float",
        "CFGRLModule(rollout={top_k: 2.5})",
        CONSTRUCT,
        lambda t: CFGRLModule(tiny_generator(), rollout={"num_frames": 8, "top_k": 2.5}),
        TypeError,
        "rollout.top_k must be an integer or None, got 2.5 (float)",
    ),
    _c(
        "num_frames_float",
        "CFGRLModule(rollout={num_frames: 2.5})",
        CONSTRUCT,
        lambda t: CFGRLModule(tiny_generator(), rollout={"num_frames": 2.5}),
        TypeError,
        "rollout.num_frames must be an integer, got 2.5 (float)",
    ),
    _c(
        "learning_rate_string",
        "CFGRLModule(optimization={learning_rate: '1e-3'})",
        CONSTRUCT,
        lambda t: CFGRLModule(
            tiny_generator(), rollout={"num_frames": 8}, optimization={"learning_rate": "1e-3"}
        ),
        TypeError,
        "optimization.learning_rate must be a real number, got '1e-3' (str)",
    ),
    _c(
        "seed_2_pow_70",
        "sample(..., seed=2**70) (cfgrl generate --seed)",
        SAMPLE,
        lambda t: sample(tiny_generator(), PROMPT, 4, seed=2**70),
        ValueError,
        "seed must be an integer in [-2**63, 2**64 - 1]",
    ),
    _c(
        "empty_condition_batch",
        "sample() of a condition batch with 0 prompts",
        SAMPLE,
        lambda t: sample(tiny_generator(), torch.zeros(0, 3, dtype=torch.long), 4),
        ValueError,
        "the condition batch is empty (0 prompts)",
    ),
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_reliability_case(case: Case, tmp_path: Path) -> None:
    try:
        case.build(tmp_path)
    except Exception as err:  # noqa: BLE001 - checked below
        raised: Exception | None = err
    else:
        raised = None
    assert isinstance(raised, case.error), f"{case.id}: expected {case.error.__name__}, got {raised!r}"
    assert case.match in str(raised), f"{case.id}: {_describe(raised, tmp_path)}"
