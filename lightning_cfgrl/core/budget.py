"""A quality budget for the diversity weight: beta adapts so that quality stays within what the user allows.

The user states how far the per-token KL to the CFG teacher (the distillation objective, lower is better)
may rise above a reference level, the beta = 0 level: as a fraction of that level, in nats per token, or
(``relative_to="gain"``) as a fraction of the gain the beta = 0 model made over the base, measured in the
same KL: ``target = ref + max_increase * (kl_base - ref)``, where ``kl_base`` is the divergence of the
base's own conditional distribution (no guidance) from the CFG teacher on the same rollouts. The gain form
is scale-free across models: a model that distils its teacher closely (small ``ref``) is not held to a
budget that allows almost no change. A controller then moves beta every step:

* ``"proportional"``: the adaptive-KL controller of Ziegler et al. 2019 ("Fine-Tuning Language Models
  from Human Preferences", section 2.2) with the sign turned for a weight on the *other* objective:
  ``e = clip((kl - target) / target, -c, c)``, ``beta <- beta * (1 - rate * e)``;
* ``"dual"``: dual ascent on the Lagrangian of ``max D subject to KL <= target`` (constrained RL, e.g.
  Altman 1999; Tessler et al. 2019): with the multiplier ``lam`` on the KL and the loss normalised as
  ``KL - beta * D`` (``beta = 1 / lam``), ``lam <- max(1 / beta_max, lam + rate * (kl - target) / target)``.

Both see an exponential moving average of the per-step KL (bias-corrected like Adam's moments), so one
noisy batch does not swing beta. The math is plain float64 Python: no torch, no Lightning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Controller = Literal["proportional", "dual"]
RelativeTo = Literal["reference", "gain"]
ERROR_CLIP = 0.2  # Ziegler et al.'s clip of the relative error: beta changes by at most 2 % per step


@dataclass
class QualityBudget:
    """How much quality the diversity model may give up, and how beta follows it.

    Args:
        max_increase: the allowed rise of the smoothed per-token KL to the CFG teacher over the
            reference: a fraction of the reference (``relative=True``: 0.25 allows +25 %), a fraction of
            the distillation's gain (``relative_to="gain"``: 0.25 gives back a quarter of the KL the
            beta = 0 model closed, i.e. keeps 75 % of it), or nats per token (``relative=False``).
        relative: how ``max_increase`` is read (above).
        relative_to: with ``relative=True``, what the fraction is of: ``"reference"`` (the beta = 0 KL)
            or ``"gain"`` (``kl_base - reference``: the KL the distillation closed).
        reference_kl: the beta = 0 level (e.g. the quality model's final ``train/distill_divergence_per_token``).
            None: measured over the first ``reference_steps`` steps with beta held at 0, which is the
            beta = 0 level when the run starts from the quality model (``init_checkpoint``) and
            distils towards the base's CFG (``teacher.checkpoint``).
        base_kl: with ``relative_to="gain"`` and a given ``reference_kl``: the base's own KL to the CFG
            teacher (``train/distill_base_divergence_per_token``). None: measured with the reference.
        reference_steps: steps averaged for the measured reference.
        controller: ``"dual"`` (Lagrangian, fast to back off a beta far too high) or ``"proportional"``
            (multiplicative, Ziegler et al. 2019: at most 2 % per step).
        rate: the controller's gain (Ziegler's K_beta = 0.1) / the dual step size per unit relative error.
        smoothing: EMA decay of the per-step KL the controller sees (0: the raw KL).
        beta_max: the largest beta the controller may reach.
    """

    max_increase: float = 0.25
    relative: bool = True
    relative_to: RelativeTo = "reference"
    reference_kl: float | None = None
    base_kl: float | None = None
    reference_steps: int = 25
    controller: Controller = "dual"
    rate: float = 0.1
    smoothing: float = 0.9
    beta_max: float = 100.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_increase) and self.max_increase > 0):
            raise ValueError(
                f"QualityBudget.max_increase must be a finite number > 0, got {self.max_increase}"
            )
        if self.reference_kl is not None and not (math.isfinite(self.reference_kl) and self.reference_kl > 0):
            raise ValueError(
                f"QualityBudget.reference_kl must be a finite KL > 0 (nats per token) or None to measure it, "
                f"got {self.reference_kl}"
            )
        if self.relative_to not in ("reference", "gain"):
            raise ValueError(
                f"QualityBudget.relative_to must be 'reference' or 'gain', got {self.relative_to!r}"
            )
        if self.relative_to == "gain" and not self.relative:
            raise ValueError(
                "QualityBudget(relative_to='gain') reads max_increase as a fraction of the gain; "
                "set relative=True (or relative_to='reference' for a rise in nats per token)"
            )
        if self.relative_to == "gain" and (self.reference_kl is None) != (self.base_kl is None):
            raise ValueError(
                "QualityBudget(relative_to='gain') needs reference_kl and base_kl both given or both None "
                f"(measured), got reference_kl={self.reference_kl}, base_kl={self.base_kl}"
            )
        if self.base_kl is not None and not (math.isfinite(self.base_kl) and self.base_kl > 0):
            raise ValueError(f"QualityBudget.base_kl must be a finite KL > 0 or None, got {self.base_kl}")
        if self.reference_steps < 1:
            raise ValueError(f"QualityBudget.reference_steps must be >= 1, got {self.reference_steps}")
        if self.controller not in ("proportional", "dual"):
            raise ValueError(
                f"QualityBudget.controller must be 'proportional' or 'dual', got {self.controller!r}"
            )
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"QualityBudget.rate must be a finite number > 0, got {self.rate}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"QualityBudget.smoothing must be in [0, 1), got {self.smoothing}")
        if not (math.isfinite(self.beta_max) and self.beta_max > 0):
            raise ValueError(f"QualityBudget.beta_max must be a finite number > 0, got {self.beta_max}")

    @property
    def needs_base_kl(self) -> bool:
        return self.relative_to == "gain"

    def target(self, reference: float, base: float | None = None) -> float:
        """The largest smoothed KL the budget allows above ``reference`` (``base``: the base's KL, for
        ``relative_to="gain"``; a base no worse than the reference leaves a zero gain, and the target is
        the reference itself)."""
        if not self.relative:
            return reference + self.max_increase
        if self.relative_to == "reference":
            return reference * (1.0 + self.max_increase)
        if base is None:
            raise ValueError("QualityBudget(relative_to='gain').target needs the base's KL (base=...)")
        return reference + self.max_increase * max(base - reference, 0.0)


class BudgetController:
    """Keeps beta where the smoothed KL meets ``budget.target(reference)``; one :meth:`update` per step.

    ``beta`` starts at ``initial_beta`` (0 while a reference is being measured). ``over_budget_steps``
    counts consecutive steps at which the smoothed KL exceeded the target by more than the error clip
    (20 %): a caller stops the run when beta's backing off does not bring the KL back.
    """

    def __init__(self, budget: QualityBudget, initial_beta: float) -> None:
        if not (math.isfinite(initial_beta) and 0 < initial_beta <= budget.beta_max):
            raise ValueError(
                f"the initial beta of a quality budget must be in (0, beta_max={budget.beta_max}], "
                f"got {initial_beta}"
            )
        self.budget = budget
        self.initial_beta = float(initial_beta)
        self.beta = 0.0 if budget.reference_kl is None else float(initial_beta)
        self.reference: float | None = budget.reference_kl
        self.base: float | None = budget.base_kl
        self.smoothed: float | None = None
        self.over_budget_steps = 0
        self._ema = 0.0
        self._ema_steps = 0
        self._reference_sum = 0.0
        self._reference_count = 0
        self._base_sum = 0.0

    @property
    def target(self) -> float | None:
        return None if self.reference is None else self.budget.target(self.reference, self.base)

    @property
    def measuring(self) -> bool:
        return self.reference is None

    def update(self, kl: float, base_kl: float | None = None) -> float:
        """Feed this step's per-token KL (and, while a gain budget's reference is measured, the base's KL
        to the teacher on the same rollouts); return beta for the next step."""
        if not math.isfinite(kl):
            raise ValueError(f"the KL fed to the quality budget must be finite, got {kl}")
        if self.reference is None and self.budget.needs_base_kl:
            if base_kl is None or not math.isfinite(base_kl):
                raise ValueError(
                    "QualityBudget(relative_to='gain') measures the base's KL to the teacher with the "
                    f"reference: update(kl, base_kl=...) needs a finite base_kl, got {base_kl}"
                )
            self._base_sum += float(base_kl)
        kl = float(kl)
        decay = self.budget.smoothing
        self._ema = decay * self._ema + (1.0 - decay) * kl
        self._ema_steps += 1
        self.smoothed = self._ema / (1.0 - decay**self._ema_steps)  # bias-corrected (Adam)
        if self.reference is None:
            self._reference_sum += kl
            self._reference_count += 1
            if self._reference_count >= self.budget.reference_steps:
                self.reference = self._reference_sum / self._reference_count
                if self.budget.needs_base_kl:
                    self.base = self._base_sum / self._reference_count
                self.beta = self.initial_beta
            return self.beta
        target = self.budget.target(self.reference, self.base)
        error = (self.smoothed - target) / target
        self.over_budget_steps = self.over_budget_steps + 1 if error > ERROR_CLIP else 0
        clipped = min(max(error, -ERROR_CLIP), ERROR_CLIP)
        if self.budget.controller == "proportional":
            self.beta = self.beta * (1.0 - self.budget.rate * clipped)
        else:  # dual ascent on lam = 1 / beta, kept >= 1 / beta_max
            lam = 1.0 / self.beta + self.budget.rate * clipped
            self.beta = 1.0 / max(lam, 1.0 / self.budget.beta_max)
        self.beta = min(self.beta, self.budget.beta_max)
        return self.beta

    def state_dict(self) -> dict[str, Any]:
        return {
            "budget": asdict(self.budget),
            "beta": self.beta,
            "reference": self.reference,
            "base": self.base,
            "base_sum": self._base_sum,
            "smoothed": self.smoothed,
            "over_budget_steps": self.over_budget_steps,
            "ema": self._ema,
            "ema_steps": self._ema_steps,
            "reference_sum": self._reference_sum,
            "reference_count": self._reference_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta, self.reference, self.smoothed = state["beta"], state["reference"], state["smoothed"]
        self.over_budget_steps = state["over_budget_steps"]
        self._ema, self._ema_steps = state["ema"], state["ema_steps"]
        self._reference_sum, self._reference_count = state["reference_sum"], state["reference_count"]
        # checkpoints written before the gain budget carry no base KL
        self.base, self._base_sum = state.get("base", self.budget.base_kl), state.get("base_sum", 0.0)
