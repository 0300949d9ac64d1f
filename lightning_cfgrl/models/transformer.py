"""Reference model: a conditional decoder-only transformer over K codebooks (MusicGen-style).

Summed codebook embeddings in, K output heads out, the codebook delay pattern so codebook k of a frame
is predicted after codebooks < k of that frame. The prompt is a few attribute ids ``[B, A]`` (id 0 =
"no prompt" in every slot); each slot's embedding becomes one prefix position the tokens attend to.
Implements :class:`~lightning_cfgrl.core.generator.TokenGenerator` with a static KV cache, and, when
built with ``options={"controls": [...]}``, control inputs (:mod:`lightning_cfgrl.core.controls`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_cfgrl.core.checks import check_settings
from lightning_cfgrl.core.controls import ControlEmbedding, Controls, check_controls
from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.generator import check_condition_matches, check_steps, class_spec
from lightning_cfgrl.models.kv_cache import KVCache, StaticStep
from lightning_cfgrl.models.options import TransformerOptions


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

    def forward(self, x: Tensor, cache: KVCache | StaticStep | None, layer: int) -> Tensor:
        # dropout is the identity in eval and at p = 0 (no random numbers drawn): skip the module call
        # then, which is what a decode step sees. `p` is read at call time (disable_dropout sets it).
        if self.training and self.dropout.p > 0:
            x = x + self.dropout(self.attn(self.norm1(x), cache, layer))
            return x + self.dropout(self.mlp(self.norm2(x)))
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


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
        dim: model width D.
        num_layers: transformer blocks.
        num_heads: attention heads (they divide ``dim``).
        max_frames: longest sequence in frames (sets the positional table and cache size).
        options: dropout, delay pattern, gradient checkpointing and control inputs
            (:class:`~lightning_cfgrl.models.options.TransformerOptions`, or its fields as a dict); the
            defaults build the plain MusicGen-style model.
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
        options: TransformerOptions = TransformerOptions(),
    ) -> None:
        super().__init__()
        options = check_settings(
            "options", TransformerOptions() if options is None else options, TransformerOptions
        )
        self._init_args = dict(
            num_codebooks=num_codebooks,
            vocab_size=vocab_size,
            condition_sizes=list(condition_sizes),
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            max_frames=max_frames,
            options=options.record(),
        )
        self.gradient_checkpointing = options.gradient_checkpointing
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_codebooks = num_codebooks
        self.vocab_size = vocab_size
        self.condition_sizes = tuple(int(n) for n in condition_sizes)
        delays = options.delays
        self.pattern = DelayPattern(delays) if delays is not None else DelayPattern.musicgen(num_codebooks)
        self.max_steps = self.pattern.num_steps(max_frames)
        self.num_heads = num_heads
        num_slots = len(self.condition_sizes)

        self.token_emb = CodebookEmbedding(num_codebooks, vocab_size + 1, dim)
        self.cond_emb = nn.ModuleList(nn.Embedding(n + 1, dim) for n in self.condition_sizes)
        self.pos_emb = nn.Embedding(num_slots + self.max_steps, dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, options.dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, num_codebooks * vocab_size)
        self.apply(self._init_weights)
        # built after the base init so the base parameters draw the same random numbers as without controls
        self.control_names = tuple(options.controls)
        self.control_emb = ControlEmbedding(self.control_names, dim) if options.controls else None

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
        recompute = (
            self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        )
        x = self._blocks(x, cache, controls, recompute)
        if cache is not None:
            cache.advance(x.shape[1], steps.shape[2] - start)
        if start == 0:
            x = x[:, num_slots:]
        logits = self.heads(self._final_norm(x, controls))
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
        x = self._blocks(x, StaticStep.at(cache, slot), controls, recompute=False)
        logits = self.heads(self._final_norm(x, controls))[:, 0]  # [B, K * V]
        return logits.view(logits.shape[0], self.num_codebooks, self.vocab_size)

    def _blocks(
        self, x: Tensor, cache: KVCache | StaticStep | None, controls: Controls | None, recompute: bool
    ) -> Tensor:
        """The blocks over ``x [B, n, D]``; ``recompute``: gradient checkpointing (training, no cache).
        ``controls`` is not read here: a subclass may feed it to every block
        (``lightning_cfgrl.experimental.ControlFiLMTransformer``)."""
        for layer, block in enumerate(self.blocks):
            # non-reentrant: works when no input needs grad (frozen embeddings under LoRA) and replays
            # the dropout masks of the forward
            x = (
                checkpoint(block, x, None, layer, use_reentrant=False)
                if recompute
                else block(x, cache, layer)
            )
        return x

    def _final_norm(self, x: Tensor, controls: Controls | None) -> Tensor:
        """The norm before the heads, ``[B, n, D]`` (``controls``: for a subclass, as in :meth:`_blocks`)."""
        return self.norm(x)

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
