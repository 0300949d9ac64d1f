"""Steerable student: control inputs (guidance scale, diversity weight) in the generator protocol, the
reference transformer, sampling, the objectives' per-group draws, YAML, and that training teaches them."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_cfgrl import (
    CFGDistillCallback,
    CFGRLModule,
    DiversityGradientConfig,
    DiversityRewardCallback,
    ModuleAdapter,
    ObjectiveCallback,
    SamplingConfig,
    cfg_logits,
    load_generator,
    sample,
)
from lightning_cfgrl.core.condition import repeat_condition
from lightning_cfgrl.core.controls import (
    DIVERSITY_WEIGHT,
    GUIDANCE,
    ControlDistribution,
    ControlEmbedding,
    load_base_weights,
)
from lightning_cfgrl.core.diversity import diversity_rewards, grouped, pairwise_distances
from lightning_cfgrl.core.sampling import DecodeConfig, step_seed
from lightning_cfgrl.embedders import (
    ContrastiveEmbedderModule,
    ContrastiveTokenEmbedder,
    TokenHistogramEmbedder,
)
from lightning_cfgrl.experimental import ControlFiLMTransformer
from lightning_cfgrl.experiments import SyntheticMusicDataModule, SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import atomic_save, atomic_save_safetensors
from lightning_cfgrl.models import AudioTokenTransformer, TransformerOptions
from lightning_cfgrl.training.pretrain import PretrainModule
from lightning_cfgrl.training.rollout import RolloutBatch
from tests.helpers.models import BASE_ARGS, quiet_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
BOTH = (GUIDANCE, DIVERSITY_WEIGHT)
PROMPTS = torch.tensor([[1, 2, 3], [4, 1, 2], [2, 3, 1]])


def _steerable(seed: int = 0, controls=BOTH, film: bool = False, **overrides) -> AudioTokenTransformer:
    """A control-aware reference model; ``film``: the experimental one with FiLM in every layer."""
    torch.manual_seed(seed)
    cls = ControlFiLMTransformer if film else AudioTokenTransformer
    return cls(**{**BASE_ARGS, **overrides}, options=TransformerOptions(controls=controls)).eval()


def _randomise_controls(model: nn.Module, seed: int = 1) -> None:
    """Move the zero-initialised control path, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.control_emb.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


# -- the model: a base loads unchanged --------------------------------------------------------------------
def test_base_checkpoint_loads_into_the_control_aware_model_unchanged(tmp_path):
    torch.manual_seed(0)
    base = AudioTokenTransformer(**BASE_ARGS).eval()
    steps = sample(base, PROMPTS, 12, num_samples=2, seed=0)
    condition = repeat_condition(PROMPTS, 2)
    controls = {
        GUIDANCE: torch.tensor([1.5, 1.5, 3.0, 3.0, 5.0, 5.0]),
        DIVERSITY_WEIGHT: torch.linspace(0, 15, 6),
    }

    # same seed: the base parameters draw the same numbers with or without the control path
    same_init = _steerable(seed=0)
    assert all(torch.equal(same_init.state_dict()[k], v) for k, v in base.state_dict().items())

    steerable = _steerable(seed=7)
    _randomise_controls(steerable)  # a trained control path must be reset by a base load, not kept
    missing = load_base_weights(steerable, base.state_dict())
    assert missing and all(k.startswith("control_emb.") for k in missing)
    expected = base(steps, condition)
    assert torch.equal(steerable(steps, condition, controls=controls), expected)
    assert torch.equal(steerable(steps, condition), expected)
    assert torch.equal(
        sample(
            steerable,
            PROMPTS,
            12,
            SamplingConfig(guidance_scale=3.0),
            num_samples=2,
            seed=4,
            controls=controls,
        ),
        sample(base, PROMPTS, 12, SamplingConfig(guidance_scale=3.0), num_samples=2, seed=4),
    )

    # the same through CFGRLModule(init_checkpoint=...), from a safetensors file of the base
    path = tmp_path / "base.safetensors"
    atomic_save_safetensors(base.state_dict(), path)
    module = CFGRLModule(_steerable(seed=3), init_checkpoint=str(path), rollout={"num_frames": 12})
    assert torch.equal(module.generator(steps, condition, controls=controls), expected)
    # the teacher copied from it is rebuilt from the file on resume, not stored in every checkpoint
    callback = CFGDistillCallback(guidance_scale=[1.0, 5.0])
    callback.setup(None, module, "fit")
    state = callback.state_dict()
    assert state["teacher"] is None and state["teacher_source"]["path"] == str(path)

    # strictness is kept for everything else: a steerable state into a base model, a missing base key
    with pytest.raises(RuntimeError, match="Unexpected key"):
        AudioTokenTransformer(**BASE_ARGS).load_state_dict(steerable.state_dict())
    partial = {k: v for k, v in base.state_dict().items() if k != "heads.weight"}
    with pytest.raises(RuntimeError, match=r"missing keys \['heads.weight'\]"):
        load_base_weights(_steerable(), partial)


