"""Autoregressive sampling with temperature, top-k, top-p and classifier-free guidance.

CFG doubles the batch (``[cond; null]``) so each step is one forward pass. Sampling draws one uniform
number per (sequence, codebook, step) from a seeded ``torch.Generator`` and inverts the CDF, so the
random stream does not depend on the logits: with and without the KV cache the same seed gives the
same tokens.

``DecodeConfig(compile=True)`` decodes steps 1.. through the generator's static-shape ``decode_step`` (a preallocated
cache attended with a mask: the same tensor shapes at every step) compiled once with ``torch.compile``;
mixing, truncation and drawing stay eager, so the only difference from the eager path is the float
rounding of the compiled model's logits (docs: Guides, Generation).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_cfgrl.core.checks import check_int, check_real, check_seed
from lightning_cfgrl.core.condition import (
    Condition,
    cat_conditions,
    condition_batch_size,
    repeat_condition,
)
from lightning_cfgrl.core.controls import cat_controls, check_controls, controls_kwargs, expand_controls
from lightning_cfgrl.core.generator import TokenGenerator, check_logits, pad_id
from lightning_cfgrl.core.guidance import cfg_mixer, check_guidance_scale

# Below the smallest normal float32, 1 / temperature overflows and the temperature itself rounds to a
# subnormal or zero in float32 arithmetic; such a temperature is greedy decoding in all but name.
MIN_TEMPERATURE = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class SamplingConfig:
    """How to turn logits ``[B, K, V]`` into tokens. ``guidance_scale = 1`` means no CFG (one pass, no
    null batch).

    Args:
        temperature: logits are divided by it (> 0; 1 samples the model's own distribution).
        top_k: keep the k most likely tokens of each codebook (None: all).
        top_p: keep the smallest set of tokens whose probability reaches p, in (0, 1] (None: all).
        guidance_scale: CFG's g, mixing ``uncond + g * (cond - uncond)`` (1: no guidance, one pass).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        check_real("temperature", self.temperature)
        check_int("top_k", self.top_k, allow_none=True)
        check_real("top_p", self.top_p, allow_none=True)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be >= {MIN_TEMPERATURE:.3g} (the smallest normal float32), got "
                f"{self.temperature}; for greedy decoding use top_k=1"
            )
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        check_guidance_scale(self.guidance_scale)

    @property
    def is_plain(self) -> bool:
        """True when sampling is from the model's own distribution (what on-policy RL assumes)."""
        return self.temperature == 1.0 and self.top_k is None and self.top_p in (None, 1.0)

    @property
    def forward_passes_per_step(self) -> int:
        return 1 if self.guidance_scale == 1.0 else 2


def process_logits(logits: Tensor, config: SamplingConfig) -> Tensor:
    """Temperature, then top-k, then top-p on ``[..., V]``; removed tokens get ``-inf``.

    Differentiable, so the policy gradient can use the log-probs of the distribution actually sampled.
    A tiny temperature tends to greedy decoding without overflow: the row maximum is subtracted first
    (softmax ignores the shift), so the best token's logit is 0 and the others go to -inf, never NaN.
    """
    if config.temperature != 1.0:  # skip a full copy of the logits per sampled step
        logits = (logits - logits.amax(-1, keepdim=True).detach()) / config.temperature
    if config.top_k is not None and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass strictly before it already reaches top_p (the top token always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= config.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _cdf(logits: Tensor) -> Tensor:
    """``[..., V]`` logits -> their unnormalised CDF ``[..., V]`` (float32, float64 for float64 logits: a
    float64 logit beyond float32's range must not overflow to inf). Its last entry is the row's mass: 1
    up to rounding, NaN when the row has no finite positive mass (all -inf, a NaN or a +inf)."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.to(dtype).softmax(-1).cumsum(-1)


def _search(cdf: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF sampling: a ``[..., V]`` CDF and ``[...]`` uniforms in [0, 1) -> ``[...]`` ids.

    Token i is drawn when ``cdf[i - 1] <= u * cdf[-1] < cdf[i]``: the right-sided search never returns a
    token of zero mass (the left-sided one did for u = 0 when token 0 is masked). ``u * cdf[-1]`` is kept
    strictly below ``cdf[-1]``: a uniform that rounds to 1 in the CDF's dtype (a float64 one in float32)
    or a product that rounds up would fall past the end, onto the last token even when it is masked.
    """
    total = cdf[..., -1:]
    scaled = torch.minimum(
        uniforms.unsqueeze(-1).to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total))
    )
    ids = torch.searchsorted(cdf, scaled, right=True).squeeze(-1)
    return ids.clamp_(max=cdf.shape[-1] - 1)  # only a row without mass (NaN) gets here; sample() refuses it


