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


@functools.cache
def import_encodec() -> types.ModuleType:
    """The ``encodec`` package, imported with a temporary torchaudio stub if the real one fails to load.

    Returns the module; its model classes are ``encodec.EncodecModel``, ``encodec.modules.SEANetEncoder``,
    ``encodec.modules.SEANetDecoder`` and ``encodec.quantization.ResidualVectorQuantizer``. Raises
    ImportError if encodec itself is not installed.
    """
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    try:
        importlib.import_module("torchaudio")
    except Exception as err:  # OSError (missing CUDA libs), ImportError, RuntimeError (ABI mismatch)
        return _import_with_stub(err)
    return importlib.import_module("encodec")


def _import_with_stub(error: BaseException) -> types.ModuleType:
    # A failed import can leave half-initialised torchaudio submodules behind; they would shadow the
    # stub's error message, so they are set aside during the import and put back afterwards.
    saved = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if name == "torchaudio" or name.startswith("torchaudio.")
    }
    stub = _TorchaudioStub(error)
    sys.modules["torchaudio"] = stub
    try:
        for name in [n for n in sys.modules if n == "encodec" or n.startswith("encodec.")]:
            del sys.modules[name]  # a previous failed attempt may have left a partial encodec
        return importlib.import_module("encodec")
    finally:
        if sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]
        for name, module in saved.items():
            sys.modules.setdefault(name, module)
