"""Reference model: a conditional decoder-only transformer over K codebooks (MusicGen-style).

Summed codebook embeddings in, K output heads out, the codebook delay pattern so codebook k of a frame
is predicted after codebooks < k of that frame. The prompt is a few attribute ids ``[B, A]`` (id 0 =
"no prompt" in every slot); each slot's embedding becomes one prefix position the tokens attend to.
Implements :class:`~lightning_cfgrl.core.generator.TokenGenerator` with a static KV cache, and, when
built with ``controls=[...]``, control inputs (:mod:`lightning_cfgrl.core.controls`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_cfgrl.core.controls import ControlEmbedding, Controls, check_controls
from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.generator import check_condition_matches, check_steps, class_spec
from lightning_cfgrl.models.kv_cache import KVCache, StaticStep


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cache: KVCache | StaticStep | None, layer: int) -> Tensor:
        # "b n (three h d) -> three b h n d" as a view + permute (an einops call costs ~10 us per step)
        qkv = self.qkv(x)
        b, n, width = qkv.shape
        q, k, v = qkv.view(b, n, 3, self.num_heads, width // (3 * self.num_heads)).permute(2, 0, 3, 1, 4)
        if isinstance(cache, StaticStep):  # one position, attending over the whole preallocated cache
            k, v = cache.cache.write(layer, k, v, cache.position)
            # written out rather than F.scaled_dot_product_attention: compiled, the mask and softmax fuse
            # into one kernel, where the CPU SDPA kernel costs ~0.1 ms per call even for one query
            scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
            out = scores.masked_fill(~cache.mask, float("-inf")).softmax(-1) @ v
            return self.proj(out.transpose(1, 2).reshape(b, n, width // 3))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer, k, v)
        n_new, n_all = q.shape[2], k.shape[2]
        if past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif n_new == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # several new positions after a cached prefix: causal mask offset by `past`
            mask = torch.ones(n_new, n_all, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, width // 3))  # "b h n d -> b n (h d)"


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, cache: KVCache | StaticStep | None, layer: int, film: Tensor | None = None
    ) -> Tensor:
        """``film [B, 1, 4 D]`` (optional): per-sequence ``(scale1, shift1, scale2, shift2)`` applied to
        the two normalised inputs, ``norm(x) * (1 + scale) + shift`` (zeros: exactly the block without)."""
        # dropout is the identity in eval and at p = 0 (no random numbers drawn): skip the module call
        # then, which is what a decode step sees. `p` is read at call time (disable_dropout sets it).
        if self.training and self.dropout.p > 0:
            x = x + self.dropout(self.attn(modulate(self.norm1(x), film, 0), cache, layer))
            return x + self.dropout(self.mlp(modulate(self.norm2(x), film, 1)))
        x = x + self.attn(modulate(self.norm1(x), film, 0), cache, layer)
        return x + self.mlp(modulate(self.norm2(x), film, 1))


def modulate(h: Tensor, film: Tensor | None, index: int) -> Tensor:
    """FiLM: ``h * (1 + scale) + shift`` with the ``index``-th (scale, shift) pair of ``film [..., 2 n D]``
    (``h`` itself when ``film`` is None)."""
    if film is None:
        return h
    dim = h.shape[-1]
    scale = film[..., 2 * index * dim : (2 * index + 1) * dim]
    shift = film[..., (2 * index + 1) * dim : (2 * index + 2) * dim]
    return torch.addcmul(shift, h, 1 + scale)


class CodebookEmbedding(nn.Module):
    """K token embeddings ``[V + 1, D]`` stored as one table ``[K * (V + 1), D]``: one lookup per forward
    instead of one per codebook, then the K vectors of a position summed (in codebook order, the same
    float sums as K separate lookups added one after another).

    The state dict holds the real parameter, ``{prefix}weight`` (the whole table): its keys must name
    attributes, which ``torch.distributed.checkpoint`` (FSDP / ModelParallel checkpoints) resolves one by
    one. Checkpoints written with the earlier ``ModuleList`` of ``nn.Embedding`` (``{prefix}{k}.weight``,
    ``[V + 1, D]`` each) still load: the per-codebook tables are joined on load.
    """

    def __init__(self, num_codebooks: int, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.num_codebooks = num_codebooks
        self.num_embeddings = num_embeddings
        self.weight = nn.Parameter(torch.empty(num_codebooks * num_embeddings, dim))
        self.register_buffer(
            "offsets", torch.arange(num_codebooks)[:, None] * num_embeddings, persistent=False
        )  # [K, 1]
        self.reset_parameters()
        self.register_load_state_dict_pre_hook(CodebookEmbedding._join_state_dict)

    def reset_parameters(self, std: float = 1.0) -> None:
        """Normal init codebook by codebook: the same random draws as K ``nn.Embedding`` in sequence."""
        with torch.no_grad():
            for table in self.weight.split(self.num_embeddings):
                nn.init.normal_(table, std=std)

    def codebook(self, k: int) -> Tensor:
        """Codebook k's table ``[V + 1, D]`` (a view)."""
        return self.weight[k * self.num_embeddings : (k + 1) * self.num_embeddings]

    def forward(self, ids: Tensor) -> Tensor:
        """``ids [B, K, n]`` -> ``[B, n, D]``, the sum over codebooks of each codebook's embedding."""
        vectors = F.embedding(ids + self.offsets, self.weight)  # [B, K, n, D]
        return vectors.sum(1) if self.num_codebooks > 1 else vectors[:, 0]

    @staticmethod
    def _join_state_dict(
        module: CodebookEmbedding,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Per-codebook keys (an earlier checkpoint) -> the joined table, reporting missing keys and size
        mismatches under the per-codebook names, exactly as the ``ModuleList`` of ``nn.Embedding`` did."""
        keys = [f"{prefix}{k}.weight" for k in range(module.num_codebooks)]
        if prefix + "weight" in state_dict or not any(key in state_dict for key in keys):
            return  # the joined layout, or nothing for this module (the usual missing-key report)
        expected = torch.Size((module.num_embeddings, module.weight.shape[1]))
        joined = module.weight.detach().clone()  # a codebook that cannot be loaded keeps its values
        for k, key in enumerate(keys):
            if key not in state_dict:
                missing_keys.append(key)
                continue
            table = state_dict.pop(key)
            if table.shape != expected:
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape {table.shape} from checkpoint, "
                    f"the shape in current model is {expected}."
                )
                continue
            joined[k * module.num_embeddings : (k + 1) * module.num_embeddings] = table
        state_dict[prefix + "weight"] = joined


class AudioTokenTransformer(nn.Module):
    """Conditional decoder over K codebooks.

    Args:
        num_codebooks: K.
        vocab_size: V tokens per codebook (id V is the pad/start id in step tensors).
        condition_sizes: number of values of each prompt attribute slot (ids 1..n; 0 = null).
        dim, num_layers, num_heads: transformer size.
        max_frames: longest sequence in frames (sets the positional table and cache size).
        dropout: residual dropout.
        delays: per-codebook delays; default ``(0, 1, ..., K-1)`` (MusicGen's delay pattern).
        gradient_checkpointing: in training forwards with grad, keep only each block's input and
            recompute the block in backward (less activation memory for one extra forward).
        controls: control inputs the model accepts, e.g. ``["guidance_scale", "diversity_weight"]``: a
            zero-initialised :class:`~lightning_cfgrl.core.controls.ControlEmbedding` added to every input
            position (the condition prefix and the tokens), so a base checkpoint loaded with
            :func:`~lightning_cfgrl.core.controls.load_base_weights` computes exactly the base's logits.
            The other parameters are initialised exactly as without controls (same seed, same weights).
        control_layers: where the controls enter. ``"input"`` (default): the input embedding above only.
            ``"every"``: also FiLM in every layer, a zero-initialised ``ControlEmbedding`` per block giving
            a per-sequence scale and shift of both of its normalised inputs (``norm(x) * (1 + s) + b``) and
            one for the final norm; still exactly the base's logits after ``load_base_weights``.
    """

    def __init__(
        self,
        num_codebooks: int = 2,
        vocab_size: int = 32,
        condition_sizes: Sequence[int] = (4, 4, 3),
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        max_frames: int = 64,
        dropout: float = 0.0,
        delays: Sequence[int] | None = None,
        gradient_checkpointing: bool = False,
        controls: Sequence[str] = (),
        control_layers: str = "input",
    ) -> None:
        super().__init__()
        self._init_args = dict(
            num_codebooks=num_codebooks,
            vocab_size=vocab_size,
            condition_sizes=list(condition_sizes),
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            max_frames=max_frames,
            dropout=dropout,
            delays=list(delays) if delays is not None else None,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.gradient_checkpointing = gradient_checkpointing
        if controls:  # recorded only when set, so base checkpoints' specs stay as they were
            self._init_args["controls"] = list(controls)
        if control_layers not in ("input", "every"):
            raise ValueError(f"control_layers must be 'input' or 'every', got {control_layers!r}")
        if control_layers != "input":
            if not controls:
                raise ValueError(f"control_layers={control_layers!r} needs controls=[...]")
            self._init_args["control_layers"] = control_layers
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_codebooks = num_codebooks
        self.vocab_size = vocab_size
        self.condition_sizes = tuple(int(n) for n in condition_sizes)
        self.pattern = DelayPattern(delays) if delays is not None else DelayPattern.musicgen(num_codebooks)
        self.max_steps = self.pattern.num_steps(max_frames)
        self.num_heads = num_heads
        num_slots = len(self.condition_sizes)

        self.token_emb = CodebookEmbedding(num_codebooks, vocab_size + 1, dim)
        self.cond_emb = nn.ModuleList(nn.Embedding(n + 1, dim) for n in self.condition_sizes)
        self.pos_emb = nn.Embedding(num_slots + self.max_steps, dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, num_codebooks * vocab_size)
        self.apply(self._init_weights)
        # built after the base init so the base parameters draw the same random numbers as without controls
        self.control_names = tuple(controls)
        self.control_emb = ControlEmbedding(self.control_names, dim) if controls else None
        # FiLM in every layer: 4 D per block (scale and shift of norm1 and norm2), 2 D for the final norm
        self.control_film = (
            nn.ModuleList(
                [ControlEmbedding(self.control_names, 4 * dim) for _ in range(num_layers)]
                + [ControlEmbedding(self.control_names, 2 * dim)]
            )
            if control_layers == "every"
            else None
        )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, CodebookEmbedding):
            module.reset_parameters(std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def spec(self) -> dict:
        """``class_path``/``init_args`` that rebuild this model (recorded in checkpoints' hparams)."""
        return class_spec(self, self._init_args)

    # -- TokenGenerator ---------------------------------------------------------------------------
    def null_condition(self, condition: Tensor) -> Tensor:
        return torch.zeros_like(condition)

    def new_cache(self, batch_size: int, max_steps: int) -> KVCache:
        p = self.heads.weight
        return KVCache(
            len(self.blocks),
            batch_size,
            self.num_heads,
            len(self.condition_sizes) + max_steps,
            p.shape[1] // self.num_heads,
            p.device,
            p.dtype,
        )

    def forward(
        self,
        steps: Tensor,
        condition: Tensor,
        cache: KVCache | None = None,
        controls: Controls | None = None,
    ) -> Tensor:
        """``steps [B, K, S]``, ``condition [B, A]``, ``controls {name: [B]}`` -> logits
        ``[B, K, S - cache.steps, V]``. With a cache, pass the same controls at every step."""
        if cache is None or cache.steps == 0:  # validate once per sequence, not once per decoded step
            if steps.dim() != 3:
                raise ValueError(f"tokens must have shape [B, K, S], got {tuple(steps.shape)}")
            self._check_condition(condition)
            check_condition_matches(condition, steps.shape[0])
            check_steps(steps[:, :, :-1], self)  # the last step is never read (it may be a placeholder)
            if controls:
                check_controls(self, controls, steps.shape[0])
        if steps.shape[2] > self.max_steps:
            raise ValueError(f"{steps.shape[2]} steps exceed max_steps {self.max_steps} (raise max_frames)")
        start = cache.steps if cache is not None else 0
        # position s reads the token of step s - 1 (the pad id at s = 0): the model shifts internally.
        # With a cache only the new positions are shifted, so a decoded step costs O(1), not O(S).
        if start == 0:
            shifted = F.pad(steps[:, :, :-1], (1, 0), value=self.vocab_size)
        else:
            shifted = steps[:, :, start - 1 : -1]
        x = self.token_emb(shifted)  # [B, n, D]: one lookup for all codebooks
        num_slots = len(self.condition_sizes)
        if start == 0:
            prefix = torch.stack([emb(condition[:, a]) for a, emb in enumerate(self.cond_emb)], dim=1)
            x = torch.cat([prefix, x], dim=1)
            first = 0
        else:
            first = num_slots + start
        # a slice of the table is the lookup of positions first.. without building the index tensor
        x = x + self.pos_emb.weight[first : first + x.shape[1]]
        if controls:
            if self.control_emb is None:  # validated above on the first step; a cached step may skip it
                check_controls(self, controls, steps.shape[0])
            x = x + self.control_emb(controls)[:, None]  # where the condition enters: every input position
        films = self._films(controls)
        recompute = (
            self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        )
        for layer, block in enumerate(self.blocks):
            # non-reentrant: works when no input needs grad (frozen embeddings under LoRA) and replays
            # the dropout masks of the forward
            x = (
                checkpoint(block, x, None, layer, films[layer], use_reentrant=False)
                if recompute
                else block(x, cache, layer, films[layer])
            )
        if cache is not None:
            cache.advance(x.shape[1], steps.shape[2] - start)
        if start == 0:
            x = x[:, num_slots:]
        logits = self.heads(modulate(self.norm(x), films[-1], 0))
        b, n = logits.shape[0], logits.shape[1]
        return logits.view(b, n, self.num_codebooks, self.vocab_size).transpose(1, 2)  # b s (k v) -> b k s v

    def decode_step(
        self, previous: Tensor, position: Tensor, cache: KVCache, controls: Controls | None = None
    ) -> Tensor:
        """One cached step with static shapes (what a compiled sampler calls; see
        :class:`~lightning_cfgrl.models.kv_cache.StaticStep`): ``previous [B, K]`` ids of step ``s - 1``,
        ``position [1]`` int64 holding ``s >= 1`` -> logits ``[B, K, V]`` of step ``s``: the same
        distribution as ``forward(steps[..., :s + 1], condition, cache)`` at ``cache.steps == s``, up to
        float rounding. The prefix and step 0 go through ``forward``; the caller validates the inputs
        and calls ``cache.advance(1, 1)`` after each step (nothing here reads a Python number that
        changes per step, so a compiled step is traced once)."""
        slot = position + len(self.condition_sizes)  # the cache position (and positional index) of step s
        x = self.token_emb(previous[:, :, None]) + self.pos_emb(slot)  # [B, 1, D]
        if controls:
            x = x + self.control_emb(controls)[:, None]
        films = self._films(controls)
        step = StaticStep.at(cache, slot)
        for layer, block in enumerate(self.blocks):
            x = block(x, step, layer, films[layer])
        logits = self.heads(modulate(self.norm(x), films[-1], 0))[:, 0]  # [B, K * V]
        return logits.view(logits.shape[0], self.num_codebooks, self.vocab_size)

    def _films(self, controls: Controls | None) -> list[Tensor | None]:
        """Per-block FiLM ``[B, 1, 4 D]`` and the final norm's ``[B, 1, 2 D]`` (``control_layers="every"``),
        else a ``None`` for each."""
        if not controls or self.control_film is None:
            return [None] * (len(self.blocks) + 1)
        return [film(controls)[:, None] for film in self.control_film]

    def _check_condition(self, condition: Tensor) -> None:
        if (
            not isinstance(condition, Tensor)
            or condition.dim() != 2
            or condition.shape[1] != len(self.condition_sizes)
        ):
            shape = tuple(condition.shape) if isinstance(condition, Tensor) else type(condition).__name__
            raise ValueError(f"condition must be attribute ids [B, {len(self.condition_sizes)}], got {shape}")
        upper = torch.tensor(self.condition_sizes, device=condition.device)
        if condition.dtype != torch.long or bool(((condition < 0) | (condition > upper)).any()):
            raise ValueError(
                f"condition ids must be int64 in [0, n] per slot with n = {self.condition_sizes}, "
                f"got dtype {condition.dtype} and values in [{int(condition.min())}, {int(condition.max())}]"
            )
