"""Gates of the diversity reward: conditions under which an RL run would only learn noise, checked by
``DiversityRewardCallback`` and turned into errors that name the fix.

* a reward embedder near chance (its recorded held-out triplet accuracy), before any RL step;
* a dead reward: every prompt's G samples score (nearly) the same, so every advantage is noise;
* a quality budget the run keeps exceeding although beta has backed off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn


class RewardGateError(RuntimeError):
    """A diversity run stopped by one of its gates (the message names the value, the fix and the override)."""


@dataclass
class RewardGates:
    """When a diversity run refuses to start or stops (only when the reward is trained on: beta > 0,
    a beta range or a quality budget).

    Args:
        min_embedder_accuracy: the reward embedder's held-out triplet accuracy (chance 0.5) must be at
            least this; checked before the first step, read from what its checkpoint recorded
            (``heldout_triplet_accuracy``).
        allow_weak_embedder: the override: train on an embedder below ``min_embedder_accuracy``, or one
            that records no accuracy, anyway.
        dead_reward_steps: stop after this many consecutive steps whose reward spread (what the
            advantages compare: the std of a prompt's G rewards with the ``other_pairs`` baseline, of the
            batch's rewards with the others) is below ``dead_reward_spread`` (0: never).
        dead_reward_spread: the spread below which a step's reward counts as dead.
        over_budget_steps: stop a quality-budget run after this many consecutive steps with its
            smoothed KL more than 20 % over the target although beta keeps backing off (0: never).
    """

    min_embedder_accuracy: float = 0.65
    allow_weak_embedder: bool = False
    dead_reward_steps: int = 50
    dead_reward_spread: float = 1e-4
    over_budget_steps: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_embedder_accuracy <= 1.0:
            raise ValueError(
                f"RewardGates.min_embedder_accuracy must be in [0, 1] (chance 0.5), got {self.min_embedder_accuracy}"
            )
        if self.dead_reward_steps < 0 or self.over_budget_steps < 0:
            raise ValueError(
                "RewardGates.dead_reward_steps and over_budget_steps must be >= 0 (0 disables), got "
                f"{self.dead_reward_steps} and {self.over_budget_steps}"
            )
        if not (math.isfinite(self.dead_reward_spread) and self.dead_reward_spread >= 0):
            raise ValueError(f"RewardGates.dead_reward_spread must be >= 0, got {self.dead_reward_spread}")


def check_embedder(embedder: nn.Module, gates: RewardGates) -> str | None:
    """Raise :class:`RewardGateError` for an embedder near chance; return a warning for one whose accuracy
    is unknown (None when it passed or the override is set)."""
    accuracy = getattr(embedder, "heldout_triplet_accuracy", None)
    name = type(embedder).__name__
    override = "DiversityRewardCallback(gates={allow_weak_embedder: true})"
    if accuracy is None:
        if gates.allow_weak_embedder:
            return None
        return (
            f"the reward embedder {name} records no held-out triplet accuracy, so the gate "
            f"min_embedder_accuracy={gates.min_embedder_accuracy} cannot check it; a ContrastiveTokenEmbedder "
            "loaded from a ContrastiveEmbedderModule checkpoint records it (set embedder.heldout_triplet_accuracy "
            "on your own embedder)"
        )
    if float(accuracy) >= gates.min_embedder_accuracy or gates.allow_weak_embedder:
        return None
    raise RewardGateError(
        f"the reward embedder {name} has held-out triplet accuracy {float(accuracy):.3f} (chance 0.5), below "
        f"min_embedder_accuracy={gates.min_embedder_accuracy}: its diversity reward would be mostly noise, and a "
        "policy gradient on noise lowers quality without raising diversity. Fix: train the embedder until it "
        "separates clips (examples/configs/embedder.yaml stops at its accuracy target or plateau; raise "
        f"trainer.max_steps), or override with {override} to train on it anyway"
    )


class DeadRewardMonitor:
    """Counts consecutive steps whose mean per-prompt reward spread is below the gate's threshold."""

    def __init__(self, gates: RewardGates) -> None:
        self.gates = gates
        self.dead_steps = 0

    def update(self, spread: float, step: int) -> None:
        """Feed one step's mean per-prompt reward spread; raise once it has been dead for the window."""
        if self.gates.dead_reward_steps == 0:
            return
        self.dead_steps = self.dead_steps + 1 if spread < self.gates.dead_reward_spread else 0
        if self.dead_steps >= self.gates.dead_reward_steps:
            raise RewardGateError(
                f"dead diversity reward at step {step}: the spread of the rewards within a prompt's samples "
                f"stayed below {self.gates.dead_reward_spread:g} for {self.dead_steps} steps (last {spread:.3g}), "
                "so every advantage is noise. The samples of a prompt embed alike: the student collapsed to one "
                "output per prompt, or the embedder maps everything to one direction. Fix: restart from an "
                "earlier checkpoint with a lower beta or a quality_budget, check the embedder "
                "(heldout_triplet_accuracy), or sample rollouts at temperature 1; "
                "gates={dead_reward_steps: 0} disables this check"
            )


def over_budget_error(steps: int, smoothed: float, target: float, beta: float, step: int) -> RewardGateError:
    """The error of a quality-budget run whose KL stays over budget although beta backs off."""
    return RewardGateError(
        f"quality budget exceeded at step {step}: the smoothed per-token KL to the CFG teacher, {smoothed:.4g}, "
        f"stayed more than 20 % over its target {target:.4g} for {steps} steps although beta backed off to "
        f"{beta:.3g}. The reference level does not describe this run: start it from the quality (beta = 0) "
        "model (model.init_checkpoint) with the base as CFGDistillCallback(teacher={checkpoint: ...}), give "
        "quality_budget.reference_kl explicitly, or lower the learning rate; gates={over_budget_steps: 0} "
        "disables this check"
    )
