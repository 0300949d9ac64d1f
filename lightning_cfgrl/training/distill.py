"""CFG distillation: the student, sampled without CFG, learns to match the frozen teacher *with* CFG."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from einops import rearrange
from torch import Tensor

from lightning_cfgrl.adapters.peft import AdapterDisabledTeacher, is_peft_model
from lightning_cfgrl.core.checks import check_settings
from lightning_cfgrl.core.condition import Condition, cat_conditions, select_condition
from lightning_cfgrl.core.controls import (
    GUIDANCE,
    ControlDistribution,
    Distribution,
    control_setting,
    control_state_keys,
)
from lightning_cfgrl.core.divergences import DIVERGENCES, token_divergence
from lightning_cfgrl.core.generator import check_compatible
from lightning_cfgrl.core.guidance import cfg_logits, check_guidance_scale
from lightning_cfgrl.io.generators import load_generator_spec, load_generator_state, load_init_checkpoint
from lightning_cfgrl.io.provenance import file_source
from lightning_cfgrl.io.specs import instantiate_spec
from lightning_cfgrl.training.frozen import (
    FrozenModelConfig,
    freeze,
    frozen_state,
    load_frozen_state,
    place_frozen,
)
from lightning_cfgrl.training.objective import ObjectiveCallback
from lightning_cfgrl.training.rollout import RolloutBatch

if TYPE_CHECKING:
    from lightning_cfgrl.training.module import CFGRLModule

TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BASE_DIVERGENCE_METRIC = "train/distill_base_divergence_per_token"  # for a gain-relative quality budget


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(FrozenModelConfig):
    """The CFG teacher: where its weights come from, and how it runs and is saved
    (``CFGDistillCallback(teacher=...)``)::

        teacher: {checkpoint: runs/base.ckpt, dtype: bfloat16, chunk_size: 8}

    Args:
        checkpoint: a checkpoint or safetensors file with the teacher's generator weights. None: the
            teacher is the student at fit start run without controls: the base, unless the student was
            already trained on controls (then give the base here). For a LoRA/PEFT student it is then the
            student itself with its adapters disabled.
        dtype: run the teacher in ``"bfloat16"`` or ``"float16"`` (autocast; a copied teacher is also
            stored in it, halving its memory). Its logits are mixed and compared in float32.
        chunk_size: sequences per teacher forward (None: all N at once). Each chunk's ``[2n, K, S, V]``
            logits are mixed before the next, so only the ``[N, K, S, V]`` float32 result is ever whole:
            it caps the teacher's share of peak memory.
        embed_in_checkpoint: store the teacher's weights in the callback's checkpoint state. By default
            they are stored only when nothing else can rebuild them: a teacher loaded from ``checkpoint``,
            or copied from a student loaded from the module's ``init_checkpoint``, is recorded as that
            file's path and sha256, and a resumed run refuses a file that changed.
    """

    group: ClassVar[str] = "teacher"

    checkpoint: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise TypeError(f"teacher.checkpoint must be a path (str) or None, got {self.checkpoint!r}")
        if self.dtype is not None and self.dtype not in TEACHER_DTYPES:
            raise ValueError(
                f"teacher.dtype must be one of {sorted(TEACHER_DTYPES)} or None, got {self.dtype!r}"
            )

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """``dtype`` as a ``torch.dtype`` (None: the module's own)."""
        return TEACHER_DTYPES[self.dtype] if self.dtype is not None else None


class CFGDistillCallback(ObjectiveCallback):
    """Adds ``weight * D(student || teacher_cfg)`` on the student's own samples (on-policy).

    The teacher is a frozen copy of the generator as it is when fit starts (the base weights), or the
    generator weights of ``teacher.checkpoint``; for a LoRA/PEFT student it is the student itself with
    its adapters disabled (exactly the base, no second copy, nothing in checkpoints). Per step its cond
    and uncond logits come from one
    batched no-grad forward on ``[cond; null]``, are mixed with ``cfg_logits`` and compared per token
    with the student's logits (in float32). The per-token divergence is masked to generated positions,
    then ``reduction="mean"`` (default) averages it per token, which pairs with the diversity reward's
    ``gradient.beta_scale="per_token"`` so that beta means the same balance at any sequence length;
    ``reduction="sum"`` sums it over a sequence's positions and averages over sequences, as in the
    paper (pair it with ``gradient.beta_scale="paper"``). Under Adam the two give the same updates
    for distillation alone (every sequence has the same number of generated tokens).

    Steerable student: a list ``guidance_scale=[low, high]`` draws one g per prompt group each step
    (log-uniform by default; ``guidance_distribution="choice"`` takes a list of values instead), shared
    by the group's G samples so the diversity reward compares samples drawn under the same controls.
    The student gets g as its ``"guidance_scale"`` control (an ``AudioTokenTransformer`` built with
    ``options=TransformerOptions(controls=[...])``, a ``MusicgenGenerator`` with ``controls=[...]``), samples
    the rollout with it, and is compared with the teacher's CFG mix at that g, sequence by sequence.

    Args:
        guidance_scale: the teacher's CFG scale g (paper: 3), or ``[low, high]`` / a list of values.
        guidance_distribution: how a list is drawn from: ``"log_uniform"`` or ``"uniform"`` over
            ``[low, high]``, or ``"choice"`` among the values.
        divergence: ``"reverse_kl"`` (paper, mode seeking), ``"forward_kl"`` or ``"jsd"`` (GKD).
        jsd_beta: the mixture weight of the generalized JSD.
        weight: multiplies the term.
        reduction: ``"mean"`` per token (default) or ``"sum"`` over a sequence's tokens (the paper's).
        teacher: the teacher's file, dtype, chunk size and checkpointing (:class:`TeacherConfig`, or
            a dict of its fields; None: the student at fit start, in the module's dtype, whole batches).
    """

    # the flat arguments of earlier versions -> their place now (named when an old config gives them)
    moved_settings: ClassVar[dict[str, str]] = {
        "teacher_checkpoint": "teacher.checkpoint",
        "teacher_dtype": "teacher.dtype",
        "teacher_chunk_size": "teacher.chunk_size",
        "embed_in_checkpoint": "teacher.embed_in_checkpoint",
    }

    def __init__(
        self,
        guidance_scale: float | list[float] = 3.0,
        divergence: Literal["reverse_kl", "forward_kl", "jsd"] = "reverse_kl",
        jsd_beta: float = 0.5,
        weight: float = 1.0,
        reduction: Literal["sum", "mean"] = "mean",
        teacher: TeacherConfig | None = None,
        guidance_distribution: Distribution = "log_uniform",
    ) -> None:
        setting = control_setting(GUIDANCE, guidance_scale, guidance_distribution)
        # fixed: a float as before; steerable: the distribution, and guidance_scale its reference value
        self.guidance: ControlDistribution | None = (
            setting if isinstance(setting, ControlDistribution) else None
        )
        self.guidance_scale = self.guidance.reference if self.guidance else check_guidance_scale(setting)
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if not 0.0 < jsd_beta < 1.0:  # checked here, not at the first "jsd" step
            raise ValueError(f"jsd_beta must be in (0, 1), got {jsd_beta}")
        self.divergence = divergence
        self.jsd_beta = jsd_beta
        self.weight = weight
        self.reduction = reduction
        if isinstance(teacher, Mapping):  # a dict of its fields is the Python shorthand
            teacher = check_settings("teacher", teacher, TeacherConfig)
        if teacher is not None and not isinstance(teacher, TeacherConfig):
            raise TypeError(
                "teacher must be a TeacherConfig (checkpoint, dtype, chunk_size, embed_in_checkpoint), a dict "
                f"of its fields or None, got {type(teacher).__name__}"
            )
        self.teacher_config = teacher if teacher is not None else TeacherConfig()
        self.teacher: torch.nn.Module | None = None
        self.teacher_source: dict[str, str] | None = None  # the file the teacher's weights are exactly
        # set by a gain-relative quality budget (DiversityRewardCallback) while it measures its reference:
        # also log train/distill_base_divergence_per_token, the teacher's own conditional (the base, no
        # guidance) against its CFG mix on the same rollouts, i.e. the KL distillation starts from
        self.log_base_divergence = False

    def setup(self, trainer: pl.Trainer, pl_module: CFGRLModule, stage: str) -> None:
        # `setup` runs before a resumed run restores the student, so the copy is of the base weights;
        # `load_state_dict` then restores the saved teacher as well, whatever the module was built from.
        if stage != "fit" or self.teacher is not None:
            return
        if self.teacher_config.checkpoint is None and is_peft_model(pl_module.generator):
            # TRL's reference model for free: the student's own base, adapters disabled
            self.teacher = AdapterDisabledTeacher(pl_module.generator)
            return
        if self.teacher_config.checkpoint:
            teacher = self._load_teacher(pl_module)
        else:
            teacher = copy.deepcopy(pl_module.generator)
            if getattr(pl_module, "init_checkpoint_deferred", False):
                load_init_checkpoint(teacher, pl_module.init_checkpoint)  # the student is restored later
            self.teacher_source = _init_checkpoint_source(pl_module, teacher)
        check_compatible(pl_module.generator, teacher)
        if not callable(getattr(teacher, "null_condition", None)):
            raise ValueError("CFGDistillCallback needs a generator with null_condition() for the CFG teacher")
        self.teacher = freeze(teacher)

    def _load_teacher(self, pl_module: CFGRLModule) -> torch.nn.Module:
        """Teacher from ``teacher.checkpoint``: rebuilt from the checkpoint's generator spec when it has
        one (so a mismatched architecture is reported as such), else the student's architecture."""
        # hashed before it is read, so the record never describes newer bytes than the teacher's
        path = self.teacher_config.checkpoint
        self.teacher_source = file_source(
            path, "a Lightning .ckpt or a .safetensors file of generator weights"
        )
        weights = load_generator_state(path)
        spec = load_generator_spec(path, role="teacher.checkpoint")
        source = f"the generator spec of teacher.checkpoint {path}"
        teacher = instantiate_spec(spec, source) if spec is not None else copy.deepcopy(pl_module.generator)
        check_compatible(pl_module.generator, teacher)
        try:
            teacher.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"teacher.checkpoint {path!r} does not fit the generator: {err}") from err
        return teacher

    def on_fit_start(self, trainer: pl.Trainer, pl_module: CFGRLModule) -> None:
        # teacher.dtype is a no-op for the adapter-disabled teacher (it owns no weights)
        dtype = self.teacher_config.torch_dtype
        self.teacher = place_frozen(self.teacher, trainer, pl_module.device, dtype)

    def hyperparameters(self) -> dict[str, Any]:
        settings = {
            "distill/guidance_scale": self.guidance_scale,
            "distill/divergence": self.divergence,
            "distill/reduction": self.reduction,
            "distill/weight": self.weight,
            "distill/teacher": self.teacher_config.checkpoint or "the generator at fit start",
        }
        if self.guidance is not None:  # steerable: guidance_scale above is the range's reference value
            settings["distill/guidance_range"] = str(self.guidance)
        if self.divergence == "jsd":
            settings["distill/jsd_beta"] = self.jsd_beta
        return settings

    @torch.no_grad()
    def teacher_logits(self, batch: RolloutBatch) -> Tensor:
        """``[N, K, S, V]`` CFG-mixed teacher logits (float32): per chunk of ``teacher.chunk_size``
        sequences, one batched ``[cond; null]`` forward, mixed (at each sequence's own guidance scale
        when the scale is a control) before the next chunk runs."""
        return self._teacher_and_cond(batch, keep_cond=False)[0]

    @torch.no_grad()
    def _teacher_and_cond(self, batch: RolloutBatch, keep_cond: bool) -> tuple[Tensor, Tensor | None]:
        """The mixed logits and (``keep_cond``) the teacher's own conditional logits ``[N, K, S, V]``,
        which the CFG forward computes anyway; None where the forward ran no conditional half."""
        n = batch.steps.shape[0]
        size = self.teacher_config.chunk_size or n
        scale = batch.control(GUIDANCE) if self.guidance is not None else None
        if size >= n:
            return self._mixed_chunk(batch.steps, batch.condition, scale, keep_cond)
        out: Tensor | None = None
        conds: Tensor | None = None
        for start in range(0, n, size):
            index = slice(start, start + size)
            mixed, cond = self._mixed_chunk(
                batch.steps[index],
                select_condition(batch.condition, index),
                None if scale is None else scale[index],
                keep_cond,
            )
            if out is None:
                out = mixed.new_empty((n, *mixed.shape[1:]))
                conds = None if cond is None else mixed.new_empty((n, *mixed.shape[1:]))
            out[index] = mixed
            if conds is not None and cond is not None:
                conds[index] = cond
        assert out is not None
        return out, conds

    def _mixed_chunk(
        self, steps: Tensor, condition: Condition, scale: Tensor | None, keep_cond: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        if scale is None and self.guidance_scale in (0.0, 1.0):
            # cfg_logits would return one half exactly: run only that half (half the teacher's work)
            if self.guidance_scale == 0.0:
                return self._teacher_logits(steps, self.teacher.null_condition(condition)), None
            logits = self._teacher_logits(steps, condition)
            return logits, logits if keep_cond else None
        cond, uncond = self.teacher_forward(steps, condition)
        return cfg_logits(cond, uncond, self.guidance_scale if scale is None else scale), (
            cond if keep_cond else None
        )

    def _teacher_logits(self, steps: Tensor, condition: Condition) -> Tensor:
        """The teacher's float32 logits ``[B, K, S, V]`` (in ``teacher.dtype`` inside)."""
        dtype = self.teacher_config.torch_dtype
        precision = (
            torch.autocast(steps.device.type, dtype=dtype)
            if dtype not in (None, torch.float32)
            else contextlib.nullcontext()
        )
        with precision:
            return self.teacher(steps, condition).float()

    def rollout_controls(
        self, pl_module: CFGRLModule, num_prompts: int, group_size: int, rng: torch.Generator | None
    ) -> dict[str, Tensor]:
        """One g per prompt group (``[num_prompts * group_size]``), when ``guidance_scale`` is a range/list."""
        if self.guidance is None:
            return {}
        return {GUIDANCE: self.guidance.draw(num_prompts, rng).repeat_interleave(group_size)}

    def teacher_forward(self, steps: Tensor, condition: Condition) -> tuple[Tensor, Tensor]:
        """The teacher's float32 (cond, uncond) logits ``[B, K, S, V]`` each, from one batched forward."""
        condition = cat_conditions(condition, self.teacher.null_condition(condition))
        logits = self._teacher_logits(torch.cat([steps, steps]), condition)
        cond, uncond = rearrange(logits, "(two n) k s v -> two n k s v", two=2)
        return cond, uncond

    def loss_terms(self, pl_module: CFGRLModule, batch: RolloutBatch) -> dict[str, Tensor]:
        teacher, cond = self._teacher_and_cond(batch, keep_cond=self.log_base_divergence)
        per_token = token_divergence(batch.student_logits, teacher, self.divergence, self.jsd_beta)
        per_token = torch.where(batch.mask, per_token, torch.zeros_like(per_token))
        per_sequence = per_token.sum(dim=(1, 2))
        tokens = batch.mask.sum(dim=(1, 2)).clamp(min=1)
        if self.reduction == "mean":
            per_sequence = per_sequence / tokens
        divergence = per_sequence.mean()
        rows = batch.on_policy_rows()  # for CompletionLogCallback: each sample's divergence per token
        batch.record("distill/divergence_per_token", per_token[rows].sum(dim=(1, 2)) / tokens[rows])
        pl_module.log("train/distill_divergence_per_token", (per_token.sum() / tokens.sum()).detach())
        if cond is not None:
            with torch.no_grad():
                base = token_divergence(cond, teacher, self.divergence, self.jsd_beta)
                base = torch.where(batch.mask, base, torch.zeros_like(base))
            pl_module.log(BASE_DIVERGENCE_METRIC, (base.sum() / tokens.sum()).detach())
        return {"distill": self.weight * divergence}

    def state_dict(self) -> dict[str, Any]:
        # a resumed run must get the original teacher back: from the file it was loaded from (verified
        # by hash), or from the checkpoint itself when nothing else can rebuild it
        embed = self.teacher_config.embed_in_checkpoint
        return frozen_state(self.teacher, "teacher", self.teacher_source, embed)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.teacher is None:
            # validate (not fit): setup built no teacher, and the validation pass does not use one
            return
        # a recorded file must be the one this run rebuilt the teacher from in setup
        load_frozen_state(self.teacher, state_dict, "teacher", self.teacher_source, "teacher")


def _init_checkpoint_source(pl_module: CFGRLModule, teacher: torch.nn.Module) -> dict[str, str] | None:
    """The module's ``init_checkpoint`` as the teacher's source, if the copied teacher holds exactly that
    file's weights (the student may have been changed after it was built)."""
    path = getattr(pl_module, "init_checkpoint", None)
    if not path:
        return None
    source = file_source(path)
    weights = load_generator_state(path)
    # a base checkpoint loaded into a control-aware student: the teacher runs without controls, so its
    # (zero-initialised) control parameters are not part of what the file must rebuild
    new_controls = control_state_keys(teacher) - set(weights)
    state = {k: v for k, v in teacher.state_dict().items() if k not in new_controls}
    same = set(weights) == set(state) and all(torch.equal(state[k], weights[k]) for k in state)
    return source if same else None