def _randomise(module: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def test_controls_in_every_layer_load_a_base_unchanged_and_steer_every_layer():
    """The experimental ``ControlFiLMTransformer`` (FiLM per block and at the final norm; the old
    ``control_layers="every"``): a base loads into it and gives
    exactly the base's logits in float64 whatever the controls; once moved, each layer's FiLM changes the
    logits, the controls change them, and cached decoding equals teacher forcing."""
    torch.manual_seed(0)
    base = AudioTokenTransformer(**BASE_ARGS).double().eval()
    steps = sample(base, PROMPTS, 12, num_samples=2, seed=0)
    condition = repeat_condition(PROMPTS, 2)
    controls = {
        GUIDANCE: torch.tensor([1.5, 1.5, 3.0, 3.0, 5.0, 5.0], dtype=torch.float64),
        DIVERSITY_WEIGHT: torch.linspace(0, 15, 6, dtype=torch.float64),
    }
    # the base parameters are initialised exactly as without controls
    same_init = _steerable(seed=0, film=True).double()
    assert all(torch.equal(same_init.state_dict()[k], v) for k, v in base.state_dict().items())
    assert len(same_init.control_film) == BASE_ARGS["num_layers"] + 1

    steerable = _steerable(seed=7, film=True).double()
    _randomise(steerable.control_emb)
    _randomise(steerable.control_film)  # a trained control path is reset by a base load, not kept
    missing = load_base_weights(steerable, base.state_dict())
    assert {k.split(".")[0] for k in missing} == {"control_emb", "control_film"}
    assert any(k.startswith(f"control_film.{BASE_ARGS['num_layers']}.") for k in missing)
    expected = base(steps, condition)
    assert torch.equal(steerable(steps, condition, controls=controls), expected)
    assert torch.equal(steerable(steps, condition), expected)

    # each layer's FiLM alone moves the logits, and different controls give different logits
    for layer in range(len(steerable.control_film)):
        moved = copy.deepcopy(steerable)
        _randomise(moved.control_film[layer], seed=layer + 2)
        logits = moved(steps, condition, controls=controls)
        assert not torch.allclose(logits, expected), layer
        other = {GUIDANCE: controls[GUIDANCE].flip(0), DIVERSITY_WEIGHT: controls[DIVERSITY_WEIGHT]}
        assert not torch.allclose(logits, moved(steps, condition, controls=other)), layer
        assert torch.equal(moved(steps, condition), expected)  # no controls: the base path
    _randomise(steerable.control_film, seed=11)
    full = steerable(steps, condition, controls=controls)
    cache = steerable.new_cache(6, steps.shape[2])
    incremental = torch.cat(
        [
            steerable(steps[:, :, : s + 1], condition, cache=cache, controls=controls)
            for s in range(steps.shape[2])
        ],
        2,
    )
    torch.testing.assert_close(incremental, full)
    # gradient checkpointing recomputes the same FiLM'd blocks
    steerable.gradient_checkpointing = True
    assert torch.equal(steerable.train()(steps, condition, controls=controls), full)

    # the spec records its class, so a checkpoint rebuilds it; the library's model has no FiLM; it needs
    # controls
    assert (
        steerable.spec()["class_path"] == "lightning_cfgrl.experimental.control_film.ControlFiLMTransformer"
    )
    assert not hasattr(_steerable(), "control_film")
    with pytest.raises(ValueError, match=r"ControlFiLMTransformer needs options.controls=\[...\]"):
        ControlFiLMTransformer(**BASE_ARGS)


@pytest.mark.slow  # trains a model
def test_training_moves_the_film_of_every_layer(pretrained_base, domain, tmp_path):
    student = _steerable(film=True)
    load_base_weights(student, pretrained_base.state_dict())
    module = CFGRLModule(student, rollout={"num_frames": 8}, optimization={"learning_rate": 1e-3})
    callback = CFGDistillCallback(guidance_scale=[1.0, 5.0])
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(module, SyntheticPromptDataModule(domain, batch_size=4))
    for layer, film in enumerate(student.control_film):
        assert float(film.mlps[GUIDANCE][2].weight.detach().abs().sum()) > 0, layer
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    loaded = load_generator(tmp_path / "s.ckpt")
    g = {GUIDANCE: torch.full((3,), 2.0), DIVERSITY_WEIGHT: torch.zeros(3)}
    steps = sample(loaded, PROMPTS, 8, seed=0, controls=g)
    assert torch.equal(loaded(steps, PROMPTS, controls=g), student.eval()(steps, PROMPTS, controls=g))


def test_the_selection_script_never_sees_the_heldout_prompts_and_can_freeze_the_base(domain):
    """examples/steerable_select.py: its inner split is carved out of the training prompts only (the
    evaluation's held-out prompts are in neither half), and its frozen-base candidate trains only the
    control path."""
    from examples.steerable_select import (
        ControlsOnlyFiLMTransformer,
        ControlsOnlyTransformer,
        InnerSplitPromptDataModule,
    )

    def rows(prompts: torch.Tensor) -> set[tuple[int, ...]]:
        return {tuple(r) for r in prompts.tolist()}

    outer, inner = SyntheticPromptDataModule(domain), InnerSplitPromptDataModule(domain)
    assert rows(inner.train_prompts) | rows(inner.heldout_prompts) == rows(outer.train_prompts)
    assert not rows(inner.train_prompts) & rows(inner.heldout_prompts)
    assert not (rows(inner.train_prompts) | rows(inner.heldout_prompts)) & rows(outer.heldout_prompts)
    assert len(inner.heldout_prompts) == round(0.25 * len(outer.train_prompts))
    options = TransformerOptions(controls=BOTH)
    model = ControlsOnlyTransformer(**BASE_ARGS, options=options)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"control_emb"}
    model = ControlsOnlyFiLMTransformer(**BASE_ARGS, options=options)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"control_emb", "control_film"}


