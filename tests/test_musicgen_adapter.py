"""MusicGen adapter: logits equal HF's own forward, CFG equals HF's guidance path, KV cache, Lightning.

Everything runs on a tiny randomly initialised ``MusicgenConfig`` (T5 + EnCodec + decoder sub-configs);
nothing downloads, token ids are fed directly (no tokenizer).
"""

from __future__ import annotations

import sys

import pytest
import torch

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, DecodeConfig, SamplingConfig, cfg_logits, sample
from lightning_cfgrl.core.condition import cat_conditions

pytest.importorskip("transformers")

from lightning_cfgrl.adapters import MusicgenGenerator  # noqa: E402
from lightning_cfgrl.adapters.musicgen import import_musicgen  # noqa: E402
from tests.helpers.musicgen import TEXT_VOCAB, V, tiny_config  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: with 2 intra-op threads on 2 busy shared cores every op waits for the other thread
    (measured: 7 s vs 0.04 s for one sampling run), so these tests run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf():
    transformers = import_musicgen()
    transformers.logging.set_verbosity_error()  # pad id == vocab size (as in MusicGen) draws a warning
    return transformers


@pytest.fixture(scope="module")
def hf_model(hf):
    torch.manual_seed(0)
    return hf.MusicgenForConditionalGeneration(tiny_config(hf)).eval()


def _condition(batch: int = 2, length: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 2 :] = 0  # one padded prompt
    return {"input_ids": torch.randint(0, TEXT_VOCAB, (batch, length), generator=g), "attention_mask": mask}


def _hf_decoder_input(steps: torch.Tensor, start: int) -> torch.Tensor:
    """Our steps ``[B, K, S]`` -> what HF's decoder reads: ``[B * K, S]`` = start column + steps[:-1]."""
    b, k, _ = steps.shape
    return torch.cat([torch.full((b, k, 1), start), steps[..., :-1]], -1).reshape(b * k, -1)


def test_logits_equal_hf_forward(hf_model):
    gen = MusicgenGenerator(hf_model).eval()
    cond = _condition()
    steps = sample(gen, cond, 6, seed=0)  # pads where the delay pattern has no token
    ours = gen(steps, cond)
    ref = hf_model(
        input_ids=cond["input_ids"],
        attention_mask=cond["attention_mask"],
        decoder_input_ids=_hf_decoder_input(steps, V),
    ).logits
    assert ours.shape == (2, 2, 7, V)
    torch.testing.assert_close(ours, ref.reshape(2, 2, 7, V), rtol=0, atol=0)
    assert gen.pattern.delays == (0, 1) and gen.vocab_size == V and gen.num_codebooks == 2


def test_kv_cache_and_precomputed_encoder_states_match(hf_model):
    gen = MusicgenGenerator(hf_model).eval()
    cond = _condition()
    steps = sample(gen, cond, 8, seed=1)
    full = gen(steps, cond)
    cache = gen.new_cache(2, steps.shape[2])
    incremental = torch.cat(
        [gen(steps[..., : s + 1], cond, cache=cache) for s in range(steps.shape[2])], dim=2
    )
    torch.testing.assert_close(incremental, full, atol=1e-4, rtol=1e-4)  # logits ~ 1e2 (initializer_factor)
    config = SamplingConfig(guidance_scale=3.0)
    a = sample(gen, cond, 8, config, num_samples=2, seed=3, decoding=DecodeConfig(use_cache=True))
    assert torch.equal(
        a, sample(gen, cond, 8, config, num_samples=2, seed=3, decoding=DecodeConfig(use_cache=False))
    )
    encoded = gen.encode_text(cond["input_ids"], cond["attention_mask"])
    assert torch.equal(a, sample(gen, encoded, 8, config, num_samples=2, seed=3))


def test_greedy_cfg_tokens_equal_hf_generate(hf_model):
    """With top_k=1 both samplers are deterministic (argmax of the CFG logits), so tokens must agree."""
    gen = MusicgenGenerator(hf_model).eval()
    cond, frames, scale = _condition(), 8, 3.0
    captured = {}
    real_decode = hf_model.audio_encoder.decode

    def capture(codes, *args, **kwargs):  # generate() returns audio; keep the codes it decodes
        captured["codes"] = codes.clone()
        return real_decode(codes, *args, **kwargs)

    hf_model.audio_encoder.decode = capture
    try:
        hf_model.generate(
            **cond, do_sample=False, guidance_scale=scale, max_length=1 + gen.pattern.num_steps(frames)
        )
    finally:
        del hf_model.audio_encoder.decode
    hf_frames = captured["codes"][0]  # [B, K, T]
    ours = gen.pattern.steps_to_frames(
        sample(gen, cond, frames, SamplingConfig(top_k=1, guidance_scale=scale))
    )
    assert torch.equal(ours, hf_frames)
    plain = gen.pattern.steps_to_frames(sample(gen, cond, frames, SamplingConfig(top_k=1)))
    assert not torch.equal(plain, hf_frames), (
        "guidance must change the greedy path, or this test proves nothing"
    )


