"""CFGDistillCallback and CFGRLModule: frozen teacher, resume, bad input, and end-to-end distillation."""

import hashlib

import pytest
import torch

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, SamplingConfig, TeacherConfig, sample
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.rollout import RolloutBatch
from tests.helpers.models import BASE_ARGS, quiet_trainer


def param_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode()), h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _fit(module, callbacks, steps, domain, **trainer_kwargs):
    data = SyntheticPromptDataModule(domain, batch_size=8)
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module, data)
    return trainer


def _rollout_batch(module, condition, group_size=2):
    steps = module.rollout(condition, group_size, SamplingConfig(), seed=0)
    repeated = condition.repeat_interleave(group_size, 0)
    mask = module.generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    return RolloutBatch(
        steps, repeated, mask, group_size, module.generator(steps, repeated), SamplingConfig()
    )


@pytest.mark.slow  # trains a model
def test_guidance_one_gives_zero_divergence_at_step_zero(pretrained_base, domain):
    module = CFGRLModule(pretrained_base, rollout={"num_frames": 32})
    callback = CFGDistillCallback(guidance_scale=1.0)
    callback.setup(None, module, "fit")
    terms = callback.loss_terms(module, _rollout_batch(module, domain.prompts[:6]))
    assert abs(terms["distill"].item()) < 1e-5
    callback3 = CFGDistillCallback(guidance_scale=3.0)
    callback3.setup(None, module, "fit")
    # KL per generated token (reduction="mean"); measured 0.19, against < 1e-5 at g = 1
    assert callback3.loss_terms(module, _rollout_batch(module, domain.prompts[:6]))["distill"].item() > 0.05


@pytest.mark.slow  # trains a model
def test_teacher_frozen_student_trained(pretrained_base, domain):
    module = CFGRLModule(pretrained_base, rollout={"num_frames": 32}, optimization={"learning_rate": 1e-3})
    callback = CFGDistillCallback(guidance_scale=3.0)
    before = param_hash(pretrained_base)
    trainer = _fit(module, [callback], 5, domain)
    assert param_hash(callback.teacher) == before, "teacher parameters changed"
    assert param_hash(module.generator) != before, "student did not change"
    assert all(not p.requires_grad for p in callback.teacher.parameters())
    assert not callback.teacher.training
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in callback.teacher.parameters()}


@pytest.mark.slow  # trains a model
def test_resume_restores_original_teacher_not_current_student(pretrained_base, domain, tmp_path):
    base_hash = param_hash(pretrained_base)
    module = CFGRLModule(pretrained_base, rollout={"num_frames": 32}, optimization={"learning_rate": 1e-3})
    trainer = _fit(module, [CFGDistillCallback()], 4, domain, default_root_dir=tmp_path)
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    # resume into a module built from *random* weights: the teacher must still be the original base
    fresh = CFGRLModule(
        AudioTokenTransformer(**BASE_ARGS), rollout={"num_frames": 32}, optimization={"learning_rate": 1e-3}
    )
    callback = CFGDistillCallback()
    data = SyntheticPromptDataModule(domain, batch_size=8)
    quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=[callback]).fit(fresh, data, ckpt_path=ckpt)
    assert param_hash(callback.teacher) == base_hash


@pytest.mark.slow  # trains a model
def test_loaded_checkpoint_rebuilds_generator(pretrained_base, domain, tmp_path):
    module = CFGRLModule(pretrained_base, rollout={"num_frames": 32})
    trainer = _fit(module, [CFGDistillCallback()], 2, domain, default_root_dir=tmp_path)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = CFGRLModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert param_hash(loaded.generator) == param_hash(module.generator)
    assert isinstance(loaded.generator, AudioTokenTransformer)


@pytest.mark.slow  # trains a model
def test_teacher_vocab_or_codebook_mismatch_is_reported(pretrained_base, domain, tmp_path):
    for override, message in (
        (dict(vocab_size=16), "teacher vocab_size=16 does not match the student's vocab_size=32"),
        (dict(num_codebooks=3), "teacher num_codebooks=3 does not match the student's num_codebooks=2"),
    ):
        other = CFGRLModule(AudioTokenTransformer(**{**BASE_ARGS, **override}), rollout={"num_frames": 8})
        trainer = _fit(other, [CFGDistillCallback()], 1, domain, default_root_dir=tmp_path)
        trainer.save_checkpoint(tmp_path / "other.ckpt")
        module = CFGRLModule(pretrained_base, rollout={"num_frames": 8})
        callback = CFGDistillCallback(teacher=TeacherConfig(checkpoint=str(tmp_path / "other.ckpt")))
        with pytest.raises(ValueError, match=message):
            callback.setup(None, module, "fit")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(guidance_scale=-1.0), "guidance_scale must be a finite number >= 0, got -1.0"),
        (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number >= 0, got nan"),
        (dict(divergence="l2"), "divergence must be one of"),
        (dict(reduction="max"), "reduction must be 'sum' or 'mean', got 'max'"),
    ],
)
def test_bad_distill_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CFGDistillCallback(**kwargs)


