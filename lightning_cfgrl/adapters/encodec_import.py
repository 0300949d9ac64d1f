"""Import encodec's model classes even where torchaudio cannot be loaded.

encodec 0.1.1 imports torchaudio at import time (``encodec/utils.py``) but needs it only for its audio
file helpers (``convert_audio``, ``save_audio``) and the CLI. Where torchaudio is broken (e.g. a CUDA
build without its CUDA libraries: ``OSError: libc10_cuda.so``), :func:`import_encodec` imports encodec
with a stub ``torchaudio`` in ``sys.modules`` for the duration of the import only, then removes it;
encodec's file helpers then raise an ImportError naming the cause when called. Never called at
``import lightning_cfgrl`` time.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _TorchaudioStub(types.ModuleType):
    """Stands in for torchaudio inside encodec; any use raises with the original import error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__("torchaudio")
        self._error = f"{type(error).__name__}: {error}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"torchaudio.{name} is unavailable: torchaudio failed to import ({self._error}). encodec's model "
            "classes work without it; its audio file helpers (convert_audio, save_audio) do not."
        )


@contextmanager
def torchaudio_stub_if_broken(stub_if_missing: bool = False) -> Iterator[None]:
    """Within the block, ``import torchaudio`` yields a stub when the real torchaudio fails to load.

    encodec and transformers import torchaudio at import time but need it only for audio-file helpers;
    a torchaudio built for another torch/CUDA raises (OSError, RuntimeError) there. An uninstalled
    torchaudio is stubbed only with ``stub_if_missing`` (encodec needs the import to succeed; transformers
    handles the absence itself). The stub is removed again afterwards; half-initialised
    torchaudio submodules from the failed import are set aside meanwhile (they would shadow the stub's
    message) and put back.
    """
    if "torchaudio" in sys.modules and not isinstance(sys.modules["torchaudio"], _TorchaudioStub):
        yield
        return
    try:
        importlib.import_module("torchaudio")
    except ImportError as err:
        if getattr(err, "name", None) == "torchaudio" and not stub_if_missing:  # not installed
            yield
            return
        broken: BaseException = err
    except Exception as err:  # OSError (missing CUDA libs), RuntimeError (ABI mismatch)
        broken = err
    else:
        yield
        return
    saved = {
        n: sys.modules.pop(n) for n in list(sys.modules) if n == "torchaudio" or n.startswith("torchaudio.")
    }
    stub = _TorchaudioStub(broken)
    sys.modules["torchaudio"] = stub
    try:
        yield
    finally:
        if sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]
        for name, module in saved.items():
            sys.modules.setdefault(name, module)


ENCODEC_MODELS = {"encodec_24khz": "encodec_model_24khz", "encodec_48khz": "encodec_model_48khz"}


def build_encodec(model: str, pretrained: bool = False) -> Any:
    """``EncodecModel.<factory>(pretrained=...)`` for a name in ``ENCODEC_MODELS`` (pretrained downloads)."""
    if model not in ENCODEC_MODELS:
        raise ValueError(f"model must be one of {sorted(ENCODEC_MODELS)}, got {model!r}")
    return getattr(import_encodec().EncodecModel, ENCODEC_MODELS[model])(pretrained=pretrained)


@functools.cache
def import_encodec() -> types.ModuleType:
    """The ``encodec`` package, imported with a temporary torchaudio stub if the real one fails to load.

    Returns the module; its model classes are ``encodec.EncodecModel``, ``encodec.modules.SEANetEncoder``,
    ``encodec.modules.SEANetDecoder`` and ``encodec.quantization.ResidualVectorQuantizer``. Raises
    ImportError if encodec itself is not installed.
    """
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    with torchaudio_stub_if_broken(stub_if_missing=True):
        if isinstance(sys.modules.get("torchaudio"), _TorchaudioStub):
            for name in [n for n in sys.modules if n == "encodec" or n.startswith("encodec.")]:
                del sys.modules[name]  # a previous failed attempt may have left a partial encodec
        return importlib.import_module("encodec")
