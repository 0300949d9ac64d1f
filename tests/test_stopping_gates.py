"""Stopping by measurement (PlateauStopping) and the diversity reward's gates: a chance-level embedder is an
error before any step, a dead reward stops the run, a budget run adapts beta and resumes it."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DiversityGradientConfig
from lightning_cfgrl.callbacks import RunCheckpoint
from lightning_cfgrl.core.budget import QualityBudget
from lightning_cfgrl.embedders import ContrastiveEmbedderModule, ContrastiveTokenEmbedder
from lightning_cfgrl.experiments import SyntheticMusicDataModule, SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.training.diversity import DiversityRewardCallback
from lightning_cfgrl.training.prompts import PromptSplit
from lightning_cfgrl.training.reward_gates import RewardGateError, RewardGates
from lightning_cfgrl.training.stopping import Plateau, PlateauStopping, stopped_step
from tests.helpers.models import quiet_trainer
from tests.helpers.tiny_fit import NUM_FRAMES, tiny_embedder, tiny_generator

NO_GRAD_NORM = DiversityGradientConfig(log_norm=False)


class _Curve(pl.LightningModule):
    """Logs ``train/m`` = a given function of the step (and trains a dummy weight): a known curve."""

    def __init__(self, curve) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.curve = curve

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        self.log("train/m", float(self.curve(self.global_step)))
        return (self.w - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):  # a train loader only: no validation split anywhere
        return DataLoader(torch.zeros(10_000, 1), batch_size=1)


def _fit_curve(
    curve, max_steps: int = 400, min_steps: int = 0, **kwargs
) -> tuple[pl.Trainer, PlateauStopping]:
    plateau = Plateau(every_n_train_steps=10, patience=3, smoothing=0.5, min_steps=min_steps)
    stop = PlateauStopping("train/m", plateau=plateau, **kwargs)
    trainer = quiet_trainer(max_steps=max_steps, callbacks=[stop], limit_val_batches=0)
    trainer.fit(_Curve(curve))
    return trainer, stop


def test_plateau_stops_a_flat_metric_after_patience_checks_with_a_train_only_loader(capsys) -> None:
    trainer, stop = _fit_curve(lambda step: 1.0 + 1.0 / (step + 1) if step < 60 else 1.0)
    # improving until ~step 60, then flat: 3 checks (30 steps) without a 1 % gain after the last best
    assert 60 <= stop.stopped_step <= 110
    assert trainer.global_step == stop.stopped_step
    err = capsys.readouterr().err
    assert f"[PlateauStopping] stopped at step {stop.stopped_step} (cap 400)" in err
    assert "did not improve by 1.0% in 3 checks (30 steps)" in err


def test_plateau_does_not_stop_a_metric_that_keeps_improving() -> None:
    trainer, stop = _fit_curve(lambda step: 0.99**step, max_steps=300)
    assert stop.stopped_step is None and trainer.global_step == 300


def test_plateau_respects_min_steps_and_a_threshold_for_max_mode() -> None:
    plateau = Plateau(every_n_train_steps=10, smoothing=0.0)
    stop = PlateauStopping("train/m", mode="max", plateau=plateau, stopping_threshold=0.9)
    trainer = quiet_trainer(max_steps=300, callbacks=[stop], limit_val_batches=0)
    trainer.fit(_Curve(lambda step: step / 100))
    assert stop.stopped_step == 100  # first check above 0.9 (0.9 itself is not > 0.9)
    _, late = _fit_curve(lambda step: 1.0, min_steps=200)
    assert late.stopped_step == 230  # checks start at 200; patience 3 after the first best


def test_stopped_distillation_writes_its_stopping_step_into_last_ckpt(tmp_path: Path) -> None:
    module = CFGRLModule(
        tiny_generator(),
        rollout={"num_frames": NUM_FRAMES, "num_samples_per_prompt": 2},
        optimization={"lr_decay": "constant"},
    )
    plateau = Plateau(every_n_train_steps=3, patience=1, min_improvement=0.5)
    stop = PlateauStopping("train/distill_divergence_per_token", plateau=plateau)
    checkpoint = RunCheckpoint(dirpath=str(tmp_path), save_last=True, save_top_k=0, every_n_train_steps=4)
    trainer = quiet_trainer(
        max_steps=200, callbacks=[CFGDistillCallback(), stop, checkpoint], enable_checkpointing=True
    )
    trainer.fit(
        module, datamodule=SyntheticPromptDataModule(batch_size=2, split=PromptSplit(heldout_fraction=0.0))
    )
    assert stop.stopped_step is not None and stop.stopped_step < 200
    saved = load_checkpoint(tmp_path / "last.ckpt")
    assert saved["global_step"] == stop.stopped_step  # the final state, not the last periodic one
    assert stopped_step(saved) == stop.stopped_step


def test_a_stop_decided_at_validation_after_the_periodic_save_still_reaches_last_ckpt(tmp_path: Path) -> None:
    """The periodic save of step n runs before step n's validation; the stop decided there must not be lost."""
    torch.manual_seed(0)
    embedder = ContrastiveTokenEmbedder(num_codebooks=2, vocab_size=32, dim=16, embed_dim=16, num_layers=1)
    stop = PlateauStopping(
        "val/triplet_accuracy", mode="max", plateau=Plateau(every_n_train_steps=None), stopping_threshold=0.0
    )
    checkpoint = RunCheckpoint(dirpath=str(tmp_path), save_last=True, save_top_k=0, every_n_train_steps=2)
    trainer = quiet_trainer(
        max_steps=50, val_check_interval=2, callbacks=[stop, checkpoint], enable_checkpointing=True
    )
    data = SyntheticMusicDataModule(num_train=512, num_val=32, batch_size=16, seed=1)
    trainer.fit(ContrastiveEmbedderModule(embedder, chunk_frames=8), datamodule=data)
    assert stop.stopped_step == 2
    assert stopped_step(load_checkpoint(tmp_path / "last.ckpt")) == 2


