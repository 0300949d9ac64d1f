"""Options that shipped once and did not help in the recipe study: kept for reproduction, not
recommended. Nothing in the library imports this package; its API may change without notice.

* :class:`TeacherMixDistillCallback`: CFG distillation with a share of rows sampled from the CFG teacher
  (GKD's on/off-policy mix). On domain A's training prompts it did not beat pure on-policy distillation
  (``python examples/recipe_study.py ablate --study distill``, rows ``teacher_fraction``; docs: Results,
  the recipe on two domains).
* :class:`ControlFiLMTransformer`: the steerable student's controls also enter every layer by FiLM (the
  ``control_layers="every"`` option of earlier versions of ``AudioTokenTransformer``). It did not beat
  controls at the input only (docs: Results, the steerable student).
  :func:`load_control_film_generator` loads a checkpoint written with that option.
"""

from lightning_cfgrl.experimental.control_film import (
    ControlFiLMTransformer,
    load_control_film_generator,
    upgrade_control_film_spec,
)
from lightning_cfgrl.experimental.teacher_mix import TeacherMixDistillCallback

__all__ = [
    "ControlFiLMTransformer",
    "TeacherMixDistillCallback",
    "load_control_film_generator",
    "upgrade_control_film_spec",
]