def test_cfg_logits_equal_hf_logits_processor_at_every_step(hf, hf_model):
    """Stochastic CFG sampling draws differently from HF's (it inverts a CDF with its own seeded
    uniforms; HF calls torch.multinomial on the global RNG), so tokens cannot match; the distribution
    they are drawn from can: on a sampled sequence, at every step, our CFG logits equal what HF's
    ClassifierFreeGuidanceLogitsProcessor makes of HF's [cond; null] logits."""
    from transformers.generation.logits_process import ClassifierFreeGuidanceLogitsProcessor

    gen = MusicgenGenerator(hf_model).eval()
    cond, scale = _condition(), 3.0
    steps = sample(gen, cond, 6, SamplingConfig(guidance_scale=scale), seed=5)
    null = gen.null_condition(cond)
    logits = gen(torch.cat([steps, steps]), cat_conditions(cond, null))
    ours = cfg_logits(logits[:2], logits[2:], scale)  # [B, K, S, V]

    # HF's unconditional half: zeroed encoder states and attention mask (generate's own construction)
    states = hf_model.text_encoder(**cond).last_hidden_state
    hf_logits = hf_model(
        encoder_outputs=(torch.cat([states, torch.zeros_like(states)]),),
        attention_mask=torch.cat([cond["attention_mask"], torch.zeros_like(cond["attention_mask"])]),
        decoder_input_ids=_hf_decoder_input(torch.cat([steps, steps]), V),
    ).logits  # [2 * B * K, S, V]
    processor = ClassifierFreeGuidanceLogitsProcessor(scale)
    for s in range(steps.shape[2]):
        guided = processor(torch.zeros(4, s + 1, dtype=torch.long), hf_logits[:, s])  # [B * K, V]
        torch.testing.assert_close(ours[:, :, s].reshape(4, V), guided, atol=1e-5, rtol=1e-5)


def test_stereo_pattern_and_logits(hf):
    torch.manual_seed(1)
    model = hf.MusicgenForConditionalGeneration(tiny_config(hf, num_codebooks=4, channels=2)).eval()
    gen = MusicgenGenerator(model).eval()
    assert gen.pattern.delays == (0, 0, 1, 1)  # left/right codebooks interleaved, one delay per pair
    cond = _condition()
    steps = sample(gen, cond, 5, seed=0)
    ref = model(**cond, decoder_input_ids=_hf_decoder_input(steps, V)).logits
    torch.testing.assert_close(gen(steps, cond), ref.reshape(2, 4, -1, V), rtol=0, atol=0)
    assert gen.decode(gen.pattern.steps_to_frames(steps)).shape[:2] == (2, 2)


@pytest.mark.slow  # trains a model
def test_trains_with_cfg_distillation_and_checkpoint_rebuilds_it(hf, hf_model, tmp_path):
    import copy

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_cfgrl.io.generators import load_generator

    gen = MusicgenGenerator(copy.deepcopy(hf_model)).train()
    frozen = {name for name, p in gen.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("model.text_encoder", "model.audio_encoder")) for name in frozen)
    cond = _condition(batch=4)
    data = DataLoader(
        [{"input_ids": cond["input_ids"][i], "attention_mask": cond["attention_mask"][i]} for i in range(4)],
        batch_size=2,
        collate_fn=lambda rows: {"condition": {k: torch.stack([r[k] for r in rows]) for k in rows[0]}},
    )
    module = CFGRLModule(gen, rollout={"num_frames": 4}, optimization={"learning_rate": 1e-2})
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[CFGDistillCallback(guidance_scale=3.0)],
    )
    trainer.fit(module, data)
    after = gen.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.decoder") for k in changed)
    assert not any(k.startswith(("model.text_encoder", "model.audio_encoder")) for k in changed)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    rebuilt = load_generator(path)  # from the recorded config spec, weights_only
    steps = sample(gen.eval(), cond, 4, seed=0)
    torch.testing.assert_close(rebuilt(steps, cond), gen(steps, cond))


