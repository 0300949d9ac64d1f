"""LoRA/PEFT students on the reference transformer: the base as teacher (bit for bit), adapters-only
training and checkpoints, the delta merge, the teacher's memory options and gradient checkpointing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, SamplingConfig, TeacherConfig, sample
from lightning_cfgrl.adapters.peft import AdapterDisabledTeacher, import_peft, wrap_peft
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import atomic_save_safetensors
from lightning_cfgrl.io.generators import load_generator
from lightning_cfgrl.training.configs import group_settings
from lightning_cfgrl.training.rollout import RolloutBatch
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import tiny_generator

try:
    import_peft()
except ImportError:
    pytest.skip("peft is not installed (pip install lightning-cfgrl[lora])", allow_module_level=True)

TARGETS = ["qkv", "proj", "mlp.0", "mlp.2", "heads"]
# init_lora_weights=False: B starts random instead of zero, so the adapters change the logits from step 0
LORA = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "init_lora_weights": False}
COND = torch.tensor([[1, 2, 3], [4, 1, 0], [0, 0, 0]])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: a second intra-op thread only adds waiting on a busy 2-core machine."""


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    """The base weights as safetensors: what ``init_checkpoint`` points at, so a rebuilt base matches."""
    path = tmp_path / "base.safetensors"
    atomic_save_safetensors(tiny_generator(0).state_dict(), path)
    return path


def _lora_module(base_file: Path, seed: int = 0, lr: float = 1e-2, **kwargs) -> CFGRLModule:
    torch.manual_seed(100 + seed)  # the adapters' random init
    return CFGRLModule(
        tiny_generator(7),
        init_checkpoint=str(base_file),
        seed=seed,
        peft_config=LORA,
        **group_settings({"num_frames": 8, "learning_rate": lr, **kwargs}),
    )


def _fit(module: CFGRLModule, steps: int = 2, **callback_kwargs):
    callback = CFGDistillCallback(guidance_scale=3.0, **callback_kwargs)
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[callback])
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    return trainer, callback


@pytest.mark.slow  # trains a model
def test_adapter_disabled_teacher_equals_the_base_bit_for_bit(base_file):
    module = _lora_module(base_file)
    base = tiny_generator(0).eval()
    steps = sample(base, COND, 8, SamplingConfig(), seed=0)
    trainer, callback = _fit(module, steps=2)
    student = module.generator.eval()
    assert isinstance(callback.teacher, AdapterDisabledTeacher)
    assert list(callback.teacher.parameters()) == [] and callback.teacher.state_dict() == {}
    with torch.no_grad():
        want = base(steps, COND)
        assert not torch.allclose(student(steps, COND), want, atol=1e-3), "adapters must change the logits"
        assert torch.equal(callback.teacher(steps, COND), want)
        # the callback's CFG teacher logits are the base's cond/null logits mixed at g = 3
        repeated = COND
        mask = base.pattern.valid_mask(steps.shape[2]).expand_as(steps)
        batch = RolloutBatch(steps, repeated, mask, 1, student(steps, repeated), SamplingConfig())
        null = base(steps, torch.zeros_like(COND))
        torch.testing.assert_close(callback.teacher_logits(batch), null + 3.0 * (want - null), rtol=0, atol=0)
    assert student.training is False  # the teacher restored the student's mode (eval here)
    assert any(p.requires_grad for p in student.parameters())  # and did not freeze its adapters