@pytest.mark.slow  # trains a model
def test_checkpoint_of_a_steerable_student_rebuilds_it(pretrained_base, domain, tmp_path):
    student = _steerable(controls=(GUIDANCE,))
    load_base_weights(student, pretrained_base.state_dict())
    module = CFGRLModule(student, rollout={"num_frames": 8}, optimization={"learning_rate": 1e-3})
    callback = CFGDistillCallback(guidance_scale=[1.0, 5.0])
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(module, SyntheticPromptDataModule(domain, batch_size=4))
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    loaded = load_generator(tmp_path / "s.ckpt")
    assert loaded.control_names == (GUIDANCE,)
    assert any(bool(p.abs().sum() > 0) for p in loaded.control_emb.mlps[GUIDANCE][2].parameters())
    steps = sample(loaded, PROMPTS, 8, seed=0, controls={GUIDANCE: 2.0})
    g = {GUIDANCE: torch.full((3,), 2.0)}
    assert torch.equal(
        loaded(steps, PROMPTS, controls=g), module.generator.eval()(steps, PROMPTS, controls=g)
    )


# -- clear errors -------------------------------------------------------------------------------------------
@pytest.mark.slow  # trains a model
def test_a_generator_without_controls_gives_a_clear_error(pretrained_base, domain):
    with pytest.raises(
        ValueError, match="AudioTokenTransformer does not accept the control 'guidance_scale'"
    ):
        sample(pretrained_base, PROMPTS, 4, controls={GUIDANCE: 3.0})
    adapter = ModuleAdapter(nn.Linear(1, 1), num_codebooks=1, vocab_size=4, bos_id=4)
    with pytest.raises(ValueError, match="ModuleAdapter does not accept the control 'diversity_weight'"):
        sample(adapter, torch.zeros(2), 4, controls={DIVERSITY_WEIGHT: 1.0})
    with pytest.raises(ValueError, match=r"does not accept the control 'guidance': its control_names are"):
        sample(_steerable(), PROMPTS, 4, controls={"guidance": 3.0})
    # at fit start, before any step: the objective feeds a control the generator does not take
    callback = CFGDistillCallback(guidance_scale=[1.0, 5.0])
    with pytest.raises(
        ValueError, match="AudioTokenTransformer does not accept the control 'guidance_scale'"
    ) as raised:
        quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[callback]).fit(
            CFGRLModule(pretrained_base, rollout={"num_frames": 8}),
            SyntheticPromptDataModule(domain, batch_size=4),
        )
    stopped_in = {entry.name for entry in raised.traceback}
    assert "on_fit_start" in stopped_in and "training_step" not in stopped_in, stopped_in