@pytest.mark.slow  # trains a model
def test_module_without_objective_or_with_bad_batch(pretrained_base, domain):
    with pytest.raises(ValueError, match="found no objective callback"):
        _fit(CFGRLModule(pretrained_base, rollout={"num_frames": 8}), [], 1, domain)
    with pytest.raises(ValueError, match="expects batches as dicts with a 'condition' entry"):
        CFGRLModule(pretrained_base, rollout={"num_frames": 8}).training_step(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        CFGRLModule(pretrained_base, rollout={"num_frames": 0})


def _adherence(generator, domain, prompts, config, num_samples=16):
    frames = generator.pattern.steps_to_frames(
        sample(generator, prompts, 32, config, num_samples=num_samples, seed=1)
    )
    return domain.prompt_log_posterior(frames, prompts.repeat_interleave(num_samples, 0)).mean().item()


@pytest.mark.slow
def test_end_to_end_distillation_closes_the_cfg_gap(pretrained_base, domain):
    """Distil guidance 3 into the student (150 steps): the divergence falls by >= 50 % and the student,
    sampled without CFG, closes >= half the adherence gap between the base without and with CFG."""
    torch.manual_seed(0)
    module = CFGRLModule(
        pretrained_base,
        rollout={"num_frames": 32, "num_samples_per_prompt": 2},
        optimization={"learning_rate": 3e-4},
    )
    callback = CFGDistillCallback(guidance_scale=3.0)

    history, original = [], callback.loss_terms

    def recording(pl_module, batch):
        terms = original(pl_module, batch)
        history.append(terms["distill"].item())
        return terms

    callback.loss_terms = recording
    _fit(module, [callback], 150, domain)
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last <= 0.5 * first, (first, last)

    heldout = SyntheticPromptDataModule(domain).heldout_prompts
    base_plain = _adherence(callback.teacher, domain, heldout, SamplingConfig())
    base_cfg = _adherence(callback.teacher, domain, heldout, SamplingConfig(guidance_scale=3.0))
    student = _adherence(module.generator.eval(), domain, heldout, SamplingConfig())
    assert student - base_plain >= 0.5 * (base_cfg - base_plain), (base_plain, base_cfg, student)


@pytest.mark.slow  # trains a model
def test_non_finite_loss_stops_the_run_naming_step_and_term(pretrained_base, domain, tmp_path):
    module = CFGRLModule(pretrained_base, rollout={"num_frames": 8}, optimization={"learning_rate": 1e-3})
    callback = CFGDistillCallback()
    original = callback.loss_terms

    def poisoned(pl_module, batch):
        terms = original(pl_module, batch)
        return {"distill": terms["distill"] * float("nan")} if pl_module.global_step == 2 else terms

    callback.loss_terms = poisoned
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True)
    trainer = quiet_trainer(
        max_steps=5, limit_val_batches=0, callbacks=[callback, ckpt], enable_checkpointing=True
    )
    with pytest.raises(FloatingPointError, match=r"non-finite loss at global step 2: term\(s\) distill=nan"):
        trainer.fit(module, SyntheticPromptDataModule(domain, batch_size=4))
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # the checkpoint of the last good step is intact and loadable
    weights = {k.removeprefix("generator."): v for k, v in last["state_dict"].items()}
    assert all(torch.equal(weights[k], v) for k, v in module.generator.state_dict().items())


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_guidance_zero_or_one_runs_one_teacher_pass(scale):
    """At g = 1 (or 0) CFG returns the conditional (unconditional) logits exactly: the teacher runs only
    that half, a batch of N instead of 2N, with the same logits as the two-pass mix (up to float
    rounding of a different batch size)."""
    torch.manual_seed(0)
    module = CFGRLModule(AudioTokenTransformer(**BASE_ARGS), rollout={"num_frames": 8})
    callback = CFGDistillCallback(guidance_scale=scale)
    callback.setup(None, module, "fit")
    condition = torch.tensor([[1, 2, 3], [4, 1, 2], [2, 2, 1]])
    batch = _rollout_batch(module, condition)
    batches = []
    callback.teacher.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    one_pass = callback.teacher_logits(batch)
    assert batches == [batch.steps.shape[0]]
    cond, uncond = callback.teacher_forward(batch.steps, batch.condition)
    torch.testing.assert_close(one_pass, uncond if scale == 0.0 else cond, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 2])
def test_base_divergence_is_the_teachers_own_conditional_against_its_cfg_mix(chunk):
    """For a gain-relative quality budget: with ``log_base_divergence`` the callback also logs the KL of the
    teacher's conditional logits (the base, no guidance) from its CFG mix, per token, on the same
    rollouts; computed from the one CFG forward (whole batch or chunks) and equal to the written-out KL."""
    from lightning_cfgrl.core.divergences import token_divergence
    from lightning_cfgrl.core.guidance import cfg_logits
    from lightning_cfgrl.training.distill import BASE_DIVERGENCE_METRIC

    torch.manual_seed(0)
    module = CFGRLModule(AudioTokenTransformer(**BASE_ARGS), rollout={"num_frames": 8})
    callback = CFGDistillCallback(guidance_scale=3.0, teacher=TeacherConfig(chunk_size=chunk))
    callback.setup(None, module, "fit")
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    batch = _rollout_batch(module, torch.tensor([[1, 2, 3], [4, 1, 2], [2, 2, 1]]))
    callback.loss_terms(module, batch)
    assert BASE_DIVERGENCE_METRIC not in logged  # off unless a budget asks for it
    callback.log_base_divergence = True
    callback.loss_terms(module, batch)
    cond, uncond = callback.teacher_forward(batch.steps, batch.condition)
    per_token = token_divergence(cond.double(), cfg_logits(cond, uncond, 3.0).double(), "reverse_kl")
    want = (per_token * batch.mask).sum() / batch.mask.sum()
    assert logged[BASE_DIVERGENCE_METRIC] == pytest.approx(float(want), rel=1e-5)
    assert logged[BASE_DIVERGENCE_METRIC] > 0