class _ScheduledCurve(_Curve):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def test_lr_drops_lower_the_rate_at_each_plateau_before_the_last_one_stops(capsys) -> None:
    plateau = Plateau(every_n_train_steps=10, patience=3, smoothing=0.0)
    stop = PlateauStopping("train/m", plateau=plateau, lr_drops=2, lr_factor=0.5)
    trainer = quiet_trainer(max_steps=1000, callbacks=[stop], limit_val_batches=0)
    trainer.fit(_ScheduledCurve(lambda step: 1.0))  # flat from the start: every plateau is 3 checks long
    assert stop.drop_steps == [40, 70] and stop.stopped_step == 100
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(
        0.0025, rel=1e-12
    )  # the scheduler kept it
    assert "learning rate x0.5 at steps [40, 70]" in capsys.readouterr().err
    assert PlateauStopping("train/m", lr_drops=1).state_dict()["drop_steps"] == []


# -- the embedder gate ------------------------------------------------------------------------------
def _diversity_fit(
    embedder: nn.Module, max_steps: int = 3, group_size: int = 4, **kwargs
) -> tuple[CFGRLModule, pl.Trainer]:
    module = CFGRLModule(
        tiny_generator(),
        rollout={"num_frames": NUM_FRAMES, "num_samples_per_prompt": group_size},
        optimization={"lr_decay": "constant"},
    )
    callbacks = [CFGDistillCallback(), DiversityRewardCallback(embedder, gradient=NO_GRAD_NORM, **kwargs)]
    trainer = quiet_trainer(max_steps=max_steps, callbacks=callbacks, limit_val_batches=0)
    trainer.fit(module, datamodule=SyntheticPromptDataModule(batch_size=2))
    return module, trainer


def test_chance_level_embedder_is_an_error_before_any_step_naming_the_override() -> None:
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.52
    module = CFGRLModule(
        tiny_generator(),
        rollout={"num_frames": NUM_FRAMES, "num_samples_per_prompt": 4},
        optimization={"lr_decay": "constant"},
    )
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callbacks = [CFGDistillCallback(), DiversityRewardCallback(embedder, beta=1.0, gradient=NO_GRAD_NORM)]
    trainer = quiet_trainer(max_steps=3, callbacks=callbacks, limit_val_batches=0)
    with pytest.raises(RewardGateError, match="triplet accuracy 0.520") as info:
        trainer.fit(module, datamodule=SyntheticPromptDataModule(batch_size=2))
    assert "allow_weak_embedder: true" in str(info.value) and "train the embedder" in str(info.value)
    assert trainer.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_weak_embedder_runs_with_the_override_and_a_beta_zero_run_is_not_gated() -> None:
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.52
    _, trainer = _diversity_fit(embedder, beta=1.0, gates=RewardGates(allow_weak_embedder=True))
    assert trainer.global_step == 3
    _, trainer = _diversity_fit(embedder, beta=0.0)  # only logs the reward
    assert trainer.global_step == 3


