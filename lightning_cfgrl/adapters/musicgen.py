"""``MusicgenGenerator``: Hugging Face ``MusicgenForConditionalGeneration`` as a ``TokenGenerator``.

What maps to what:

* tokens: our step tensor ``[B, K, S]`` is HF's delayed decoder input without its leading start column:
  HF feeds ``[start, step 0, ..., step S-2]`` (``decoder_start_token_id`` in the start column and
  wherever the delay pattern has no token, as ``generate`` does) and its output at position s predicts
  step s, which is this package's contract. Delays are ``(0, 1, ..., K-1)``, or ``(0, 0, 1, 1, ...)``
  for stereo models whose left/right codebooks are interleaved.
* condition: a dict with either ``input_ids`` (T5 token ids ``[B, L]``; the text encoder runs once per
  sequence) or precomputed ``encoder_hidden_states`` (``[B, L, D]``, the text encoder's last hidden
  state), plus ``attention_mask [B, L]``.
* null condition (CFG): zeroed encoder states and a zeroed attention mask, exactly what HF's
  ``generate(guidance_scale=...)`` builds for its unconditional half.
* KV cache: HF's own (``EncoderDecoderCache``), returned by the model and kept in a :class:`MusicgenCache`.
* controls (``controls=[...]``): a zero-initialised :class:`~lightning_cfgrl.core.controls.ControlEmbedding`
  added to the decoder's input embeddings at every position (a forward hook on the first codebook's
  embedding, so the HF model and its state dict keys are untouched).

transformers is imported only when the adapter is built (``pip install lightning-cfgrl[musicgen]``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_cfgrl.adapters.encodec_import import torchaudio_stub_if_broken
from lightning_cfgrl.core.condition import Condition, condition_batch_size
from lightning_cfgrl.core.controls import ControlEmbedding, Controls, check_controls
from lightning_cfgrl.core.delay_pattern import DelayPattern
from lightning_cfgrl.core.generator import check_condition_matches, check_steps, class_spec

_INSTALL_HINT = "pip install lightning-cfgrl[musicgen]"


@dataclass
class MusicgenCache:
    """Incremental-decoding state: HF's key/value cache, cached steps, and the encoder states."""

    past: Any = None
    steps: int = 0
    encoder_states: Tensor | None = None
    encoder_mask: Tensor | None = None