@pytest.mark.parametrize(
    "controls, message",
    [
        ({GUIDANCE: 0.0}, "control 'guidance_scale' must be finite and > 0, got 0.0"),
        ({DIVERSITY_WEIGHT: -1.0}, "control 'diversity_weight' must be finite and >= 0, got -1.0"),
        ({GUIDANCE: float("nan")}, "control 'guidance_scale' must be finite and > 0, got nan"),
        (
            {GUIDANCE: torch.ones(4)},
            r"must be a number, \[3\] \(per prompt\) or \[6\] \(per sequence\), got shape \(4,\)",
        ),
        ({GUIDANCE: "3"}, "control 'guidance_scale' must be a number or a tensor, got '3'"),
    ],
)
def test_bad_control_values(controls, message):
    with pytest.raises(ValueError, match=message):
        sample(_steerable(), PROMPTS, 4, num_samples=2, controls=controls)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: CFGDistillCallback(guidance_scale=[1.0, 2.0, 3.0]),
            r"range is \[low, high\].*use distribution 'choice'",
        ),
        (lambda: CFGDistillCallback(guidance_scale=[5.0, 1.0]), r"low < high, got \[5.0, 1.0\]"),
        (
            lambda: CFGDistillCallback(guidance_scale=[0.0, 5.0]),
            "control 'guidance_scale' must be finite and > 0, got 0.0",
        ),
        (
            lambda: CFGDistillCallback(guidance_scale=[1.0, 5.0], guidance_distribution="normal"),
            "must be one of",
        ),
        (
            lambda: DiversityRewardCallback(nn.Identity(), beta=[0.0, 15.0], beta_distribution="log_uniform"),
            "needs low > 0",
        ),
        (
            lambda: DiversityRewardCallback(nn.Identity(), beta=[-1.0, 15.0]),
            "must be finite and >= 0, got -1.0",
        ),
        (lambda: ControlEmbedding(["temperature"], 8), "unknown control 'temperature'; expected one of"),
    ],
)
def test_bad_control_ranges(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- sampling -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [SamplingConfig(), SamplingConfig(guidance_scale=2.5, top_k=8)])
def test_sample_with_controls_is_cache_exact_and_the_controls_matter(config):
    model = _steerable()
    _randomise_controls(model)
    per_sequence = {
        GUIDANCE: torch.tensor([1.5, 1.5, 3.0, 3.0, 5.0, 5.0]),
        DIVERSITY_WEIGHT: torch.full((6,), 4.0),
    }
    cached = sample(model, PROMPTS, 16, config, num_samples=2, seed=3, controls=per_sequence)
    assert torch.equal(
        cached,
        sample(
            model,
            PROMPTS,
            16,
            config,
            num_samples=2,
            seed=3,
            controls=per_sequence,
            decoding=DecodeConfig(use_cache=False),
        ),
    )
    # a [B] tensor is per prompt, a number is for all: the same as the per-sequence form
    per_prompt = {GUIDANCE: torch.tensor([1.5, 3.0, 5.0]), DIVERSITY_WEIGHT: 4.0}
    assert torch.equal(cached, sample(model, PROMPTS, 16, config, num_samples=2, seed=3, controls=per_prompt))
    # the controls change what is sampled (same seed, same uniforms)
    assert not torch.equal(cached, sample(model, PROMPTS, 16, config, num_samples=2, seed=3))
    other = {GUIDANCE: 5.0, DIVERSITY_WEIGHT: 4.0}
    assert not torch.equal(cached, sample(model, PROMPTS, 16, config, num_samples=2, seed=3, controls=other))
    # incremental logits with controls equal the teacher-forced ones
    steps, condition = cached, repeat_condition(PROMPTS, 2)
    full = model(steps, condition, controls=per_sequence)
    cache = model.new_cache(6, steps.shape[2])
    incremental = torch.cat(
        [
            model(steps[:, :, : s + 1], condition, cache=cache, controls=per_sequence)
            for s in range(steps.shape[2])
        ],
        2,
    )
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


