"""What on-policy training assumes, and the recipe's training-step options: dropout off for the fit
(the gradient pass scores exactly the rollout's log-probs), teacher-sampled rows (GKD's mix), and the
learning-rate warm-up and decay."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from torch import nn

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, SamplingConfig, sample
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.experimental import TeacherMixDistillCallback
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.configs import group_settings
from lightning_cfgrl.training.dropout import disable_dropout, restore_dropout
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.optimization import WarmupDecayLR, check_schedule
from tests.conftest import BASE_ARGS, quiet_trainer


class Spy(ObjectiveCallback):
    """Keeps every RolloutBatch it is shown and contributes a zero loss term."""

    def __init__(self) -> None:
        self.batches = []

    def loss_terms(self, pl_module, batch):
        self.batches.append(batch)
        return {"spy": 0.0 * batch.student_logits.sum()}


def _fit(generator, callbacks, steps=1, **module_kwargs):
    module = CFGRLModule(
        generator, **group_settings({"num_frames": 16, "num_samples_per_prompt": 2, **module_kwargs})
    )
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=callbacks)
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    return module, trainer


def _eval_logprobs(generator, batch) -> torch.Tensor:
    """``[N, K, S]`` log-probs of the rollout's tokens under the generator in eval mode (the sampler's)."""
    generator.eval()
    with torch.no_grad():
        logp = torch.log_softmax(generator(batch.steps, batch.condition).float(), -1)
    picked = logp.gather(-1, batch.steps.clamp(max=logp.shape[-1] - 1)[..., None])[..., 0]
    return torch.where(batch.mask, picked, torch.zeros_like(picked))


@pytest.mark.slow  # trains a model
def test_gradient_pass_reproduces_the_rollout_logprobs_exactly_with_dropout_disabled() -> None:
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**BASE_ARGS, options={"dropout": 0.3})
    spy = Spy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the first-step check finds nothing to warn about
        warnings.filterwarnings(
            "ignore", message=".*(does not have many workers|smaller than the logging|eval mode).*"
        )
        _fit(generator, [spy], steps=2)
    for batch in spy.batches:
        # the gradient pass ran in train mode; the sampler in eval mode: identical, bit for bit
        assert torch.equal(batch.token_logprobs.detach(), _eval_logprobs(generator, batch))
    assert all(block.dropout.p == 0.3 for block in generator.blocks)  # restored at fit end

    # the same fit with dropout left on scores other log-probs: the check above can fail
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**BASE_ARGS, options={"dropout": 0.3})
    spy = Spy()
    _fit(generator, [spy], steps=1, disable_dropout=False)
    gap = (spy.batches[0].token_logprobs.detach() - _eval_logprobs(generator, spy.batches[0])).abs().max()
    assert gap > 1e-2


@pytest.mark.slow  # trains a model
def test_the_rollout_is_the_eval_mode_sampler_draw_of_the_same_weights() -> None:
    """What the first test compares against is what was sampled: the rollout of step 0 is the seeded
    sampler's draw from the student in eval mode (the spy's zero loss leaves the weights unchanged)."""
    torch.manual_seed(0)
    generator = AudioTokenTransformer(**BASE_ARGS, options={"dropout": 0.3})
    spy = Spy()
    module, _ = _fit(generator, [spy], steps=1, seed=7)
    batch = spy.batches[0]
    prompts = batch.condition[:: module.group_size]
    seed = 7 * 1_000_003  # CFGRLModule._rollout_seed at global step 0, rank 0, salt 0
    steps = sample(generator.eval(), prompts, 16, SamplingConfig(), num_samples=2, seed=seed)
    assert torch.equal(steps, batch.steps)


class _ConditionDropout(nn.Module):
    """A model whose own condition dropout (not an nn.Dropout) stays active in train mode."""

    def __init__(self, inner: AudioTokenTransformer) -> None:
        super().__init__()
        self.inner = inner
        self.num_codebooks, self.vocab_size, self.pattern = (
            inner.num_codebooks,
            inner.vocab_size,
            inner.pattern,
        )
        self.max_steps = inner.max_steps

    def forward(self, steps, condition, cache=None):
        if self.training:
            condition = torch.where(
                torch.rand(condition.shape[0], 1) < 0.5, torch.zeros_like(condition), condition
            )
        return self.inner(steps, condition, cache)

    def new_cache(self, *args, **kwargs):
        return self.inner.new_cache(*args, **kwargs)

    def null_condition(self, condition):
        return self.inner.null_condition(condition)


def test_mode_dependent_behaviour_left_in_the_model_is_an_error() -> None:
    torch.manual_seed(0)
    generator = _ConditionDropout(AudioTokenTransformer(**BASE_ARGS))
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"train-mode logits differ from its eval-mode logits by up to .*_ConditionDropout"
    ):
        _fit(generator, [Spy()], steps=2)
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # stopped before any optimizer step


def test_disable_dropout_covers_hf_style_float_attributes_and_restores_them() -> None:
    class Layer(nn.Module):  # what Hugging Face decoder layers look like
        def __init__(self) -> None:
            super().__init__()
            self.dropout, self.activation_dropout, self.layerdrop = 0.1, 0.2, 0.05
            self.attention_dropout = 0.0  # already off: left alone
            self.drop = nn.Dropout(0.4)
            self.embed_dim = 8  # not a dropout

    model = nn.Sequential(Layer(), Layer())
    saved = disable_dropout(model)
    assert len(saved) == 2 * 4
    for layer in model:
        assert (layer.dropout, layer.activation_dropout, layer.layerdrop, layer.drop.p) == (
            0.0,
            0.0,
            0.0,
            0.0,
        )
        assert layer.embed_dim == 8
    restore_dropout(saved)
    assert [(m.dropout, m.activation_dropout, m.layerdrop, m.drop.p) for m in model] == [
        (0.1, 0.2, 0.05, 0.4)
    ] * 2


@pytest.mark.slow  # trains a model
def test_teacher_fraction_adds_cfg_teacher_samples_after_the_on_policy_rows(pretrained_base) -> None:
    spy = Spy()
    distill = TeacherMixDistillCallback(guidance_scale=3.0, teacher_fraction=0.2)
    module, _ = _fit(pretrained_base, [distill, spy], steps=1)
    batch = spy.batches[0]
    # 4 prompts x G = 2 on-policy rows, then round(0.2 * 8 / 0.8) = 2 teacher rows (prompts 0 and 1)
    assert batch.steps.shape[0] == 10 and batch.num_on_policy == 8 and batch.num_prompts == 4
    prompts = batch.condition[:8:2]
    assert torch.equal(batch.condition[8:], prompts[:2])
    # seeded like the rollout, salt 200 + the objective's index (0: the first objective), global step 0
    teacher_rows = sample(distill.teacher, prompts[:2], 16, SamplingConfig(guidance_scale=3.0), seed=200)
    assert torch.equal(batch.steps[8:], teacher_rows)
    assert torch.equal(batch.condition[:8], repeat_condition(prompts, 2))
    with pytest.raises(ValueError, match=r"teacher_fraction must be in \[0, 1\), got 1.0"):
        TeacherMixDistillCallback(teacher_fraction=1.0)


def _reference_factor(warmup: int, total: int, decay: str, step: int) -> float:
    """The schedule in closed form (float64): linear warm-up (s + 1) / w, then cosine/linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress


