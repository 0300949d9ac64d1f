"""``CFGRLModule``: on-policy RL finetuning of a token generator, with objectives supplied by callbacks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_cfgrl.adapters.peft import is_peft_model
from lightning_cfgrl.core.checks import check_seed
from lightning_cfgrl.core.condition import Condition, cat_conditions, condition_batch_size, repeat_condition
from lightning_cfgrl.core.controls import check_controls, controls_kwargs
from lightning_cfgrl.core.eval_mode import eval_mode
from lightning_cfgrl.core.generator import check_logits
from lightning_cfgrl.core.sampling import NoMassError, SamplingConfig, sample, step_seed
from lightning_cfgrl.eval.diversity import group_pairwise_diversity
from lightning_cfgrl.io.adapter_checkpoints import ADAPTERS_KEY, AdapterLayout
from lightning_cfgrl.io.generators import load_init_checkpoint
from lightning_cfgrl.io.specs import instantiate_spec, save_safe_hyperparameters
from lightning_cfgrl.training.checkpoint_safety import SafeCheckpointLoading, init_weights_needed
from lightning_cfgrl.training.configs import (
    OptimizationConfig,
    RolloutConfig,
    ValidationConfig,
    build_group,
    group_record,
    live_markers,
)
from lightning_cfgrl.training.dropout import disable_dropout, restore_dropout
from lightning_cfgrl.training.finite_guard import FiniteGuard, last_good_note
from lightning_cfgrl.training.objective import ObjectiveCallback, log_objective_hyperparameters
from lightning_cfgrl.training.optimization import WarmupDecayLR, build_optimizers
from lightning_cfgrl.training.rollout import RolloutBatch
from lightning_cfgrl.training.zero_work import check_training_batches, check_training_steps

EXTRA_ROLLOUT_SALT = (
    200  # seeds of objectives' extra rollouts: salt 200 + the objective's index (controls use 100+)
)


# relative gap between train- and eval-mode logits that is still float rounding, not a mode difference
TRAIN_EVAL_TOLERANCE = 1e-4


class CFGRLModule(SafeCheckpointLoading, FiniteGuard, pl.LightningModule):
    """Wraps a :class:`~lightning_cfgrl.core.generator.TokenGenerator` for on-policy finetuning.

    Each training step: (1) sample G sequences per prompt from the student, no grad, KV cache;
    (2) run the student with grad on that rollout; (3) ask every ``ObjectiveCallback`` on the Trainer
    (``CFGDistillCallback``, ``DiversityRewardCallback``, ...) for its weighted loss terms; (4) sum them.
    Every term is logged as ``train/<name>``.

    Args:
        generator: the student model (an ``nn.Module`` TokenGenerator, or a ``class_path``/``init_args``
            dict).
        rollout: how the student samples its training rollouts: ``num_frames``, G =
            ``num_samples_per_prompt``, ``temperature``/``top_k``/``top_p``
            (:class:`~lightning_cfgrl.training.configs.RolloutConfig`, or its fields as a dict).
        optimization: ``optimizer``/``scheduler`` callables, ``learning_rate``, ``lr_warmup_steps``,
            ``lr_decay`` (:class:`~lightning_cfgrl.training.configs.OptimizationConfig`, or a dict).
        validation: ``samples_per_prompt`` and ``scorers`` logged at validation
            (:class:`~lightning_cfgrl.training.configs.ValidationConfig`, or a dict).
        init_checkpoint: generator weights to start from (Lightning checkpoint or safetensors); a base
            checkpoint loads into a control-aware generator (its control embedding starts at zero).
        peft_config: train LoRA/PEFT adapters instead of the whole generator (a ``peft.LoraConfig`` or its
            fields as a dict, e.g. ``{"r": 8, "lora_alpha": 16, "target_modules": ["qkv", "proj"]}``); a
            generator already wrapped by peft is used as is. Only the adapters are trained and saved (with
            a fingerprint of the base), and ``CFGDistillCallback``'s teacher is the base itself, adapters
            disabled. Needs ``pip install lightning-cfgrl[lora]``.
        seed: seeds the rollout sampling and the training step's dropout (combined with the step and the
            process rank).
        disable_dropout: switch the student's dropout off for the whole fit (``nn.Dropout`` modules and
            the float ``dropout``/``attention_dropout``/``activation_dropout``/``layerdrop`` attributes of
            HF-style layers; restored at fit end), as TRL does. Rollouts are sampled in eval mode; with
            dropout on, the gradient pass would score other log-probs than those of the policy that
            sampled, and the on-policy KL and policy gradient would be biased. The first training step
            checks that the train-mode forward reproduces the eval-mode one and warns if it does not.

    Every default is the shipped recipe. A checkpoint records the three settings groups as plain dicts
    (without the optimizer/scheduler callables and scorers); checkpoints of the earlier flat layout
    (``num_frames=``, ``learning_rate=``, ...) are converted on load (``training/configs.py``).
    """

    def __init__(
        self,
        generator: nn.Module | dict,
        rollout: RolloutConfig = RolloutConfig(),
        optimization: OptimizationConfig = OptimizationConfig(),
        validation: ValidationConfig = ValidationConfig(),
        init_checkpoint: str | None = None,
        peft_config: dict | None = None,
        seed: int = 0,
        disable_dropout: bool = True,
    ) -> None:
        super().__init__()
        rollout = build_group("rollout", rollout)  # each checks its fields, named "rollout.num_frames"
        optimization = build_group("optimization", optimization)
        validation = build_group("validation", validation)
        check_seed(seed)
        if isinstance(generator, Mapping):
            generator = instantiate_spec(generator, "a generator spec")
        _check_generator(generator)
        if peft_config is not None and is_peft_model(generator):
            raise ValueError(
                "the generator is already wrapped by peft; pass peft_config=None to train its adapters"
            )
        if peft_config is not None or is_peft_model(generator):  # recorded as plain values, rebuilt on load
            from lightning_cfgrl.adapters.peft import peft_config_dict, peft_config_of

            peft_config = peft_config_dict(
                peft_config if peft_config is not None else peft_config_of(generator)
            )
        _check_frames_fit(generator, rollout.num_frames)
        self.rollout_config, self.optimization, self.validation = rollout, optimization, validation
        self.rollout_sampling = rollout.sampling
        save_safe_hyperparameters(
            self,
            {
                "generator": generator,
                "rollout": rollout,
                "optimization": optimization,
                "validation": validation,
            },
        )
        for name, config in (
            ("rollout", rollout),
            ("optimization", optimization),
            ("validation", validation),
        ):
            # plain values (weights-only loadable), in the logged copy too
            self.hparams[name] = self._hparams_initial[name] = group_record(name, config)
        self.generator = generator
        loads_init = (
            init_checkpoint is not None and init_weights_needed()
        )  # not when a full checkpoint follows
        if loads_init:
            load_init_checkpoint(self.generator, init_checkpoint)
        self.init_checkpoint = init_checkpoint  # a teacher copied from the student can be rebuilt from it
        # `cfgrl fit --ckpt_path` builds the student without reading init_checkpoint (the checkpoint restores
        # it); a teacher copied from the student in `setup` must then read that file itself
        self.init_checkpoint_deferred = init_checkpoint is not None and not loads_init
        self.adapters: AdapterLayout | None = None
        if peft_config is not None:
            self._use_adapters(peft_config)
        self.num_frames = rollout.num_frames
        self.group_size = rollout.num_samples_per_prompt
        self.optimizer_factory = optimization.optimizer
        self.scheduler_factory = optimization.scheduler
        self.learning_rate = optimization.learning_rate
        self.val_samples_per_prompt = validation.samples_per_prompt
        self.val_scorers = list(validation.scorers or [])
        self.seed = seed
        self.lr_warmup_steps, self.lr_decay = optimization.lr_warmup_steps, optimization.lr_decay
        self.disable_dropout = disable_dropout
        self._dropout_saved: list | None = None
        self._check_train_mode = disable_dropout

    def resume_hparams(self) -> dict[str, Any]:
        """The hyperparameters a resume compares with the checkpoint's: ``hparams`` plus a marker for each
        live object a checkpoint does not record (an optimizer callable set in code)."""
        out = dict(self.hparams)
        for name in ("optimization", "validation"):
            out[name] = {**out[name], **live_markers(name, getattr(self, name))}
        return out

    def _use_adapters(self, peft_config: dict) -> None:
        """Wrap the generator with peft (after its base weights are loaded) unless it already is."""
        from lightning_cfgrl.adapters.peft import wrap_peft
        from lightning_cfgrl.io.adapter_checkpoints import adapter_layout

        if not is_peft_model(self.generator):
            self.generator = wrap_peft(self.generator, peft_config)
        self.adapters = adapter_layout(self.generator)

    # -- rollout ------------------------------------------------------------------------------------
    @property
    def objectives(self) -> list[ObjectiveCallback]:
        return [cb for cb in self.trainer.callbacks if isinstance(cb, ObjectiveCallback)]

    def on_fit_start(self) -> None:
        if not self.objectives:
            raise ValueError(
                "CFGRLModule found no objective callback on the Trainer; add CFGDistillCallback and/or "
                "DiversityRewardCallback to Trainer(callbacks=[...])"
            )
        # a control an objective feeds must be one the generator accepts: stop before step 1, naming both
        check_controls(
            self.generator, self.objective_controls(1, self.group_size, training=False), self.group_size
        )
        check_training_steps(self.trainer)  # zero steps is an error, not a silent success
        log_objective_hyperparameters(self.trainer, self)  # guidance scale, beta, ... beside the hparams
        if self.disable_dropout and self._dropout_saved is None:
            self._dropout_saved = disable_dropout(self.generator)

    def on_fit_end(self) -> None:
        check_training_batches(self.trainer)  # a resumed fit's zero batches (see zero_work)
        if self._dropout_saved is not None:
            restore_dropout(self._dropout_saved)
            self._dropout_saved = None

    def _rollout_seed(self, salt: int) -> int:
        # distinct per step and per process, reproducible across resume
        return step_seed(self.seed, self.global_step, self.global_rank, salt)

    def objective_controls(self, num_prompts: int, group_size: int, training: bool) -> dict[str, Tensor]:
        """The objectives' control values for the next rollout, ``{name: [num_prompts * group_size]}``:
        drawn afresh each training step (seeded by step, process and objective), reference values else."""
        controls: dict[str, Tensor] = {}
        objectives = self.objectives if self._trainer is not None else []  # a bare training_step call
        for index, objective in enumerate(objectives):
            # salts 0 and 1 seed the rollout and the global RNG; the controls get streams of their own
            rng = torch.Generator().manual_seed(self._rollout_seed(100 + index)) if training else None
            for name, value in objective.rollout_controls(self, num_prompts, group_size, rng).items():
                if name in controls:
                    raise ValueError(f"two objective callbacks both supply the control {name!r}")
                controls[name] = value.to(self.device)
        return controls

    def rollout(
        self,
        condition: Condition,
        num_samples: int,
        config: SamplingConfig,
        seed: int,
        controls: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Sample ``[B * G, K, S]`` steps from the current generator without grad (eval mode)."""
        with eval_mode(self.generator):
            try:
                return sample(
                    self.generator,
                    condition,
                    self.num_frames,
                    config,
                    num_samples=num_samples,
                    seed=seed,
                    controls=controls,
                )
            except NoMassError as err:
                raise NoMassError(
                    f"rollout at global step {self.global_step}: {err} {last_good_note(self)}"
                ) from None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # Dropout draws from the global RNG; seed it per step (like the rollout) inside a fork, so the
        # masks depend on (seed, step, rank) only. Validation and dataloaders draw from the global RNG
        # between steps, so a saved-and-restored RNG state would not make a resumed run exact.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(self._rollout_seed(1))
            if self.device.type == "cuda":
                torch.cuda.manual_seed(self._rollout_seed(1))
            return self._training_step(batch)

    def _training_step(self, batch: dict[str, Any]) -> Tensor:
        prompts = _condition_of(batch)
        controls = self.objective_controls(condition_batch_size(prompts), self.group_size, training=True)
        steps = self.rollout(prompts, self.group_size, self.rollout_sampling, self._rollout_seed(0), controls)
        condition = repeat_condition(prompts, self.group_size)
        num_on_policy = steps.shape[0]
        for index, objective in enumerate(self.objectives):  # off-policy rows go after the student's
            extra = objective.extra_rollouts(self, prompts, self._rollout_seed(EXTRA_ROLLOUT_SALT + index))
            if extra is not None:
                if controls:
                    raise ValueError(
                        f"{type(objective).__name__} contributes off-policy rows (e.g. teacher_fraction > 0), "
                        f"which cannot be combined with control inputs ({sorted(controls)}) yet; use a single "
                        "guidance_scale/beta or teacher_fraction=0"
                    )
                steps, condition = torch.cat([steps, extra[0]]), cat_conditions(condition, extra[1])
        logits = self.generator(steps, condition, **controls_kwargs(controls))
        check_logits(logits, self.generator, steps.shape[0], steps.shape[2])
        if self._check_train_mode:
            self._check_train_mode = False
            self._check_train_mode_matches(steps, condition, logits, controls)
        mask = self.generator.pattern.valid_mask(steps.shape[2], steps.device).expand_as(steps)
        rollout = RolloutBatch(
            steps, condition, mask, self.group_size, logits, self.rollout_sampling, num_on_policy, controls
        )
        terms: dict[str, Tensor] = {}
        for objective in self.objectives:
            for name, value in objective.loss_terms(self, rollout).items():
                if name in terms:
                    raise ValueError(f"two objective callbacks both returned a loss term named {name!r}")
                terms[name] = value
        loss = torch.stack(list(terms.values())).sum()
        # the logits are checked too: a divergence may mask a NaN probability to 0 and so return a
        # finite loss whose gradient is NaN (-inf logits are legitimate: masked tokens). One host sync
        # per step; diagnosis only on failure
        if not bool(torch.isfinite(loss) & ~_bad_logits(logits.detach()).any()):
            raise FloatingPointError(self._non_finite_message(terms, logits))
        batch_size = condition_batch_size(condition)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=True, batch_size=batch_size)
        self.log("train/loss", loss.detach(), batch_size=batch_size)
        return loss

    @torch.no_grad()
    def _check_train_mode_matches(
        self, steps: Tensor, condition: Condition, logits: Tensor, controls: dict[str, Tensor]
    ) -> None:
        """Once: the gradient pass (train mode) must score the rollout like the sampler (eval mode); a
        mismatch beyond float rounding is an error (training on would optimise other log-probs)."""
        with eval_mode(self.generator):
            reference = self.generator(steps, condition, **controls_kwargs(controls))
        if torch.equal(reference, logits.detach()):
            return
        gap = (reference.float() - logits.detach().float()).abs().max().item()
        if gap <= TRAIN_EVAL_TOLERANCE * max(1.0, reference.detach().float().abs().max().item()):
            return  # kernels that round differently per mode
        raise ValueError(
            f"CFGRLModule(disable_dropout=True): the student's train-mode logits differ from its eval-mode "
            f"logits by up to {gap:.3g} on the same rollout, so something stochastic or mode-dependent (e.g. a "
            f"custom condition dropout in {type(self.generator).__name__}) is still active; the on-policy KL "
            "and policy gradient would score other log-probs than those sampled. Switch it off in the model "
            "for RL finetuning (the run stopped before its first optimizer step)."
        )

    def _non_finite_message(self, terms: dict[str, Tensor], logits: Tensor) -> str:
        bad = [f"{name}={value.item()}" for name, value in terms.items() if not bool(torch.isfinite(value))]
        nan_logits, inf_logits = int(torch.isnan(logits).sum()), int(torch.isposinf(logits).sum())
        stop = last_good_note(self)
        if not bad:
            finite = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
            return (
                f"non-finite student logits at global step {self.global_step}: {nan_logits} NaN and {inf_logits} "
                f"+inf of {logits.numel()}, although the loss term(s) {finite} are finite (their gradients are "
                f"not). {stop}"
            )
        infs = f" (and {inf_logits} +inf)" if inf_logits else ""
        return (
            f"non-finite loss at global step {self.global_step}: term(s) {', '.join(bad)}; "
            f"student logits with NaN: {nan_logits} of {logits.numel()}{infs}. {stop}"
        )

    # -- validation -----------------------------------------------------------------------------------
    def validation_metric_names(self) -> list[str]:
        """What :meth:`validation_step` logs (the metrics of TensorBoard's HParams view)."""
        names = ["val/token_entropy", "val/distinct_tokens"]
        if self.val_samples_per_prompt >= 2:
            names.append("val/histogram_diversity")
        return names + [f"val/{scorer.name}" for scorer in self.val_scorers]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        condition = _condition_of(batch)
        g = self.val_samples_per_prompt
        controls = self.objective_controls(condition_batch_size(condition), g, training=False)
        steps = self.rollout(
            condition, g, SamplingConfig(), seed=self.seed + 17 * batch_idx, controls=controls
        )
        frames = self.generator.pattern.steps_to_frames(steps)
        repeated = repeat_condition(condition, g)
        batch_size = frames.shape[0]
        with torch.no_grad():
            logits = self.generator(steps, repeated, **controls_kwargs(controls))
            mask = self.generator.pattern.valid_mask(steps.shape[2], steps.device).expand_as(steps)
            logp = torch.log_softmax(logits.float(), -1)
            entropy = -(logp.exp() * logp).sum(-1)[mask].mean()
        self.log("val/token_entropy", entropy, batch_size=batch_size, sync_dist=True)
        self.log("val/distinct_tokens", _distinct_fraction(frames), batch_size=batch_size, sync_dist=True)
        if g >= 2:
            self.log(
                "val/histogram_diversity",
                group_pairwise_diversity(frames, g, self.generator.vocab_size).mean(),
                batch_size=batch_size,
                sync_dist=True,
            )
        for scorer in self.val_scorers:
            score = scorer(frames, repeated).float().mean()
            self.log(f"val/{scorer.name}", score, batch_size=batch_size, sync_dist=True)

    # -- checkpoints: a PEFT student saves its adapters, not its frozen base -----------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.adapters is not None:  # the frozen base is rebuilt on load, not saved
            from lightning_cfgrl.io.adapter_checkpoints import adapter_checkpoint

            adapter_checkpoint(checkpoint, self.adapters, "generator.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.adapters is not None:
            from lightning_cfgrl.io.adapter_checkpoints import check_adapter_state

            state = checkpoint["state_dict"]
            saved = {k[len("generator.") :] for k in state if k.startswith("generator.")}
            check_adapter_state(saved, self.adapters, checkpoint.get(ADAPTERS_KEY), "the checkpoint")
            # the base it was trained on is the one rebuilt here (checked): complete the state dict with it
            for key, value in self.generator.state_dict().items():
                state.setdefault("generator." + key, value)

    # -- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        built = build_optimizers(
            self.generator.parameters(), self.optimizer_factory, self.scheduler_factory, self.learning_rate
        )
        if self.scheduler_factory is not None or (self.lr_warmup_steps == 0 and self.lr_decay == "constant"):
            return built
        if self._trainer is None:
            raise ValueError(
                f"the learning-rate schedule (lr_warmup_steps={self.lr_warmup_steps}, lr_decay={self.lr_decay!r}) "
                "needs the Trainer's number of steps; call configure_optimizers inside a fit, or use "
                "lr_warmup_steps=0, lr_decay='constant' (or pass a scheduler)"
            )
        total = self.trainer.estimated_stepping_batches
        if self.lr_decay != "constant" and not math.isfinite(total):
            raise ValueError(
                f"lr_decay={self.lr_decay!r} needs a finite number of steps, but the Trainer has none "
                "(set max_steps or max_epochs), or use lr_decay='constant'"
            )
        steps = int(total) if math.isfinite(total) else 0
        schedule = WarmupDecayLR(built, self.lr_warmup_steps, steps, self.lr_decay)
        return {"optimizer": built, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _bad_logits(logits: Tensor) -> Tensor:
    """NaN or +inf (softmax turns either into NaN); -inf is a masked token and fine."""
    return torch.isnan(logits) | torch.isposinf(logits)


def _check_generator(generator: Any) -> None:
    """Fail at construction, not at the first rollout, on something that is not a TokenGenerator."""
    missing = [name for name in ("num_codebooks", "vocab_size", "pattern") if not hasattr(generator, name)]
    if not isinstance(generator, nn.Module) or missing:
        raise TypeError(
            f"generator must be an nn.Module implementing TokenGenerator (num_codebooks, vocab_size, pattern, "
            f"forward(steps, condition)); got {type(generator).__name__}"
            + (f" without {', '.join(missing)}" if missing and isinstance(generator, nn.Module) else "")
        )


def _check_frames_fit(generator: nn.Module, num_frames: int) -> None:
    """A generator with a fixed ``max_steps`` (positional table, KV cache) cannot sample longer rollouts."""
    max_steps, pattern = getattr(generator, "max_steps", None), getattr(generator, "pattern", None)
    if isinstance(max_steps, int) and pattern is not None and pattern.num_steps(num_frames) > max_steps:
        raise ValueError(
            f"rollout.num_frames={num_frames} needs {pattern.num_steps(num_frames)} decoding steps, more than the "
            f"generator's max_steps={max_steps}; lower rollout.num_frames or build the generator with a larger max_frames"
        )


def _condition_of(batch: Any) -> Condition:
    if isinstance(batch, Mapping) and "condition" in batch:
        return batch["condition"]
    raise ValueError(
        f"CFGRLModule expects batches as dicts with a 'condition' entry, got {type(batch).__name__}"
    )


def _distinct_fraction(frames: Tensor) -> Tensor:
    """Mean fraction of distinct tokens per (sequence, codebook): ``[N, K, T] -> []``."""
    sorted_ids = frames.sort(-1).values
    distinct = 1 + (sorted_ids[..., 1:] != sorted_ids[..., :-1]).sum(-1)
    return (distinct.float() / frames.shape[-1]).mean()