def test_cfg_logits_takes_one_scale_per_sequence():
    g = torch.Generator().manual_seed(0)
    cond, uncond = (
        torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64),
        torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64),
    )
    scales = torch.tensor([1.0, 2.5, 0.0], dtype=torch.float64)
    mixed = cfg_logits(cond, uncond, scales)
    for i, s in enumerate(scales.tolist()):
        torch.testing.assert_close(mixed[i], cfg_logits(cond[i], uncond[i], s), rtol=0, atol=1e-12)
    with pytest.raises(
        ValueError, match=r"per-sequence guidance_scale must be \[N\] = \[3\], got shape \(2,\)"
    ):
        cfg_logits(cond, uncond, scales[:2])
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0, got -1.0"):
        cfg_logits(cond, uncond, torch.tensor([1.0, -1.0, 2.0]))


def test_control_distributions_draw_what_they_say():
    rng = torch.Generator().manual_seed(0)
    n = 20_000
    log_uniform = ControlDistribution(GUIDANCE, (1.0, 5.0)).draw(n, rng).double()
    assert float(log_uniform.min()) >= 1.0 and float(log_uniform.max()) <= 5.0
    # log g is uniform on [0, log 5]: mean log 5 / 2, standard error of the mean log 5 / sqrt(12 n)
    se = torch.log(torch.tensor(5.0)).item() / (12 * n) ** 0.5
    assert abs(log_uniform.log().mean().item() - torch.log(torch.tensor(5.0)).item() / 2) < 5 * se
    uniform = ControlDistribution(DIVERSITY_WEIGHT, (0.0, 15.0), "uniform").draw(n, rng).double()
    assert abs(uniform.mean().item() - 7.5) < 5 * 15 / (12 * n) ** 0.5
    choice = ControlDistribution(GUIDANCE, (1.5, 2.0, 3.0, 5.0), "choice").draw(n, rng)
    counts = torch.stack([(choice == v).sum() for v in (1.5, 2.0, 3.0, 5.0)])
    assert int(counts.sum()) == n
    # each count is Binomial(n, 1/4): within 5 standard deviations
    assert bool(((counts - n / 4).abs() < 5 * (n * 3 / 16) ** 0.5).all()), counts
    assert ControlDistribution(GUIDANCE, (1.0, 4.0)).reference == 2.0
    assert ControlDistribution(DIVERSITY_WEIGHT, (0.0, 15.0), "uniform").reference == 7.5
    assert ControlDistribution(GUIDANCE, (5.0, 1.5, 3.0), "choice").reference == 3.0
    assert torch.equal(ControlDistribution(GUIDANCE, (1.0, 4.0)).draw(3, None), torch.full((3,), 2.0))


# -- training -------------------------------------------------------------------------------------------------
class _Recorder(ObjectiveCallback):
    """Keeps every RolloutBatch the module hands to the objectives."""

    def __init__(self) -> None:
        self.batches: list[RolloutBatch] = []

    def loss_terms(self, pl_module, batch):
        self.batches.append(batch)
        return {}


@pytest.mark.slow  # trains a model
def test_rollout_loss_and_teacher_share_the_per_group_controls(pretrained_base, domain):
    student = _steerable()
    load_base_weights(student, pretrained_base.state_dict())
    _randomise_controls(student)  # so that the controls change what step 0 samples
    initial = copy.deepcopy(student)
    module = CFGRLModule(
        student, rollout={"num_frames": 8, "num_samples_per_prompt": 3}, optimization={"learning_rate": 1e-3}
    )
    distill = CFGDistillCallback(guidance_scale=[1.0, 5.0])
    diversity = DiversityRewardCallback(TokenHistogramEmbedder(32), beta=[0.0, 15.0])
    recorder = _Recorder()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[distill, diversity, recorder])
    trainer.fit(module, SyntheticPromptDataModule(domain, batch_size=4))
    first, second = recorder.batches
    for batch in (first, second):
        g, beta = batch.controls[GUIDANCE], batch.controls[DIVERSITY_WEIGHT]
        assert g.shape == beta.shape == (12,)
        assert bool(((g >= 1.0) & (g <= 5.0)).all()) and bool(((beta >= 0) & (beta <= 15)).all())
        # one value per prompt group, shared by its G = 3 samples
        assert torch.equal(g, g[::3].repeat_interleave(3)) and torch.equal(
            beta, beta[::3].repeat_interleave(3)
        )
        assert len(set(g[::3].tolist())) == 4
    assert not torch.equal(first.controls[GUIDANCE], second.controls[GUIDANCE])  # drawn afresh each step

    # the teacher mixes CFG at each sequence's own g
    batch = second
    mixed = distill.teacher_logits(batch)
    for i in (0, 5, 11):
        cond = distill.teacher(batch.steps[i : i + 1], batch.condition[i : i + 1]).float()
        uncond = distill.teacher(batch.steps[i : i + 1], torch.zeros_like(batch.condition[i : i + 1])).float()
        torch.testing.assert_close(
            mixed[i : i + 1],
            cfg_logits(cond, uncond, batch.controls[GUIDANCE][i].item()),
            atol=1e-4,
            rtol=1e-4,
        )

    # replay step 0: the rollout was sampled with exactly these controls and the module's seed
    prompts, seed = (
        first.condition[::3],
        step_seed(module.seed, step=0),
    )  # the module's rollout seed at step 0
    replay = sample(initial.eval(), prompts, 8, num_samples=3, seed=seed, controls=first.controls)
    assert torch.equal(replay, first.steps)
    assert not torch.equal(replay, sample(initial, prompts, 8, num_samples=3, seed=seed))


