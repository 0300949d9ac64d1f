"""Rules 3 and 4: a checkpoint is good only if it is; the sampler refuses garbage.

* every divergence has finite gradients wherever its loss is finite, for any masking (sweep);
* a finite loss with NaN gradients stops the run before the optimizer step (one fused norm), and the
  last checkpoint is then the last good step; non-finite weights are never saved nor trained from;
* a decoding step whose logits row has no finite positive mass raises, naming step, row, generator;
* a zero-probability token is never drawn, in float32, float64 and bfloat16, for extreme uniforms.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_cfgrl import CFGDistillCallback, CFGRLModule
from lightning_cfgrl.core.divergences import DIVERGENCES, token_divergence
from lightning_cfgrl.core.finite import check_finite_weights
from lightning_cfgrl.core.sampling import NoMassError, SamplingConfig, _draw, sample
from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.training.finite_guard import last_good_note
from lightning_cfgrl.training.objective import ObjectiveCallback
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import TINY_ARGS, tiny_generator

PROMPTS = torch.tensor([[1, 1, 1], [2, 3, 1], [4, 2, 2], [3, 4, 3]])


# ------------------------------------------------------------------------------ divergences (rule 3)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_every_divergence_has_finite_gradients_wherever_its_loss_is_finite(kind: str) -> None:
    """Sweep of maskings: per row, each token is masked in the student, the teacher, both or neither
    (all 4^V patterns for V = 4, float64); a finite loss must come with finite gradients."""
    v = 4
    patterns = torch.tensor(list(itertools.product(range(4), repeat=v)))  # [256, V]: 0 none, 1 s, 2 t, 3 both
    torch.manual_seed(0)
    student = torch.randn(len(patterns), v, dtype=torch.float64)
    teacher = torch.randn(len(patterns), v, dtype=torch.float64)
    s_mask, t_mask = (patterns == 1) | (patterns == 3), (patterns == 2) | (patterns == 3)
    s = student.masked_fill(s_mask, float("-inf")).requires_grad_()
    t = teacher.masked_fill(t_mask, float("-inf"))
    loss = token_divergence(s, t, kind)  # [256]
    finite = torch.isfinite(loss)
    loss[finite].sum().backward()
    rows_ok = torch.isfinite(s.grad).all(-1)
    both_masked = (patterns == 3).any(-1) & finite
    assert int(both_masked.sum()) > 20  # the sweep does cover "a token both mask" with a finite loss
    assert bool(rows_ok[finite].all()), (
        f"{kind}: NaN gradient on rows {finite.logical_and(~rows_ok).nonzero()}"
    )
    masked = s.grad[finite][s_mask[finite]]
    assert torch.equal(masked, torch.zeros_like(masked))  # a masked logit gets no gradient


class _MasksLastToken(AudioTokenTransformer):
    """A model that never emits token V - 1 (its logit is -inf): student and teacher both mask it."""

    def forward(self, steps: Tensor, condition: Any, cache: Any = None, **kw: Any) -> Tensor:
        logits = super().forward(steps, condition, cache, **kw)
        return logits.index_fill(-1, torch.tensor([logits.shape[-1] - 1]), float("-inf"))


def test_jsd_distillation_with_a_token_both_mask_trains_and_saves_finite_weights(tmp_path: Path) -> None:
    """The issue's example: JSD with a token masked by student and teacher gave NaN gradients, AdamW
    wrote NaN into the weights and last.ckpt held them."""
    torch.manual_seed(0)
    module = CFGRLModule(
        _MasksLastToken(**TINY_ARGS),
        rollout={"num_frames": 8},
        optimization={"learning_rate": 1e-2, "lr_warmup_steps": 0},
    )
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[
            CFGDistillCallback(guidance_scale=3.0, divergence="jsd"),
            ModelCheckpoint(dirpath=tmp_path, save_last=True),
        ],
    )
    trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    assert trainer.global_step == 3
    state = load_checkpoint(tmp_path / "last.ckpt")["state_dict"]
    assert all(bool(torch.isfinite(v).all()) for v in state.values())
    before = tiny_generator().state_dict()  # the weights did move: the gradients were used, not zero
    assert any(not torch.equal(state[f"generator.{k}"], v) for k, v in before.items())


# ----------------------------------------------------------------------------- gradient check (rule 3)


class _NaNGradientAt(ObjectiveCallback):
    """A loss term whose value is 0 (finite) and whose gradient is NaN, from global step ``at`` on."""

    name = "nan_grad"

    def __init__(self, at: int) -> None:
        self.at = at

    def loss_terms(self, pl_module: CFGRLModule, batch: Any) -> dict[str, Tensor]:
        x = batch.student_logits.float().sum() * 0.0
        # d sqrt(u)/du at u = 0 is inf, times du/dlogits = 0: NaN, behind a value of exactly 0
        return {self.name: torch.sqrt(x) if pl_module.global_step >= self.at else x}


def test_nan_gradients_behind_a_finite_loss_stop_before_the_optimizer_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = CFGRLModule(tiny_generator(), rollout={"num_frames": 8}, optimization={"learning_rate": 1e-2})
    trainer = quiet_trainer(
        max_steps=5,
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[
            CFGDistillCallback(),
            _NaNGradientAt(2),
            ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True),
        ],
    )
    with pytest.raises(
        FloatingPointError, match="non-finite gradients at global step 2, before the optimizer"
    ):
        trainer.fit(module, SyntheticPromptDataModule(batch_size=4))
    last = load_checkpoint(tmp_path / "last.ckpt")
    assert last["global_step"] == 2  # the checkpoint of the last good step
    for name, value in module.generator.state_dict().items():  # the failing step never stepped
        assert torch.equal(last["state_dict"][f"generator.{name}"], value), name
        assert bool(torch.isfinite(value).all()), name
    # and it resumes: the next step trains (the NaN objective removed)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, callbacks=[CFGDistillCallback()])
    trainer.fit(
        CFGRLModule(tiny_generator(), rollout={"num_frames": 8}, optimization={"learning_rate": 1e-2}),
        SyntheticPromptDataModule(batch_size=4),
        ckpt_path=str(tmp_path / "last.ckpt"),
    )
    assert trainer.global_step == 3


def _poison(module: torch.nn.Module) -> None:
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] = float("nan")


def test_non_finite_weights_are_never_saved_nor_trained_from(tmp_path: Path) -> None:
    module = CFGRLModule(tiny_generator(), rollout={"num_frames": 8})
    _poison(module)
    with pytest.raises(
        FloatingPointError, match=r"non-finite weights while saving a checkpoint: generator\."
    ):
        module.on_save_checkpoint({})
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[CFGDistillCallback()])
    with pytest.raises(FloatingPointError, match="non-finite weights at train start"):
        trainer.fit(module, SyntheticPromptDataModule(batch_size=4))


def test_every_last_good_message_is_true() -> None:
    """The note says "good" only when the weights are finite, checked when the message is written."""
    module = CFGRLModule(tiny_generator(), rollout={"num_frames": 8})
    assert "the last checkpoint is a good one" in last_good_note(module)
    _poison(module)
    note = last_good_note(module)
    assert "already non-finite" in note and "good one" not in note
    check_finite_weights(CFGRLModule(tiny_generator(), rollout={"num_frames": 8}), "now")  # finite: no error


# ------------------------------------------------------------------------------------ sampler (rule 4)


class _GarbageAt(AudioTokenTransformer):
    """Writes ``value`` over the whole logits row of (sequence ``row``, codebook ``codebook``) at decoding
    step ``step`` (the cached call that produces it)."""

    def __init__(self, value: float, step: int, row: int, codebook: int) -> None:
        torch.manual_seed(0)
        super().__init__(**TINY_ARGS)
        self.value, self.step, self.row, self.codebook = value, step, row, codebook

    def forward(self, steps: Tensor, condition: Any, cache: Any = None, **kw: Any) -> Tensor:
        logits = super().forward(steps, condition, cache, **kw)
        if steps.shape[2] == self.step + 1:
            logits = logits.clone()
            logits[self.row, self.codebook, -1] = self.value
            if self.value == float("inf"):  # one +inf token is enough to break softmax
                logits[self.row, self.codebook, -1, 1:] = 0.0
        return logits


SAMPLINGS = {
    "plain": SamplingConfig(),
    "cfg": SamplingConfig(guidance_scale=3.0),
    "temperature": SamplingConfig(temperature=0.7),
    "top_k": SamplingConfig(top_k=5),
    "top_p": SamplingConfig(top_p=0.9),
    "all": SamplingConfig(temperature=0.5, top_k=8, top_p=0.8, guidance_scale=2.0),
}


@pytest.mark.parametrize(
    "value", [float("nan"), float("-inf"), float("inf")], ids=["nan", "neg_inf", "pos_inf"]
)
@pytest.mark.parametrize("config", sorted(SAMPLINGS))
def test_sampler_refuses_a_row_without_mass_naming_step_row_and_generator(value: float, config: str) -> None:
    generator = _GarbageAt(value, step=3, row=1, codebook=1).eval()
    with pytest.raises(NoMassError) as err:
        sample(generator, PROMPTS[:2], num_frames=6, config=SAMPLINGS[config], num_samples=1, seed=0)
    message = str(err.value)
    assert "at decoding step 3" in message and "(sequence 1, codebook 1)" in message, message
    assert "_GarbageAt" in message and "in 1 row(s)" in message, message


def test_sampler_refuses_nan_weights_as_generate_and_evaluate_see_them(tmp_path: Path) -> None:
    generator = tiny_generator().eval()
    with torch.no_grad():
        generator.heads.bias.fill_(float("nan"))  # what every logit goes through
    with pytest.raises(NoMassError, match="at decoding step 0, the logits of AudioTokenTransformer"):
        sample(generator, PROMPTS[:2], num_frames=4, seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("uniform_dtype", [torch.float32, torch.float64])
def test_zero_probability_tokens_are_never_drawn(dtype: torch.dtype, uniform_dtype: torch.dtype) -> None:
    """Rows of 32 tokens with random masks (first and last tokens included), drawn with the extreme
    uniforms (0 and the largest below 1 of the uniforms' dtype) and random ones."""
    g = torch.Generator().manual_seed(0)
    rows, v = 512, 32
    logits = (torch.randn(rows, v, generator=g) * 4).to(dtype)
    mask = torch.rand(rows, v, generator=g) < 0.6
    mask[0::4, -1] = True  # the last token masked: where rounding used to land
    mask[1::4, 0] = True
    mask[2::4, 1:] = True  # only token 0 left
    mask[3::4, :-1] = True  # only token V-1 left
    mask[torch.arange(rows), torch.randint(v, (rows,), generator=g)] = False  # every row keeps a token
    logits = logits.masked_fill(mask, float("-inf"))
    largest = torch.nextafter(torch.tensor(1.0, dtype=uniform_dtype), torch.tensor(0.0, dtype=uniform_dtype))
    for uniforms in (
        torch.zeros(rows, dtype=uniform_dtype),
        largest.expand(rows),
        torch.rand(rows, generator=g, dtype=uniform_dtype),
    ):
        ids = _draw(logits, uniforms)
        assert not bool(mask[torch.arange(rows), ids].any()), f"masked token drawn ({dtype}, {uniform_dtype})"


def test_a_tiny_but_positive_mass_is_still_drawable_in_float64() -> None:
    """float64 logits keep float64 probabilities: a logit of 800 above the others does not overflow."""
    logits = torch.tensor([[800.0, 0.0, float("-inf")]], dtype=torch.float64)
    assert _draw(logits, torch.tensor([0.5])).tolist() == [0]
    huge = torch.tensor([[1e300, 0.0]], dtype=torch.float64)  # inf in float32: the old CDF was NaN
    assert _draw(huge, torch.tensor([0.99])).tolist() == [0]
