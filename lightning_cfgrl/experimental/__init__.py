"""Options that shipped once and did not help in the recipe study: kept for reproduction, not
recommended. Nothing in the library imports this package; its API may change without notice.

* :class:`TeacherMixDistillCallback`: CFG distillation with a share of rows sampled from the CFG teacher
  (GKD's on/off-policy mix). On domain A's training prompts it did not beat pure on-policy distillation
  (``python examples/recipe_study.py ablate --study distill``, rows ``teacher_fraction``; docs: Results,
  the recipe on two domains).
"""

from lightning_cfgrl.experimental.teacher_mix import TeacherMixDistillCallback

__all__ = ["TeacherMixDistillCallback"]