def test_diversity_term_weights_each_group_by_its_own_beta():
    torch.manual_seed(0)
    generator = _steerable()
    _randomise_controls(generator)
    steps = sample(
        generator, PROMPTS, 12, num_samples=4, seed=0, controls={GUIDANCE: 2.0, DIVERSITY_WEIGHT: 1.0}
    )
    condition = repeat_condition(PROMPTS, 4)
    betas = torch.tensor([0.0, 4.0, 15.0]).repeat_interleave(4)
    controls = {GUIDANCE: torch.full((12,), 2.0), DIVERSITY_WEIGHT: betas}
    logits = generator(steps, condition, controls=controls)
    mask = generator.pattern.valid_mask(steps.shape[2]).expand_as(steps)
    batch = RolloutBatch(steps, condition, mask, 4, logits, SamplingConfig(), controls=controls)
    embedder = TokenHistogramEmbedder(32, ngram=1)
    stub = SimpleNamespace(
        generator=generator,
        global_step=0,
        global_rank=0,
        log=lambda *a, **k: None,
        trainer=SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t)),
    )
    paper = dict(baseline="none", advantage_norm="none", beta_scale="paper")  # the literal form
    callback = DiversityRewardCallback(embedder, beta=[0.0, 15.0], gradient=DiversityGradientConfig(**paper))
    term = callback.loss_terms(stub, batch)["diversity"]
    frames = generator.pattern.steps_to_frames(steps)
    rewards = diversity_rewards(pairwise_distances(grouped(embedder(frames), 4))).flatten().double()
    logp = batch.sequence_logprobs.double()
    expected = -2.0 * (betas.double() * rewards * logp).mean()
    # float32 sum of 12 terms of size |beta r log pi| <= 15 * 1 * 60: relative 1e-5 covers it
    torch.testing.assert_close(term.double(), expected, rtol=1e-5, atol=1e-4)
    # the beta = 0 group contributes no gradient at all
    (grad,) = torch.autograd.grad(term, logits)
    assert float(grad[:4].abs().max()) == 0.0 and float(grad[4:].abs().max()) > 0.0
    # a fixed beta keeps the plain form
    fixed = DiversityRewardCallback(embedder, beta=4.0, gradient=DiversityGradientConfig(**paper))
    torch.testing.assert_close(
        fixed.loss_terms(stub, batch)["diversity"].double(),
        -4.0 * 2.0 * (rewards * logp).mean(),
        rtol=1e-5,
        atol=1e-4,
    )


def _reverse_kl(student, teacher, prompts, control_g: float, teacher_g: float) -> float:
    """Mean per-token KL(student at control g || base with CFG at teacher_g) on the student's samples."""
    with torch.no_grad():
        steps = sample(student, prompts, 32, num_samples=8, seed=5, controls={GUIDANCE: control_g})
        condition = repeat_condition(prompts, 8)
        g = {GUIDANCE: torch.full((condition.shape[0],), control_g)}
        s = student(steps, condition, controls=g).double().log_softmax(-1)
        mixed = cfg_logits(
            teacher(steps, condition).double(),
            teacher(steps, torch.zeros_like(condition)).double(),
            teacher_g,
        )
        t = mixed.log_softmax(-1)
        mask = student.pattern.valid_mask(steps.shape[2]).expand_as(steps)
        return (s.exp() * (s - t)).sum(-1)[mask].mean().item()