@pytest.mark.slow  # trains a model
def test_only_adapters_are_trained_optimised_and_checkpointed(base_file, tmp_path):
    module = _lora_module(base_file)
    base_state = {k: v.clone() for k, v in tiny_generator(0).state_dict().items()}
    trainer, _ = _fit(module, steps=2)
    generator = module.generator
    lora_params = {id(p) for n, p in generator.named_parameters() if "lora_" in n}
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == lora_params and len(lora_params) == 2 * len(TARGETS)  # A and B per target (1 block)
    # the base is untouched: the wrapped base weights still equal the file's
    dense = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in generator.state_dict().items()
    }
    for key, value in base_state.items():
        assert torch.equal(dense[key], value), key

    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    saved = {k.removeprefix("generator.") for k in ckpt["state_dict"]}
    assert saved == {n for n, p in generator.named_parameters() if "lora_" in n}
    assert ckpt["callbacks"]["CFGDistillCallback"] == {"teacher": {}}  # no teacher in the checkpoint
    assert ckpt["cfgrl_adapters"]["num_tensors"] == len(saved)
    adapter_numel = sum(ckpt["state_dict"][k].numel() for k in ckpt["state_dict"])
    base_numel = sum(v.numel() for v in base_state.values())
    assert adapter_numel < base_numel / 4

    # resume: the base is rebuilt from init_checkpoint, adapters and optimizer from the checkpoint
    resumed = _lora_module(base_file, seed=0)
    trainer2 = quiet_trainer(
        max_steps=3, limit_val_batches=0, callbacks=[CFGDistillCallback(guidance_scale=3.0)]
    )
    trainer2.fit(resumed, SyntheticPromptDataModule(batch_size=4), ckpt_path=path)
    assert trainer2.global_step == 3
    # and load_generator rebuilds the student exactly
    steps = sample(tiny_generator(0), COND, 8, seed=1)
    rebuilt = load_generator(path)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(steps, COND), generator.eval()(steps, COND), rtol=0, atol=0)


@pytest.mark.slow  # trains a model
def test_adapters_on_another_base_are_refused(base_file, tmp_path):
    module = _lora_module(base_file)
    trainer, _ = _fit(module, steps=1)
    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    other = tmp_path / "other.safetensors"
    atomic_save_safetensors(tiny_generator(3).state_dict(), other)
    with pytest.raises(ValueError, match="adapters trained on another base model"):
        CFGRLModule.load_from_checkpoint(path, init_checkpoint=str(other))
    assert CFGRLModule.load_from_checkpoint(path).adapters is not None  # the recorded base loads


@pytest.mark.slow  # trains a model
def test_lora_merge_merges_weight_deltas_not_factors(base_file, tmp_path):
    from lightning_cfgrl.cli.merge import merge_checkpoints
    from lightning_cfgrl.merging import merge_state_dicts

    paths = []
    for seed in (0, 1):
        trainer, _ = _fit(_lora_module(base_file, seed=seed, lr=3e-2), steps=2)
        paths.append(tmp_path / f"student{seed}.ckpt")
        trainer.save_checkpoint(paths[-1])
    lam = 0.3
    written = merge_checkpoints(str(paths[0]), str(paths[1]), [0.0, lam, 1.0], str(tmp_path / "merged"))
    merged = load_generator(written[1].checkpoint)
    assert not hasattr(merged, "peft_config")  # a plain dense generator
    got = merged.state_dict()

    # the dense LERP of the two merged (merge_and_unload) students
    dense = [load_generator(p, merge_adapters=True).state_dict() for p in paths]
    want = merge_state_dicts(dense[0], dense[1], lam)
    assert set(got) == set(want)
    for key in got:
        scale = float(want[key].abs().max()) + 1e-12
        torch.testing.assert_close(
            got[key], want[key], rtol=0, atol=8 * torch.finfo(torch.float32).eps * scale
        )
    for end, index in ((0, 0), (2, 1)):  # lam = 0 and 1 reproduce the merged students exactly
        ends = load_generator(written[end].checkpoint).state_dict()
        assert all(torch.equal(ends[k], dense[index][k]) for k in ends)

    # float64 check from the factors: W0 + (1 - lam) s B1 A1 + lam s B2 A2, and not the factor LERP
    states = [torch.load(p, weights_only=True)["state_dict"] for p in paths]
    base = tiny_generator(0).state_dict()
    key = "blocks.0.attn.qkv"
    a_key, b_key = (f"generator.base_model.model.{key}.lora_{x}.default.weight" for x in "AB")
    factors = [(s[b_key].double(), s[a_key].double()) for s in states]
    s = LORA["lora_alpha"] / LORA["r"]
    delta = (1 - lam) * s * factors[0][0] @ factors[0][1] + lam * s * factors[1][0] @ factors[1][1]
    expected = base[f"{key}.weight"].double() + delta
    tol = 8 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    torch.testing.assert_close(got[f"{key}.weight"].double(), expected, rtol=0, atol=tol)
    lerp_b = (1 - lam) * factors[0][0] + lam * factors[1][0]
    lerp_a = (1 - lam) * factors[0][1] + lam * factors[1][1]
    factor_merge = base[f"{key}.weight"].double() + s * lerp_b @ lerp_a
    assert (factor_merge - expected).abs().max() > 100 * tol, (
        "the factor LERP must differ, or this proves nothing"
    )


