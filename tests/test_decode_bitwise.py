"""The decode path's per-step shortcuts change no bit: tokens and logits against a straightforward
reference implementation (the model and sampler as written before the shortcuts: one embedding lookup
per codebook, einops rearranges, dropout module calls, ``cfg_logits`` re-validated every step), and
state dicts in the per-codebook layout of earlier checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lightning_cfgrl import DecodeConfig, SamplingConfig, sample
from lightning_cfgrl.core.condition import cat_conditions, condition_batch_size, repeat_condition
from lightning_cfgrl.core.controls import cat_controls, controls_kwargs, expand_controls
from lightning_cfgrl.core.guidance import cfg_logits, cfg_mixer
from lightning_cfgrl.core.sampling import _draw, make_rng, process_logits
from lightning_cfgrl.models import AudioTokenTransformer
from lightning_cfgrl.models.transformer import CodebookEmbedding


def reference_attention(attn, x, cache, layer):
    q, k, v = rearrange(attn.qkv(x), "b n (three h d) -> three b h n d", three=3, h=attn.num_heads)
    past = 0
    if cache is not None:
        past = cache.length
        k, v = cache.update(layer, k, v)
    if past == 0:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif q.shape[2] == 1:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(diagonal=past)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.proj(rearrange(out, "b h n d -> b n (h d)"))


def reference_forward(model, steps, condition, cache=None, controls=None):
    start = cache.steps if cache is not None else 0
    if start == 0:
        shifted = F.pad(steps[:, :, :-1], (1, 0), value=model.vocab_size)
    else:
        shifted = steps[:, :, start - 1 : -1]
    x = F.embedding(shifted[:, 0], model.token_emb.codebook(0))
    for k in range(1, model.num_codebooks):
        x = x + F.embedding(shifted[:, k], model.token_emb.codebook(k))
    slots = len(model.condition_sizes)
    if start == 0:
        prefix = torch.stack([emb(condition[:, a]) for a, emb in enumerate(model.cond_emb)], dim=1)
        x = torch.cat([prefix, x], dim=1)
    positions = torch.arange(
        0 if start == 0 else slots + start, x.shape[1] + (0 if start == 0 else slots + start)
    )
    x = x + model.pos_emb(positions)
    if controls:
        x = x + model.control_emb(controls)[:, None]
    for layer, block in enumerate(model.blocks):
        x = x + block.dropout(reference_attention(block.attn, block.norm1(x), cache, layer))
        x = x + block.dropout(block.mlp(block.norm2(x)))
    if cache is not None:
        cache.advance(x.shape[1], steps.shape[2] - start)
    if start == 0:
        x = x[:, slots:]
    return rearrange(model.heads(model.norm(x)), "b s (k v) -> b k s v", k=model.num_codebooks)


@torch.no_grad()
def reference_sample(model, condition, num_frames, config, num_samples, seed, use_cache=True, controls=None):
    condition = repeat_condition(condition, num_samples)
    batch = condition_batch_size(condition)
    steering = expand_controls(controls or {}, batch // num_samples, num_samples, torch.device("cpu"))
    guided = config.guidance_scale != 1.0
    if guided:
        condition = cat_conditions(condition, model.null_condition(condition))
        steering = cat_controls(steering, steering)
    extra = controls_kwargs(steering)
    rng = make_rng(seed, torch.device("cpu"))
    k, num_steps = model.num_codebooks, model.pattern.num_steps(num_frames)
    valid = model.pattern.valid_mask(num_steps, torch.device("cpu"))
    steps = torch.full((batch, k, num_steps), model.vocab_size, dtype=torch.long)
    cache = model.new_cache(batch * (2 if guided else 1), num_steps) if use_cache else None
    for s in range(num_steps):
        inputs = torch.cat([steps, steps]) if guided else steps
        logits = reference_forward(model, inputs[:, :, : s + 1], condition, cache, **extra)[:, :, -1]
        if guided:
            logits = cfg_logits(logits[:batch], logits[batch:], config.guidance_scale)
        ids = _draw(process_logits(logits, config), torch.rand(batch, k, generator=rng))
        steps[:, :, s] = torch.where(valid[:, s], ids, model.vocab_size)
    return steps


CASES = [
    (dict(num_codebooks=1, vocab_size=64, dim=64), SamplingConfig()),
    (
        dict(num_codebooks=2, vocab_size=32, dim=64, options={"dropout": 0.1}),
        SamplingConfig(guidance_scale=3.0),
    ),
    (dict(num_codebooks=4, vocab_size=48, dim=32, num_layers=3), SamplingConfig(0.8, 20, None, 0.5)),
    (
        dict(num_codebooks=3, vocab_size=40, dim=48, num_heads=3, options={"delays": [0, 2, 3]}),
        SamplingConfig(top_p=0.9, guidance_scale=1.7),
    ),
    (dict(num_codebooks=4, vocab_size=256, dim=128, num_layers=2), SamplingConfig(guidance_scale=3.0)),
    (
        dict(num_codebooks=2, vocab_size=32, dim=32, options={"controls": ["guidance_scale"]}),
        SamplingConfig(guidance_scale=2.0),
    ),
]


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_tokens_and_logits_bitwise_equal_to_reference(case, use_cache):
    model_args, config = CASES[case]
    torch.manual_seed(case)
    model = AudioTokenTransformer(condition_sizes=(4, 4, 3), max_frames=32, **model_args).eval()
    controls = None
    if model.control_emb is not None:
        with torch.no_grad():  # zero-initialised: make the control input matter
            for p in model.control_emb.parameters():
                p.normal_(0, 0.5)
        controls = {"guidance_scale": torch.tensor([1.0, 3.0, 2.0])}
    cond = torch.tensor([[1, 2, 3], [0, 0, 0], [4, 1, 2]])
    args = (cond, 24, config)
    got = sample(
        model,
        *args,
        num_samples=2,
        seed=7 + case,
        controls=controls,
        decoding=DecodeConfig(use_cache=use_cache),
    )
    want = reference_sample(
        model, *args, num_samples=2, seed=7 + case, use_cache=use_cache, controls=controls
    )
    assert torch.equal(got, want)
    with torch.no_grad():  # teacher-forced logits, the training path (float32, compared bitwise)
        kw = {"controls": {"guidance_scale": torch.full((6,), 2.0)}} if controls else {}
        full_cond = cond.repeat_interleave(2, 0)
        assert torch.equal(model(got, full_cond, **kw), reference_forward(model, got, full_cond, **kw))


def test_dropout_in_training_unchanged():
    """With p > 0 in training the dropout modules still run, drawing the same masks as before."""
    torch.manual_seed(0)
    model = AudioTokenTransformer(num_codebooks=2, options={"dropout": 0.3}).train()
    steps = torch.randint(0, 32, (2, 2, 9))
    cond = torch.tensor([[1, 2, 3], [0, 1, 0]])
    torch.manual_seed(1)
    got = model(steps, cond)
    torch.manual_seed(1)
    assert torch.equal(got, reference_forward(model, steps, cond))
    model.blocks[0].dropout.p = 0.0  # what disable_dropout does: then no mask at all
    torch.manual_seed(2)
    got = model(steps, cond)
    torch.manual_seed(2)
    assert torch.equal(got, reference_forward(model, steps, cond))


def test_cfg_mixer_equals_the_written_formula_in_float64():
    torch.manual_seed(0)
    cond, uncond = torch.randn(4, 3, 50, dtype=torch.float64), torch.randn(4, 3, 50, dtype=torch.float64)
    cond[0, 0, :3] = float("-inf")
    uncond[1, 1, 5] = float("-inf")
    cond[2, 2, 7] = float("nan")
    uncond[2, 2, 7] = float("-inf")  # NaN beside -inf: masked, as with isneginf | isneginf
    cond[3, 0, 9] = float("nan")  # NaN beside a finite logit stays NaN
    for scale in (0.0, 0.5, 1.0, 3.0):
        want = uncond + scale * (cond - uncond)
        want = want.masked_fill(torch.isneginf(cond) | torch.isneginf(uncond), float("-inf"))
        if scale in (0.0, 1.0):
            want = uncond if scale == 0.0 else cond
        for got in (cfg_mixer(scale)(cond, uncond), cfg_logits(cond, uncond, scale)):
            assert torch.equal(got.isnan(), want.isnan())
            assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
    with pytest.raises(ValueError):
        cfg_mixer(-1.0)


def _per_codebook(state: dict, num_codebooks: int) -> dict:
    """The layout every checkpoint had before ``CodebookEmbedding``: ``token_emb.{k}.weight``."""
    out = {k: v.clone() for k, v in state.items() if k != "token_emb.weight"}
    for k, part in enumerate(state["token_emb.weight"].chunk(num_codebooks)):
        out[f"token_emb.{k}.weight"] = part.clone()
    return out


def test_state_dict_names_the_real_parameter_and_earlier_checkpoints_load():
    torch.manual_seed(0)
    model = AudioTokenTransformer(num_codebooks=3, vocab_size=16)
    state = model.state_dict()
    # every key names an attribute (torch.distributed.checkpoint resolves them for FSDP checkpoints)
    assert [k for k in state if k.startswith("token_emb.")] == ["token_emb.weight"]
    assert all(model.get_parameter(k) is not None for k in state if k.endswith("weight"))
    # a checkpoint in the earlier per-codebook layout loads, strictly, into the same table
    old = _per_codebook(state, 3)
    other = AudioTokenTransformer(num_codebooks=3, vocab_size=16)
    other.load_state_dict(old)
    assert torch.equal(other.token_emb.weight, model.token_emb.weight)
    # a missing codebook is reported by its own key and keeps its values; the others load
    partial = {k: v for k, v in old.items() if k != "token_emb.1.weight"}
    fresh = AudioTokenTransformer(num_codebooks=3, vocab_size=16)
    before = fresh.token_emb.codebook(1).clone()
    result = fresh.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["token_emb.1.weight"] and not result.unexpected_keys
    assert torch.equal(fresh.token_emb.codebook(1), before)
    assert torch.equal(fresh.token_emb.codebook(2), model.token_emb.codebook(2))
    # a size mismatch names the per-codebook key, as with nn.Embedding
    with pytest.raises(RuntimeError, match=r"size mismatch for token_emb\.0\.weight"):
        AudioTokenTransformer(num_codebooks=3, vocab_size=16, dim=32).load_state_dict(old)


def test_init_draws_as_separate_embeddings():
    """The joined table draws the same numbers as K ``nn.Embedding`` built and initialised one after
    another, so a seed gives the same weights as before the tables were joined."""
    torch.manual_seed(3)
    joined = CodebookEmbedding(3, 16, 40)
    torch.manual_seed(3)
    tables = nn.ModuleList(nn.Embedding(16, 40) for _ in range(3))
    assert torch.equal(joined.weight, torch.cat([t.weight for t in tables]))
    torch.manual_seed(4)
    joined.reset_parameters(std=0.02)
    torch.manual_seed(4)
    for t in tables:
        nn.init.normal_(t.weight, std=0.02)
    assert torch.equal(joined.weight, torch.cat([t.weight for t in tables]))
