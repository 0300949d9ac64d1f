"""Files: atomic writes, weights-only checkpoint and safetensors loading, generator specs and weights
(PEFT students' adapter-only checkpoints too), audio files without torchaudio, and the Lightning
``CheckpointIO`` plugin that writes checkpoints atomically."""

from lightning_cfgrl.io.checkpoint_io import AtomicCheckpointIO
from lightning_cfgrl.io.checkpoints import (
    CheckpointError,
    atomic_save,
    atomic_save_json,
    atomic_write,
    file_sha256,
    load_checkpoint,
    load_generator_state,
    load_safetensors,
)
from lightning_cfgrl.io.generators import load_generator, load_generator_spec
from lightning_cfgrl.io.specs import instantiate_spec

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "atomic_save",
    "atomic_save_json",
    "atomic_write",
    "file_sha256",
    "instantiate_spec",
    "load_checkpoint",
    "load_generator",
    "load_generator_spec",
    "load_generator_state",
    "load_safetensors",
]