@pytest.mark.slow  # trains a model
def test_controls_on_the_decoder_input_embeddings(hf, hf_model, tmp_path):
    """A control-aware adapter: a base state dict loads unchanged (HF's own logits), the control path is
    cache-exact and changes the samples once moved, a deep copy (the teacher) keeps its own hook, and a
    guidance range trains it through CFGRLModule."""
    import copy

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_cfgrl.core.controls import load_base_weights
    from lightning_cfgrl.io.generators import load_generator

    base = MusicgenGenerator(hf_model).eval()
    steerable = MusicgenGenerator(config=hf_model.config.to_dict(), controls=["guidance_scale"]).eval()
    missing = load_base_weights(steerable, base.state_dict())
    assert missing and all(k.startswith("control_emb.") for k in missing)
    cond = _condition()
    steps = sample(base, cond, 6, seed=0)
    g = {"guidance_scale": torch.tensor([1.5, 4.0])}
    torch.testing.assert_close(steerable(steps, cond, controls=g), base(steps, cond), rtol=0, atol=0)

    with torch.no_grad():
        for p in steerable.control_emb.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    moved = steerable(steps, cond, controls=g)
    assert not torch.allclose(moved, base(steps, cond))
    torch.testing.assert_close(
        steerable(steps, cond), base(steps, cond), rtol=0, atol=0
    )  # no controls: no term
    config = SamplingConfig(guidance_scale=3.0)
    a = sample(steerable, cond, 8, config, num_samples=2, seed=3, controls={"guidance_scale": 2.0})
    assert torch.equal(
        a,
        sample(
            steerable,
            cond,
            8,
            config,
            num_samples=2,
            seed=3,
            controls={"guidance_scale": 2.0},
            decoding=DecodeConfig(use_cache=False),
        ),
    )
    assert not torch.equal(a, sample(steerable, cond, 8, config, num_samples=2, seed=3))
    teacher = copy.deepcopy(steerable)
    with torch.no_grad():
        for p in teacher.control_emb.parameters():
            p.zero_()
    torch.testing.assert_close(teacher(steps, cond, controls=g), base(steps, cond), rtol=0, atol=0)
    torch.testing.assert_close(steerable(steps, cond, controls=g), moved, rtol=0, atol=0)
    with pytest.raises(ValueError, match="MusicgenGenerator does not accept the control 'guidance_scale'"):
        base(steps, cond, controls=g)

    student = MusicgenGenerator(config=hf_model.config.to_dict(), controls=["guidance_scale"]).train()
    load_base_weights(student, base.state_dict())
    rows = _condition(batch=4)
    data = DataLoader(
        [{"input_ids": rows["input_ids"][i], "attention_mask": rows["attention_mask"][i]} for i in range(4)],
        batch_size=2,
        collate_fn=lambda r: {"condition": {k: torch.stack([x[k] for x in r]) for k in r[0]}},
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[CFGDistillCallback(guidance_scale=[1.0, 5.0])],
    )
    trainer.fit(CFGRLModule(student, rollout={"num_frames": 4}, optimization={"learning_rate": 1e-2}), data)
    assert float(student.control_emb.mlps["guidance_scale"][2].weight.detach().abs().sum()) > 0
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    rebuilt = load_generator(tmp_path / "s.ckpt")
    assert rebuilt.control_names == ("guidance_scale",)
    torch.testing.assert_close(rebuilt(steps, cond, controls=g), student.eval()(steps, cond, controls=g))


def test_errors(hf_model):
    gen = MusicgenGenerator(hf_model)
    with pytest.raises(ValueError, match="exactly one of 'input_ids'"):
        gen(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="needs an 'attention_mask'"):
        gen.null_condition({"input_ids": torch.zeros(1, 5, dtype=torch.long)})
    with pytest.raises(ValueError, match="contain id 17"):
        gen(torch.full((2, 2, 4), 17), _condition())
    with pytest.raises(ValueError, match="exactly one of model"):
        MusicgenGenerator()
    with pytest.raises(TypeError, match="got Linear"):
        MusicgenGenerator(torch.nn.Linear(2, 2))


def test_adapter_imports_without_transformers_and_names_the_extra(monkeypatch):
    import importlib.util

    import lightning_cfgrl.adapters.musicgen as installed

    for name in [n for n in sys.modules if n.split(".")[0] == "transformers"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    spec = importlib.util.spec_from_file_location("musicgen_without_transformers", installed.__file__)
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, fresh)
    spec.loader.exec_module(fresh)  # the module itself imports without transformers
    with pytest.raises(ImportError, match=r"pip install lightning-cfgrl\[musicgen\]"):
        fresh.MusicgenGenerator("facebook/musicgen-small")