def _draw(logits: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF sampling: ``[..., V]`` logits and ``[...]`` uniforms in [0, 1) -> ``[...]`` ids (see
    :func:`_search`; a zero-probability token is never drawn, in any dtype)."""
    return _search(_cdf(logits), uniforms)


class NoMassError(FloatingPointError):
    """A decoding step's logits row has no finite positive mass: no token can be drawn from it."""


def no_mass_error(generator: object, no_mass: Tensor, config: SamplingConfig) -> NoMassError:
    """The sampler's refusal: ``no_mass`` ``[S, N, K]`` marks (step, sequence, codebook) rows whose
    processed logits have no finite positive mass; the error names the first step, its rows and the
    generator."""
    step = int(no_mass.any(-1).any(-1).nonzero()[0])
    rows = no_mass[step].nonzero().tolist()
    shown = ", ".join(f"(sequence {b}, codebook {k})" for b, k in rows[:4]) + (
        f" and {len(rows) - 4} more" if len(rows) > 4 else ""
    )
    return NoMassError(
        f"sampling refused: at decoding step {step}, the logits of {type(generator).__name__} (after {config}) "
        f"have no finite positive mass in {len(rows)} row(s): {shown}; every token is -inf or a logit is NaN/+inf, "
        f"so no token can be drawn ({int(no_mass.any(-1).any(-1).sum())} step(s) affected). Check the "
        "generator's weights (NaN?) and any masking that removes every token."
    )


@dataclass(frozen=True)
class DecodeConfig:
    """How :func:`sample` computes each step's logits; the tokens do not depend on it (compiled: up to the
    rounding of the logits).

    Args:
        use_cache: use the generator's KV cache when it has one (the same tokens as recomputing every
            step, faster).
        compile: decode steps 1.. with the generator's static-shape ``decode_step`` compiled by
            ``torch.compile`` (traced once per model shape, batch size and length, then reused by later
            calls of the same shapes); the tokens are the eager path's up to the rounding of the logits.
            Needs a generator with ``decode_step`` (:class:`~lightning_cfgrl.models.AudioTokenTransformer`).
            Eager is the default: on CPU the compiled step saves little once the model's matmuls dominate
            (docs: Guides, Generation). A string is the ``torch.compile`` mode: ``"reduce-overhead"``
            replays the step as a CUDA graph on CUDA (the cache buffers are marked as static addresses,
            so the graph writes them in place).
    """

    use_cache: bool = True
    compile: bool | str = False

    def __post_init__(self) -> None:
        if not isinstance(self.use_cache, bool):
            raise TypeError(f"decoding.use_cache must be True or False, got {self.use_cache!r}")
        if not isinstance(self.compile, (bool, str)):
            raise TypeError(
                f"decoding.compile must be True, False or a torch.compile mode {COMPILE_MODES}, "
                f"got {self.compile!r}"
            )


def step_seed(seed: int, step: int, rank: int = 0, salt: int = 0) -> int:
    """A seed distinct per (run seed, training step, process rank, salt) and the same after a resume."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + salt) % (2**63)


def make_rng(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator | None:
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(check_seed(seed))


@torch.no_grad()
def sample(
    generator: TokenGenerator,
    condition: Condition,
    num_frames: int,
    config: SamplingConfig = SamplingConfig(),
    num_samples: int = 1,
    seed: int | torch.Generator | None = None,
    controls: Mapping[str, float | Tensor] | None = None,
    decoding: DecodeConfig = DecodeConfig(),
) -> Tensor:
    """Sample ``num_samples`` sequences per prompt.

    Args:
        generator: any :class:`TokenGenerator` (in eval mode, usually).
        condition: ``[B, ...]`` prompts (tensor or dict of tensors).
        num_frames: frames T to generate per sequence.
        config: temperature / top-k / top-p / guidance.
        num_samples: G samples per prompt; the G samples of a prompt are adjacent in the output.
        seed: int or ``torch.Generator`` for reproducible sampling.
        controls: control values for a generator that lists them in ``control_names`` (see
            :mod:`lightning_cfgrl.core.controls`), e.g. ``{"guidance_scale": 3.0}``: a number for every
            sequence, a ``[B]`` tensor per prompt or a ``[B * G]`` tensor per sequence. They are passed to
            every forward, the CFG null half included (same values as its conditional half).
        decoding: how each step's logits are computed (KV cache, ``torch.compile``); the tokens do not
            depend on it (compiled: up to the rounding of the logits). See :class:`DecodeConfig`.

    Returns:
        steps ``[B * G, K, T + max_delay]`` int64 in the generator's step domain (``pad_id`` where the
        delay pattern has no token); ``generator.pattern.steps_to_frames`` gives ``[B * G, K, T]``.
    """
    if check_int("num_frames", num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if check_int("num_samples", num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not isinstance(decoding, DecodeConfig):
        raise TypeError(f"decoding must be a DecodeConfig, got {type(decoding).__name__}")
    use_cache, compile = decoding.use_cache, decoding.compile
    device = next(generator.parameters()).device
    if condition_batch_size(condition) == 0:
        raise ValueError("the condition batch is empty (0 prompts): give at least one prompt to sample")
    condition = repeat_condition(condition, num_samples)
    batch = condition_batch_size(condition)
    steering = expand_controls(controls or {}, batch // num_samples, num_samples, device)
    check_controls(generator, steering, batch)
    guided = config.guidance_scale != 1.0
    if guided:
        condition = cat_conditions(condition, generator.null_condition(condition))
        steering = cat_controls(steering, steering)
    extra = controls_kwargs(steering)
    rng = make_rng(seed, device)

    k = generator.num_codebooks
    num_steps = generator.pattern.num_steps(num_frames)
    valid = generator.pattern.valid_mask(num_steps, device)  # [K, S]
    all_valid = valid.all(0).tolist()  # one host read up front, none per step
    pad = torch.full((batch, k), pad_id(generator), dtype=torch.long, device=device)
    # CFG runs [cond; null] on the same tokens: keep both halves in one buffer and write each new step
    # into both, rather than concatenating the whole sequence again at every step
    inputs = torch.full(
        (2 if guided else 1, batch, k, num_steps), pad_id(generator), dtype=torch.long, device=device
    )
    flat_inputs = inputs.view(-1, k, num_steps)
    graphs = compile == "reduce-overhead" and device.type == "cuda"
    if graphs:  # the same buffers every call: a CUDA graph recorded on them replays, not re-records
        cache = _reused_cache(generator, flat_inputs.shape[0], num_steps)
    else:
        cache = generator.new_cache(flat_inputs.shape[0], num_steps) if use_cache or compile else None
    decode_step = compiled_decode_step(generator, cache, compile) if compile else None
    no_mass = torch.zeros(num_steps, batch, k, dtype=torch.bool, device=device)  # [S, N, K]
    position = torch.zeros(1, dtype=torch.long, device=device)  # written in place: one tensor for every step
    mix = cfg_mixer(config.guidance_scale)  # the scale validated once, not at every step
    for s in range(num_steps):
        if decode_step is not None and s > 0:  # static shapes: [B(x2), K] ids of step s - 1 in, logits out
            if graphs:  # each replay overwrites the last one's logits, which are used up by now
                torch.compiler.cudagraph_mark_step_begin()
            logits = decode_step(flat_inputs[:, :, s - 1], position.fill_(s), cache, **extra)
            cache.advance(1, 1)
        else:
            logits = generator(flat_inputs[:, :, : s + 1], condition, cache=cache, **extra)
            if s == 0:  # the contract, once: [B(x2), K, 1, V] whether or not the generator caches
                check_logits(logits, generator, flat_inputs.shape[0], 1)
            logits = logits[:, :, -1]  # [B(x2), K, V]
        if guided:
            logits = mix(logits[:batch], logits[batch:])
        uniforms = torch.rand(batch, k, generator=rng, device=device)
        cdf = _cdf(process_logits(logits, config))
        ids = _search(cdf, uniforms)
        # NaN > 0 is False: a row without mass is flagged; kept on the device, read once after the loop
        torch.logical_not(cdf[..., -1] > 0, out=no_mass[s])
        inputs[:, :, :, s] = ids if all_valid[s] else torch.where(valid[:, s], ids, pad)
    no_mass &= valid.t().unsqueeze(1)  # [S, 1, K]: positions the delay pattern pads are never sampled
    if bool(no_mass.any()):
        raise no_mass_error(generator, no_mass, config)
    return inputs[0].clone() if guided else inputs[0]  # don't keep the null half alive


def check_compilable(generator: TokenGenerator) -> None:
    """``compile=True`` needs the optional ``decode_step`` of the generator protocol: one cached step with
    static shapes (:meth:`~lightning_cfgrl.models.AudioTokenTransformer.decode_step` documents it)."""
    if not callable(getattr(generator, "decode_step", None)):
        raise ValueError(
            f"decoding.compile=True needs a generator with a static-shape decode_step; {type(generator).__name__} has "
            "none (AudioTokenTransformer has one); sample with compile=False"
        )


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiled_decode_step(
    generator: TokenGenerator, cache: object, compile: bool | str = True
) -> Callable[..., Tensor]:
    """``generator.decode_step`` compiled with static shapes (``torch.compile``, full graph); ``compile``
    is ``True`` or a ``torch.compile`` mode (:data:`COMPILE_MODES`).

    Dynamo keeps the traced graph with the method's code and reuses it for every later call whose
    guards hold (same model shape, batch size, cache length, dtype; another instance of the same
    architecture too), so only the first ``sample`` of a shape pays the compile time. With
    ``"reduce-overhead"`` on CUDA the cache's tensors are marked as static addresses: a CUDA graph may
    then write them in place (mutated inputs at other addresses would make inductor skip the graph);
    a new cache (each ``sample`` call) re-records the graph once."""
    mode = None if compile is True else compile
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(
            f"compile must be True, False or a torch.compile mode {COMPILE_MODES}, got {compile!r}"
        )
    check_compilable(generator)
    if cache is None:
        raise ValueError(
            f"decoding.compile=True needs a KV cache; {type(generator).__name__}.new_cache returned None"
        )
    if mode == "reduce-overhead":
        for tensor in _cache_tensors(cache):
            if tensor.is_cuda:
                torch._dynamo.mark_static_address(tensor)
    return torch.compile(generator.decode_step, fullgraph=True, dynamic=False, mode=mode)


_REUSED_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reused_cache(generator: TokenGenerator, batch_size: int, max_steps: int) -> object:
    """One cache per (generator, batch size, length), reset for each sequence where it can be
    (``reset()``), so CUDA graphs recorded on its buffers stay valid across ``sample`` calls."""
    weight = next(generator.parameters())
    key = (batch_size, max_steps, weight.dtype, weight.device)
    held = _REUSED_CACHES.get(generator)
    if held is not None and held[0] == key and callable(getattr(held[1], "reset", None)):
        held[1].reset()
        return held[1]
    cache = generator.new_cache(batch_size, max_steps)
    _REUSED_CACHES[generator] = (key, cache)
    return cache


def _cache_tensors(cache: object) -> list[Tensor]:
    """The tensors a cache object holds in its attributes (directly or in lists/tuples)."""
    found = []
    for value in vars(cache).values() if hasattr(cache, "__dict__") else ():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, Tensor):
                found.append(item)
    return found
