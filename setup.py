"""Builds graphattn's one native library, ``graphattn/_C*.so`` (kernels in ``cuda/``).

    pip install --no-build-isolation -e .            # build against the installed torch
    GRAPHATTN_NO_EXTENSION=1 pip install -e .        # pure Python: reference backend only

The library holds only ``TORCH_LIBRARY`` registrations (no ``PyInit_``); graphattn loads it with
``torch.ops.load_library``. The CUDA launcher is added when torch is a CUDA build and ``CUDA_HOME``
is found. ``GRAPHATTN_ARCH_FLAGS`` replaces the default ``-march=native`` (e.g. for wheels built
on one machine and run on another).
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
KERNELS = ROOT / "cuda"
# --exclude-libs,ALL keeps the symbols of static archives linked into the library local. A toolchain
# that links libstdc++ statically (the GPU machine's, 2026-11-27) otherwise leaves the library's
# copy half-bound to the process's shared libstdc++ (Python's -Bsymbolic-functions binds functions
# locally, data not), and formatting a number into an error message crashed (GPU) or cut the
# message there (this machine, -static-libstdc++). tests/ops/test_build.py checks it.
LINK_ARGS = ["-fopenmp", "-Wl,--exclude-libs,ALL"]


def _extensions() -> tuple[list, dict]:
    if os.environ.get("GRAPHATTN_NO_EXTENSION", "0") not in ("", "0"):
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    arch = os.environ.get("GRAPHATTN_ARCH_FLAGS", "-march=native").split()
    cxx = ["-O3", "-fopenmp", *arch, "-std=c++20"]
    sources = [
        str(p.relative_to(ROOT))
        for p in (KERNELS / "ops.cpp", KERNELS / "edge_attention_cpu.cpp", KERNELS / "sbm_draw_cpu.cpp")
    ]
    kwargs = {"include_dirs": [str(KERNELS)], "extra_link_args": LINK_ARGS}
    if torch.version.cuda is not None and CUDA_HOME is not None:
        sources += [str(p.relative_to(ROOT)) for p in sorted(KERNELS.glob("*.cu"))]
        nvcc = ["-O3", "-std=c++20"]  # no fast-math: the kernels rely on exact -inf handling
        ext = CUDAExtension("graphattn._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    else:
        ext = CppExtension("graphattn._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