@pytest.mark.slow
def test_training_teaches_the_guidance_control(pretrained_base, domain):
    """150 steps with g log-uniform in [1, 5]: the student at control g is closer (reverse KL, on held-out
    prompts) to the base with CFG at g than to the base with CFG at another g, for g = 1.5 and g = 4.

    Measured (this seed, 4 samples per prompt): control 1.5 -> KL 0.018 to g = 1.5 vs 0.27 to g = 4;
    control 4 -> 0.077 to g = 4 vs 0.109 to g = 1.5 (at 150 steps the student at control 4 is still
    nearest CFG g = 3: reverse KL to a sharper teacher converges last)."""
    torch.manual_seed(0)
    student = _steerable(controls=(GUIDANCE,))
    load_base_weights(student, pretrained_base.state_dict())
    module = CFGRLModule(
        student, rollout={"num_frames": 32, "num_samples_per_prompt": 2}, optimization={"learning_rate": 1e-3}
    )
    callback = CFGDistillCallback(guidance_scale=[1.0, 5.0])
    quiet_trainer(max_steps=150, limit_val_batches=0, callbacks=[callback]).fit(
        module, SyntheticPromptDataModule(domain, batch_size=8)
    )
    student.eval()
    heldout = SyntheticPromptDataModule(domain).heldout_prompts
    kl = {
        (c, t): _reverse_kl(student, pretrained_base, heldout, c, t) for c in (1.5, 4.0) for t in (1.5, 4.0)
    }
    assert kl[1.5, 1.5] < kl[1.5, 4.0], kl  # the student at control g is nearest the teacher at g ...
    assert kl[4.0, 4.0] < kl[4.0, 1.5], kl
    assert kl[1.5, 1.5] < kl[4.0, 1.5], kl  # ... and moving the control moves it toward that teacher
    assert kl[4.0, 4.0] < kl[1.5, 4.0], kl


# -- evaluation -------------------------------------------------------------------------------------------------
def _save(generator: nn.Module, path: Path) -> str:
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    atomic_save({"state_dict": state, "hyper_parameters": {"generator": generator.spec()}}, path)
    return str(path)


@pytest.mark.slow  # trains a model
def test_evaluation_sweeps_a_steerable_student_like_cfg(pretrained_base, tmp_path):
    from lightning_cfgrl.eval import (
        Candidates,
        Evaluation,
        EvaluationOutput,
        EvaluationProtocol,
        Measurement,
        PromptSource,
    )
    from lightning_cfgrl.eval.candidates import evaluate_candidate
    from lightning_cfgrl.experiments import PromptAdherence

    base = _save(pretrained_base, tmp_path / "base.ckpt")
    student = _steerable()
    load_base_weights(student, pretrained_base.state_dict())
    _randomise_controls(student)
    steerable = _save(student, tmp_path / "steerable.ckpt")
    guidance_only = _save(_steerable(controls=(GUIDANCE,)), tmp_path / "g_only.ckpt")
    embedder = TokenHistogramEmbedder(32)

    def evaluation(**candidates):
        return Evaluation(
            scorers=[PromptAdherence()],
            embedder=embedder,
            candidates=Candidates(
                base=base,
                guidance_scales=[1.0, 2.0],
                cfg_reference=2.0,
                temperatures=[0.7],
                top_ps=[],
                **candidates,
            ),
            protocol=EvaluationProtocol(num_frames=32, num_samples=4, num_seeds=2),
            prompts=PromptSource(datamodule=SyntheticPromptDataModule(), max_prompts=4),
            output=EvaluationOutput(out=None, progress=False),
        )

    # bad control settings fail before any sample, naming the candidate or the value
    with pytest.raises(
        ValueError, match=r"candidate 'steerable g g=1 w=0' .*does not accept the control 'diversity_weight'"
    ):
        evaluation(
            steerable={"g": guidance_only}, control_guidance_scales=[1.0], control_diversity_weights=[0.0]
        )
    with pytest.raises(
        ValueError, match=r"control_guidance_scales value 0.0 is invalid: control 'guidance_scale' must be"
    ):
        evaluation(steerable={"s": steerable}, control_guidance_scales=[0.0, 2.0])

    run = evaluation(
        steerable={"s": steerable}, control_guidance_scales=[1.0, 2.0], control_diversity_weights=[0.0, 5.0]
    )
    report = run.run()
    rows = [r for r in report.results if r.family == "steerable"]
    assert [r.name for r in rows] == [
        "steerable s g=1 w=0",
        "steerable s g=1 w=5",
        "steerable s g=2 w=0",
        "steerable s g=2 w=5",
    ]
    assert all(r.forward_passes_per_token == 1 for r in rows)
    # each row was sampled with its controls: the same numbers as evaluate_candidate with them
    direct = evaluate_candidate(
        "x",
        student,
        SamplingConfig(),
        Measurement(run.prompts, 32, [PromptAdherence()], embedder, num_samples=4, seeds=run.seeds),
        controls={GUIDANCE: 2.0, DIVERSITY_WEIGHT: 5.0},
    )
    assert rows[3].per_seed == direct.per_seed
    assert rows[2].per_seed != rows[3].per_seed
    assert "steerable" in report.hypervolumes["diversity"]
    claims = {c.claim: c for c in report.claims}
    assert {"s_g=2", "s_front", "s_front_vs_sampling"} <= set(claims) and "s_g=1" not in claims
    # s_g=2: the student at control 2 (lowest diversity weight) against CFG at 2, gain over chance
    cfg2 = next(r for r in report.results if r.name == "CFG g=2")
    chance = -math.log(48)
    gaps = [
        (s - chance) - 0.95 * (c - chance)
        for s, c in zip(rows[2].per_seed["adherence"], cfg2.per_seed["adherence"], strict=True)
    ]
    assert claims["s_g=2"].margin == pytest.approx(sum(gaps) / 2, abs=1e-12)


