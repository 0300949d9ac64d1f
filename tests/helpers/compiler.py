"""``torch.compile`` on CPU builds C++ kernels: tests of the compiled path need a C++ compiler."""

import os
import shutil

import pytest

HAS_CXX = bool(os.environ.get("CXX") and shutil.which(os.environ["CXX"])) or any(
    shutil.which(name) for name in ("g++", "clang++", "c++")
)
needs_cxx = pytest.mark.skipif(
    not HAS_CXX, reason="torch.compile on CPU needs a C++ compiler (g++ or clang++)"
)