def test_teacher_chunks_and_low_precision_teacher_match_the_plain_teacher(base_file):
    module = _lora_module(base_file)
    base = tiny_generator(0).eval()
    condition = COND.repeat_interleave(3, 0)  # N = 9 sequences: chunks of 4 leave a ragged last one
    steps = sample(base, condition, 8, seed=2)
    mask = base.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    batch = RolloutBatch(steps, condition, mask, 3, torch.zeros(0), SamplingConfig())
    teachers = {}
    for name, kwargs in {
        "plain": {},
        "chunked": {"chunk_size": 4},
        "bf16": {"dtype": "bfloat16"},
    }.items():
        callback = CFGDistillCallback(guidance_scale=3.0, teacher=TeacherConfig(**kwargs))
        callback.teacher = AdapterDisabledTeacher(module.generator)
        teachers[name] = callback.teacher_logits(batch)
    assert teachers["plain"].dtype == teachers["bf16"].dtype == torch.float32
    scale = float(teachers["plain"].abs().max())
    # chunking changes only the batch a row is computed in: float32 rounding at most
    torch.testing.assert_close(
        teachers["chunked"], teachers["plain"], rtol=0, atol=16 * torch.finfo(torch.float32).eps * scale
    )
    # bfloat16 keeps 8 mantissa bits: the CFG mix (1 + g = 4 times the logits' error) stays within a few %
    bf16_tol = 4 * 8 * 2.0**-8 * scale
    err = float((teachers["bf16"] - teachers["plain"]).abs().max())
    assert 0 < err < bf16_tol, (err, bf16_tol)


@pytest.mark.slow  # trains a model
def test_full_copy_teacher_can_be_stored_in_bfloat16(base_file):
    module = CFGRLModule(tiny_generator(0), rollout={"num_frames": 8}, optimization={"learning_rate": 1e-2})
    trainer, callback = _fit(module, steps=1, teacher=TeacherConfig(dtype="bfloat16"))
    assert {p.dtype for p in callback.teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.generator.parameters()} == {torch.float32}


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradient_checkpointing_gives_the_same_gradients(dropout):
    grads = []
    for checkpointing in (False, True):
        model = tiny_generator(
            0, options={"dropout": dropout, "gradient_checkpointing": checkpointing}
        ).train()
        steps = sample(tiny_generator(0), COND, 8, seed=3)
        calls = []
        # the block's first layer: recomputation may stop before the block's own hooks run
        model.blocks[0].attn.qkv.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        torch.manual_seed(5)  # the same dropout masks (non-reentrant checkpointing replays them)
        loss = model(steps, COND).float().logsumexp(-1).mean()
        loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in backward: activations were not kept
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        scale = float(grads[0][name].abs().max()) + 1e-12
        torch.testing.assert_close(
            grads[1][name], grads[0][name], rtol=0, atol=16 * torch.finfo(torch.float32).eps * scale
        )
    spec = tiny_generator(0, options={"gradient_checkpointing": True}).spec()
    assert spec["init_args"]["options"]["gradient_checkpointing"] is True