# -- YAML -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_steerable_yaml_fits_a_few_steps_then_cfgrl_evaluate_prints_its_claims(tmp_path, monkeypatch, capsys):
    """`cfgrl fit --config examples/configs/steerable.yaml` (3 steps) on a 1-step base and embedder, then
    `cfgrl evaluate --config examples/configs/evaluate_steerable.yaml` (shrunk) prints the steerable
    student's fronts and per-g claims."""
    base_dir, embedder_dir = tmp_path / "runs/base/checkpoints", tmp_path / "runs/embedder/checkpoints"
    base = PretrainModule(AudioTokenTransformer(**BASE_ARGS), condition_dropout=0.2)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(base, SyntheticMusicDataModule(num_train=64, num_val=8, batch_size=8))
    trainer.save_checkpoint(base_dir / "last.ckpt")
    embedder = ContrastiveEmbedderModule(
        ContrastiveTokenEmbedder(
            num_codebooks=2, vocab_size=32, dim=96, embed_dim=64, num_layers=2, kernel_size=5
        ),
        chunk_frames=12,
    )
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(embedder, SyntheticMusicDataModule(num_train=64, num_val=8, batch_size=8))
    trainer.save_checkpoint(embedder_dir / "last.ckpt")

    cmd = [
        sys.executable,
        "-m",
        "lightning_cfgrl.cli.main",
        "fit",
        "--config",
        str(CONFIGS / "steerable.yaml"),
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "runs/steerable/checkpoints/last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    student = load_generator(checkpoint)
    assert student.control_names == BOTH
    # both control paths were trained away from their zero initialisation
    for name in BOTH:
        assert float(student.control_emb.mlps[name][2].weight.detach().abs().sum()) > 0, name

    from lightning_cfgrl.cli.evaluate import evaluate_main

    monkeypatch.chdir(tmp_path)
    code = evaluate_main(
        [
            "--config",
            str(CONFIGS / "evaluate_steerable.yaml"),
            "--candidates.distilled={}",
            "--candidates.quality_model=null",
            "--candidates.diversity_model=null",
            "--candidates.merged_dir=null",
            "--candidates.guidance_scales=[1.0, 3.0]",
            "--candidates.temperatures=[0.7]",
            "--candidates.top_ps=[]",
            "--candidates.control_guidance_scales=[1.0, 3.0]",
            "--candidates.control_diversity_weights=[0.0, 15.0]",
            "--protocol.num_samples=2",
            "--protocol.num_seeds=2",
            "--prompts.max_prompts=2",
            "--output.progress=false",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "steerable student g=3 w=15" in printed and "| s_g=3 |" in printed and "| s_front |" in printed
    assert "steerable" in printed.split("hypervolumes (diversity):")[1].splitlines()[0]
    assert (tmp_path / "runs/eval_steerable/results.json").exists()
