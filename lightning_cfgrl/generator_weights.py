"""Read a generator's weights from a Lightning checkpoint or a safetensors file, without unpickling code."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

GENERATOR_PREFIX = "generator."


def load_generator_state(path: str | Path) -> dict[str, Tensor]:
    """Generator ``state_dict`` from ``path``.

    Accepts a Lightning checkpoint of a module that stores its model as ``self.generator`` (keys
    ``generator.*`` of its ``state_dict``) or a ``.safetensors`` file of the generator's own keys.
    Checkpoints are read with ``weights_only=True``: a file carrying pickled code is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generator checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from lightning_cfgrl.checkpointing import load_checkpoint

    state = load_checkpoint(path)["state_dict"]
    weights = {k[len(GENERATOR_PREFIX) :]: v for k, v in state.items() if k.startswith(GENERATOR_PREFIX)}
    if not weights:
        raise ValueError(f"checkpoint {str(path)!r} has no '{GENERATOR_PREFIX}*' weights in its state_dict")
    return weights


def load_generator_spec(path: str | Path) -> dict | None:
    """The ``class_path``/``init_args`` spec a Lightning checkpoint recorded for its generator, if any."""
    if Path(path).suffix == ".safetensors":
        return None
    from lightning_cfgrl.checkpointing import load_checkpoint

    spec = load_checkpoint(path).get("hyper_parameters", {}).get("generator")
    return dict(spec) if isinstance(spec, dict) and "class_path" in spec else None