class MusicgenGenerator(nn.Module):
    """A MusicGen model (text-to-music) behind the ``TokenGenerator`` protocol.

    Args:
        model: a ``MusicgenForConditionalGeneration``, or a local folder / hub id for ``from_pretrained``.
        config: a ``MusicgenConfig`` as a dict (``config.to_dict()``): builds a randomly initialised
            model (how checkpoints of this adapter rebuild it before loading weights).
        local_files_only: passed to ``from_pretrained``; set False to allow downloading ``model``.
        freeze_encoders: freeze the T5 text encoder and the EnCodec audio codec (RL finetunes the decoder).
        use_cache: decode incrementally with HF's KV cache.
        gradient_checkpointing: HF's gradient checkpointing of the decoder layers (non-reentrant) in
            training forwards: less activation memory for one extra forward.
        controls: control inputs the adapter accepts (e.g. ``["guidance_scale"]``), see
            :mod:`lightning_cfgrl.core.controls`; a base state dict loads with
            :func:`~lightning_cfgrl.core.controls.load_base_weights`.
    """

    def __init__(
        self,
        model: nn.Module | str | None = None,
        config: dict | None = None,
        local_files_only: bool = True,
        freeze_encoders: bool = True,
        use_cache: bool = True,
        gradient_checkpointing: bool = False,
        controls: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if (model is None) == (config is None):
            raise ValueError(
                "MusicgenGenerator needs exactly one of model (a MusicgenForConditionalGeneration or a "
                f"pretrained name/path) or config (a MusicgenConfig dict), got model={model!r:.60}, "
                f"config={'a dict' if config is not None else None}"
            )
        hf = import_musicgen()
        self._source = model if isinstance(model, str) else None
        if isinstance(model, str):
            model = hf.MusicgenForConditionalGeneration.from_pretrained(
                model, local_files_only=local_files_only
            )
        elif config is not None:
            model = hf.MusicgenForConditionalGeneration(hf.MusicgenConfig(**config))
        if not isinstance(model, hf.MusicgenForConditionalGeneration):
            raise TypeError(f"model must be a MusicgenForConditionalGeneration, got {type(model).__name__}")
        self.model = model
        self.local_files_only, self.freeze_encoders, self.use_cache = (
            local_files_only,
            freeze_encoders,
            use_cache,
        )
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:  # non-reentrant: frozen embeddings (LoRA) need no input grads
            enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x
            if enable is not None:
                enable({"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        decoder = model.config.decoder
        self.num_codebooks = int(decoder.num_codebooks)
        self.vocab_size = int(decoder.vocab_size)
        if decoder.audio_channels == 2:  # left/right codebooks interleaved, each pair on one delay
            self.pattern = DelayPattern([k // 2 for k in range(self.num_codebooks)])
        else:
            self.pattern = DelayPattern.musicgen(self.num_codebooks)
        start = (
            decoder.decoder_start_token_id
            if decoder.decoder_start_token_id is not None
            else decoder.pad_token_id
        )
        self.start_id = int(start) if start is not None else self.vocab_size
        # [K, 1] per-codebook delays on the model's device (not saved: the pattern rebuilds it)
        self.register_buffer("_delays", torch.tensor(self.pattern.delays)[:, None], persistent=False)
        # transformers 5 renamed the cache argument; find the name this version uses
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        if freeze_encoders:
            model.text_encoder.requires_grad_(False)
            model.audio_encoder.requires_grad_(False)
        self.control_names = tuple(controls)
        self.control_emb = ControlEmbedding(self.control_names, decoder.hidden_size) if controls else None
        self._steering: Tensor | None = None  # [B, D] while a forward with controls runs
        if controls:
            model.decoder.get_input_embeddings()[0].register_forward_hook(self._add_steering)

    def spec(self) -> dict:
        """``class_path``/``init_args`` that rebuild this adapter (recorded in checkpoints' hparams)."""
        source = (
            {"model": self._source} if self._source is not None else {"config": self.model.config.to_dict()}
        )
        return class_spec(
            self,
            {
                **source,
                "local_files_only": self.local_files_only,
                "freeze_encoders": self.freeze_encoders,
                "use_cache": self.use_cache,
                "gradient_checkpointing": self.gradient_checkpointing,
                **({"controls": list(self.control_names)} if self.control_names else {}),
            },
        )

    # -- TokenGenerator ---------------------------------------------------------------------------
    def null_condition(self, condition: Condition) -> dict[str, Tensor]:
        """Zeroed ``attention_mask`` (and ``encoder_hidden_states``), as HF's CFG unconditional half."""
        condition = self._check_condition(condition)
        if "attention_mask" not in condition and "input_ids" in condition:
            raise ValueError(
                "a null (CFG) condition for input_ids needs an 'attention_mask' in the condition "
                "(ones for real tokens); HF's null prompt is a zeroed mask"
            )
        return {
            key: torch.zeros_like(value) if key in ("attention_mask", "encoder_hidden_states") else value
            for key, value in condition.items()
        }

    def new_cache(self, batch_size: int, max_steps: int) -> MusicgenCache | None:
        return MusicgenCache() if self.use_cache else None

    def forward(
        self,
        steps: Tensor,
        condition: Condition,
        cache: MusicgenCache | None = None,
        controls: Controls | None = None,
    ) -> Tensor:
        """``steps [B, K, S]``, ``controls {name: [B]}`` -> logits ``[B, K, S - cache.steps, V]`` (all S
        without a cache). With a cache, pass the same controls at every step."""
        start = cache.steps if cache is not None else 0
        if start == 0 or (controls and self.control_emb is None):  # validate once per sequence
            check_condition_matches(self._check_condition(condition), steps.shape[0])
            check_steps(steps[:, :, :-1], self)  # the last step is never read (it may be a placeholder)
            if controls:
                check_controls(self, controls, steps.shape[0])
        if steps.shape[2] <= start:
            raise ValueError(
                f"got {steps.shape[2]} steps but {start} are already cached; pass at least one new step"
            )
        if cache is not None and cache.encoder_states is not None:
            states, mask = cache.encoder_states, cache.encoder_mask
        else:
            states, mask = self.encoder_states(condition)
            if cache is not None:
                cache.encoder_states, cache.encoder_mask = states, mask
        # positions start..S-1 read steps start-1..S-2; a step without a token (before a codebook's
        # delay, or the pad id after its last frame) is fed as the start id, as HF's generate does. Which
        # steps have no token is read from the steps themselves, not from S: a prefix (what sampling
        # passes) is not a whole sequence, and its last frames are not yet the tail of the pattern.
        first = max(start - 1, 0)
        read = steps[..., first:-1]
        positions = torch.arange(first, steps.shape[2] - 1, device=steps.device)
        has_token = (positions >= self._delays) & (read < self.vocab_size)
        inputs = torch.where(has_token, read, self.start_id)
        if start == 0:
            inputs = torch.cat([torch.full_like(steps[..., :1], self.start_id), inputs], dim=-1)
        self._steering = self.control_emb(controls) if controls else None
        try:
            out = self.model(
                encoder_outputs=(states,),
                attention_mask=mask,
                decoder_input_ids=inputs.flatten(0, 1),  # b k s -> (b k) s
                use_cache=cache is not None,
                return_dict=True,
                **{self._cache_arg: cache.past if cache is not None else None},
            )
        finally:
            self._steering = None
        if cache is not None:
            past = getattr(out, "cache", None)
            cache.past = past if past is not None else getattr(out, "past_key_values", None)
            cache.steps = steps.shape[2]
        # (b k) s v -> b k s v as a view: einops costs ~15 us a call, twice per decoded step
        return out.logits.unflatten(0, (-1, self.num_codebooks))

    def _add_steering(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        # the first codebook's embedding [B, S, D]: the decoder sums the codebooks' embeddings, so this
        # adds the control embedding to the decoder's input embedding at every position
        if self._steering is None:
            return None
        return output + self._steering[:, None].to(output.dtype)

    # -- conditioning -------------------------------------------------------------------------------
    def encoder_states(self, condition: Condition) -> tuple[Tensor, Tensor | None]:
        """Condition -> (text-encoder states ``[B, L, D]``, attention mask ``[B, L]`` or None).

        Masked positions are zeroed here (HF zeroes them after its projection too), so a fully masked
        null prompt gives exactly HF's unconditional input whatever the encoder made of it.
        """
        condition = self._check_condition(condition)
        mask = condition.get("attention_mask")
        if "encoder_hidden_states" in condition:
            states = condition["encoder_hidden_states"]
        else:
            states = self.model.text_encoder(
                input_ids=condition["input_ids"], attention_mask=mask
            ).last_hidden_state
            if mask is not None:
                states = torch.where(
                    mask[..., None].bool(), states, torch.zeros((), dtype=states.dtype, device=states.device)
                )
        return states, mask

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Precompute a condition ``{"encoder_hidden_states", "attention_mask"}`` from T5 ids ``[B, L]``
        (run the text encoder once, e.g. for a fixed prompt set)."""
        with torch.no_grad():
            states, mask = self.encoder_states({"input_ids": input_ids, "attention_mask": attention_mask})
        return {"encoder_hidden_states": states, "attention_mask": mask}

    def _check_condition(self, condition: Condition) -> dict[str, Tensor]:
        if not isinstance(condition, dict) or ("input_ids" in condition) == (
            "encoder_hidden_states" in condition
        ):
            got = sorted(condition) if isinstance(condition, dict) else type(condition).__name__
            raise ValueError(
                "MusicgenGenerator conditions are dicts with exactly one of 'input_ids' [B, L] or "
                f"'encoder_hidden_states' [B, L, D], plus 'attention_mask' [B, L]; got {got}"
            )
        condition_batch_size(condition)
        return condition

    # -- audio --------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @torch.no_grad()
    def decode(self, frames: Tensor) -> Tensor:
        """Frames ``[B, K, T]`` -> waveform ``[B, C, L]`` with the model's own EnCodec (C = 2 for stereo),
        so this adapter can be the decoder of ``AudioSampleLogger``."""
        codec = self.model.audio_encoder
        if self.model.config.decoder.audio_channels == 2:
            left, right = (codec.decode(frames[None, :, side::2], [None]).audio_values for side in (0, 1))
            return torch.cat([left, right], dim=1)
        return codec.decode(frames[None], [None]).audio_values


def import_musicgen() -> Any:
    """``transformers`` with its MusicGen classes loaded (``MusicgenForConditionalGeneration``,
    ``MusicgenConfig``), coping with a torchaudio that cannot load; ImportError naming the extra if absent."""
    try:
        with torchaudio_stub_if_broken():
            transformers = importlib.import_module("transformers")
            importlib.import_module("transformers.models.musicgen.modeling_musicgen")
    except ImportError as err:
        raise ImportError(
            f"MusicgenGenerator needs the transformers package ({err}); install it with `{_INSTALL_HINT}`"
        ) from err
    return transformers


__all__ = ["MusicgenCache", "MusicgenGenerator", "import_musicgen"]