def test_embedder_checkpoint_records_its_heldout_accuracy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    embedder = ContrastiveTokenEmbedder(num_codebooks=2, vocab_size=32, dim=16, embed_dim=16, num_layers=1)
    module = ContrastiveEmbedderModule(embedder, chunk_frames=8)
    data = SyntheticMusicDataModule(num_train=64, num_val=64, batch_size=32, seed=1)
    checkpoint = RunCheckpoint(dirpath=str(tmp_path), save_last=True, save_top_k=0)
    trainer = quiet_trainer(max_steps=2, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(module, datamodule=data)
    measured = float(trainer.callback_metrics["val/triplet_accuracy"])
    loaded = ContrastiveTokenEmbedder(checkpoint=str(tmp_path / "last.ckpt"))
    assert loaded.heldout_triplet_accuracy == pytest.approx(measured, abs=1e-7)
    assert ContrastiveTokenEmbedder().heldout_triplet_accuracy is None  # nothing recorded, nothing claimed


def test_embedder_without_a_record_warns_that_the_gate_could_not_check_it() -> None:
    with pytest.warns(UserWarning, match="records no held-out triplet accuracy"):
        _diversity_fit(tiny_embedder(), beta=1.0, max_steps=1)


# -- the dead-reward gate -----------------------------------------------------------------------------
class _ConstantEmbedder(nn.Module):
    """Every sequence embeds to the same vector: every reward is 0, every spread 0."""

    heldout_triplet_accuracy = 0.9  # passes the embedder gate: the reward dies, not the embedder's record

    def forward(self, frames: Tensor) -> Tensor:
        return torch.ones(frames.shape[0], 4)


def test_dead_reward_stops_the_run_with_a_message_naming_the_fix() -> None:
    gates = RewardGates(dead_reward_steps=3)
    with pytest.raises(RewardGateError, match="dead diversity reward at step 2") as info:
        _diversity_fit(_ConstantEmbedder(), beta=1.0, max_steps=50, gates=gates)
    message = str(info.value)
    assert "Fix:" in message and "dead_reward_steps: 0" in message
    # disabled, the same run trains to its cap
    _, trainer = _diversity_fit(
        _ConstantEmbedder(), beta=1.0, max_steps=5, gates=RewardGates(dead_reward_steps=0)
    )
    assert trainer.global_step == 5


def test_pairs_are_not_a_dead_reward() -> None:
    """With G = 2 both samples of a prompt get their one pair's reward (zero spread within a prompt by
    construction); the running-mean baseline compares rewards across the batch, which the gate watches."""
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.9
    gates = RewardGates(dead_reward_steps=3)
    _, trainer = _diversity_fit(embedder, beta=1.0, max_steps=6, group_size=2, gates=gates)
    assert trainer.global_step == 6
    assert float(trainer.callback_metrics["train/reward_group_spread"]) == 0.0


# -- the quality budget -------------------------------------------------------------------------------
def test_budget_run_adapts_beta_logs_it_and_resumes_it() -> None:
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.9
    budget = QualityBudget(max_increase=0.1, reference_steps=2)
    module, trainer = _diversity_fit(embedder, beta=2.0, max_steps=6, quality_budget=budget)
    callback = next(cb for cb in trainer.callbacks if isinstance(cb, DiversityRewardCallback))
    logged = trainer.callback_metrics
    assert float(logged["train/diversity_beta"]) == pytest.approx(callback.beta, rel=1e-6)
    assert callback.controller.reference is not None and callback.beta != 2.0
    state = callback.state_dict()
    fresh = DiversityRewardCallback(embedder, beta=2.0, quality_budget=budget)
    fresh.load_state_dict(state)
    assert fresh.beta == callback.beta and fresh.controller.state_dict() == callback.controller.state_dict()


def test_gain_budget_measures_the_base_kl_with_the_reference_then_stops_asking_for_it() -> None:
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.9
    budget = QualityBudget(max_increase=0.25, relative_to="gain", reference_steps=2)
    module, trainer = _diversity_fit(embedder, beta=2.0, max_steps=4, quality_budget=budget)
    callback = next(cb for cb in trainer.callbacks if isinstance(cb, DiversityRewardCallback))
    distill = next(cb for cb in trainer.callbacks if isinstance(cb, CFGDistillCallback))
    c = callback.controller
    assert c.reference is not None and c.base is not None and math.isfinite(c.base) and c.base > 0
    assert c.target == pytest.approx(c.reference + 0.25 * max(c.base - c.reference, 0.0), rel=1e-12)
    assert float(trainer.callback_metrics["train/budget_kl_base"]) == pytest.approx(c.base, rel=1e-6)
    assert distill.log_base_divergence is False  # measured: the extra KL is no longer computed


def test_budget_exceeded_although_beta_backed_off_stops_the_run() -> None:
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.9
    # a reference far below anything the run reaches: the budget is exceeded from the first step
    budget = QualityBudget(max_increase=0.1, reference_kl=1e-9)
    with pytest.raises(RewardGateError, match="quality budget exceeded at step") as info:
        _diversity_fit(
            embedder, beta=2.0, max_steps=50, quality_budget=budget, gates=RewardGates(over_budget_steps=4)
        )
    assert "init_checkpoint" in str(info.value) and "over_budget_steps: 0" in str(info.value)


def test_budget_needs_the_distillation_metric() -> None:
    embedder = tiny_embedder()
    embedder.heldout_triplet_accuracy = 0.9
    module = CFGRLModule(
        tiny_generator(),
        rollout={"num_frames": NUM_FRAMES, "num_samples_per_prompt": 4},
        optimization={"lr_decay": "constant"},
    )
    callback = DiversityRewardCallback(
        embedder, beta=1.0, quality_budget=QualityBudget(), gradient=NO_GRAD_NORM
    )
    trainer = quiet_trainer(max_steps=2, callbacks=[callback], limit_val_batches=0)
    with pytest.raises(ValueError, match="add CFGDistillCallback"):
        trainer.fit(module, datamodule=SyntheticPromptDataModule(batch_size=2))


def test_budget_and_beta_range_are_refused_together() -> None:
    with pytest.raises(ValueError, match="beta range"):
        DiversityRewardCallback(tiny_embedder(), beta=[0.0, 5.0], quality_budget=QualityBudget())
