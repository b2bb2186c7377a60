"""setup.py's link flags keep a statically linked libstdc++ whole.

On the GPU machine of 2026-11-27 the toolchain linked libstdc++ into ``graphattn/_C*.so``
statically, and Python's link line adds ``-Wl,-Bsymbolic-functions``: the library's copy then had
its functions bound to itself but its data (locale facet ids) bound to the process's shared
libstdc++. Formatting a number into a ``TORCH_CHECK`` message crashed the process there, and on
this machine (``-static-libstdc++``) the message comes out cut at the first number. This builds a
tiny library the same way, with setup.py's ``LINK_ARGS``, and checks that a check's message with
numbers arrives whole.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp

SETUP = Path(__file__).resolve().parents[2] / "setup.py"

SOURCE = r"""
#include <ATen/core/Tensor.h>
#include <torch/library.h>

at::Tensor fail_with_numbers(const at::Tensor& x, int64_t n) {
  TORCH_CHECK(false, "n must be small, got ", n, " and ", 2.5);
  return x;
}

TORCH_LIBRARY(graphattn_link_check, m) { m.def("fail(Tensor x, int n) -> Tensor", &fail_with_numbers); }
"""


def setup_link_args() -> list[str]:
    """The ``LINK_ARGS = [...]`` literal of setup.py (read, not run: running setup.py builds)."""
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LINK_ARGS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no LINK_ARGS = [...] in {SETUP}")


def test_link_args_keep_static_libstdcxx_whole(tmp_path):
    assert shutil.which("c++") or shutil.which("g++"), "no C++ compiler on PATH"
    cpp.load_inline(
        name="graphattn_link_check",
        cpp_sources=SOURCE,
        extra_ldflags=["-static-libstdc++", "-Wl,-Bsymbolic-functions", *setup_link_args()],
        build_directory=str(tmp_path),
        is_python_module=False,
    )
    with pytest.raises(RuntimeError, match=r"n must be small, got 12345 and 2\.5"):
        torch.ops.graphattn_link_check.fail(torch.zeros(1), 12345)