def test_gradient_checkpointing_under_lora_trains_adapters_only():
    model = wrap_peft(tiny_generator(0, options={"gradient_checkpointing": True}), LORA).train()
    steps = sample(tiny_generator(0), COND, 8, seed=3)
    model(steps, COND).float().logsumexp(-1).mean().backward()  # frozen embeddings: no input needs grad
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad} and with_grad


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"peft_config": {"r": 4, "target_modules": ["nope"]}}, ValueError, "among its nn.Linear layers"),
        (
            {"peft_config": {"r": 4, "rank": 4, "target_modules": TARGETS}},
            ValueError,
            r"does not know: \['rank'\]",
        ),
        (
            {"peft_config": {"peft_type": "SOMETHING", "target_modules": TARGETS}},
            ValueError,
            "peft_type must be one of",
        ),
        ({"peft_config": 4}, TypeError, "peft_config must be a dict or a peft.PeftConfig, got int"),
    ],
)
def test_bad_peft_config(kwargs, error, message):
    with pytest.raises(error, match=message):
        CFGRLModule(tiny_generator(0), **group_settings({"num_frames": 8, **kwargs}))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int8"}, "teacher.dtype must be one of"),
        ({"chunk_size": 0}, "teacher.chunk_size must be >= 1 or None"),
    ],
)
def test_bad_teacher_memory_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TeacherConfig(**kwargs)


def test_already_wrapped_generator_is_accepted_and_recorded():
    wrapped = wrap_peft(copy.deepcopy(tiny_generator(0)), {"r": 2, "target_modules": ["qkv"]})
    module = CFGRLModule(wrapped, rollout={"num_frames": 8})
    assert module.generator is wrapped
    assert module.hparams["peft_config"] == {"peft_type": "LORA", "r": 2, "target_modules": ["qkv"]}
    assert module.hparams["generator"]["class_path"].endswith("AudioTokenTransformer")
    with pytest.raises(ValueError, match="already wrapped by peft"):
        CFGRLModule(wrapped, peft_config={"r": 2, "target_modules": ["qkv"]}, rollout={"num_frames": 8})


@pytest.mark.slow  # trains a model
def test_merge_callback_merges_a_lora_student_like_cfgrl_merge(base_file, tmp_path):
    from lightning_cfgrl.callbacks.merge import ModelMergeCallback
    from lightning_cfgrl.cli.merge import merge_checkpoints

    trainer, _ = _fit(_lora_module(base_file, seed=0, lr=3e-2), steps=2)
    anchor = tmp_path / "anchor.ckpt"
    trainer.save_checkpoint(anchor)
    module = _lora_module(base_file, seed=1, lr=3e-2)
    merge = ModelMergeCallback(str(anchor), lambdas=(0.5,), dirpath=str(tmp_path / "by_callback"))
    trainer = quiet_trainer(
        max_steps=2, limit_val_batches=0, callbacks=[CFGDistillCallback(guidance_scale=3.0), merge]
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    current = tmp_path / "current.ckpt"
    trainer.save_checkpoint(current)
    by_cli = merge_checkpoints(str(anchor), str(current), [0.5], str(tmp_path / "by_cli"))[0]
    got = load_generator(merge.written["0.50"])
    want = load_generator(by_cli.checkpoint)
    assert type(got) is type(want) and not hasattr(got, "peft_config")
    for key, value in want.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key


@pytest.mark.slow  # trains a model
def test_reference_transformer_lora_from_yaml(base_file, tmp_path, monkeypatch):
    """The shipped distill.yaml with ``peft_config`` given on the command line: a LoRA student of the
    reference transformer, its checkpoint adapters only."""
    from lightning_cfgrl.cli.main import main

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "distill.yaml"
    args = [
        "fit",
        f"--config={config}",
        f"--model.init_args.init_checkpoint={base_file}",
        '--model.init_args.peft_config={"r": 4, "lora_alpha": 8, "target_modules": ["qkv", "proj", "heads"]}',
        "--model.init_args.generator.init_args.dim=32",
        "--model.init_args.generator.init_args.num_layers=1",
        "--model.init_args.generator.init_args.num_heads=2",
        "--model.init_args.generator.init_args.max_frames=8",
        "--model.init_args.rollout.num_frames=8",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    assert main(args) == 0
    ckpt = tmp_path / "runs" / "distill" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["state_dict"] and all(".lora_" in k for k in state["state_dict"])
    assert state["hyper_parameters"]["peft_config"]["target_modules"] == ["qkv", "proj", "heads"]
    assert load_generator(ckpt).peft_config["default"].r == 4