def _lrs(scheduler_of, steps: int, base: float = 3e-3) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=base)
    scheduler = scheduler_of(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "warmup, total, decay",
    [
        (4, 20, "cosine"),
        (0, 10, "linear"),
        (3, 10, "constant"),
        (1, 50, "cosine"),
        (10, 1000, "cosine"),
        (7, 300, "linear"),
        (5, 5, "cosine"),
        (0, 100, "cosine"),
        (2, 6, "cosine"),
    ],
)
def test_warmup_then_cosine_or_linear_decay(warmup, total, decay) -> None:
    got = _lrs(lambda opt: WarmupDecayLR(opt, warmup, total, decay), total)
    expected = [3e-3 * _reference_factor(warmup, total, decay, s) for s in range(total)]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-17)


def test_schedule_checks_and_known_values() -> None:
    got = _lrs(lambda opt: WarmupDecayLR(opt, 4, 20, "cosine"), 13, base=1.0)
    assert got[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0], rel=1e-14)
    assert got[8] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), rel=1e-14)
    assert got[12] == pytest.approx(0.5, rel=1e-14)
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        check_schedule(0, "step")
    with pytest.raises(ValueError, match="lr_warmup_steps must be >= 0"):
        check_schedule(-1, "cosine")


def test_a_lambda_lr_state_resumes_on_the_same_schedule() -> None:
    # checkpoints written before the schedule was built from torch's schedulers hold a LambdaLR state
    factor = functools.partial(_reference_factor, 3, 12, "cosine")
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    old_opt = torch.optim.SGD([param], lr=2e-3)
    old = torch.optim.lr_scheduler.LambdaLR(old_opt, factor)
    for _ in range(5):
        old_opt.step()
        old.step()
    new_opt = torch.optim.SGD([param], lr=2e-3)
    new = WarmupDecayLR(new_opt, 3, 12, "cosine")
    new_opt.load_state_dict(old_opt.state_dict())
    new.load_state_dict(old.state_dict())
    lrs = []
    for _ in range(7):
        lrs.append(new_opt.param_groups[0]["lr"])
        new_opt.step()
        new.step()
    assert lrs == pytest.approx([2e-3 * factor(s) for s in range(5, 12)], rel=1e-12, abs=1e-17)


@pytest.mark.slow  # trains a model
def test_module_follows_the_schedule(pretrained_base) -> None:
    seen: list[float] = []

    class LR(ObjectiveCallback):
        def loss_terms(self, pl_module, batch):
            seen.append(pl_module.trainer.optimizers[0].param_groups[0]["lr"])
            return {"lr_probe": 0.0 * batch.student_logits.sum()}

    _fit(
        pretrained_base,
        [CFGDistillCallback(), LR()],
        steps=6,
        learning_rate=1e-3,
        lr_warmup_steps=2,
        lr_decay="cosine",
    )
    expected = [1e-3 * _reference_factor(2, 6, "cosine", s) for s in range(6)]
    assert seen == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        CFGRLModule(pretrained_base, optimization={"lr_decay": "exponential"})
