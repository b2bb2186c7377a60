"""Imports of optional frameworks that need help on some installs.

``import_dgl()`` is the one place graphattn (its layers, tests and benchmarks) imports DGL.
DGL 2.1 (the newest Linux wheel) loads a compiled ``graphbolt`` library built for one exact
torch version when ``dgl`` is imported, and fails for any other torch (2.13 here). graphattn
uses graphs, blocks and ``dgl.ops`` only, none of which need graphbolt, so when that library
is missing for the running torch a placeholder module is put at ``sys.modules["dgl.graphbolt"]``
before the first ``import dgl``. When the library is present nothing is stubbed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

import torch

__all__ = ["import_dgl", "graphbolt_library_path"]


def graphbolt_library_path() -> str | None:
    """Where DGL's graphbolt library for the running torch would be, or ``None`` without DGL.

    Found from the installed package's location, without importing it.
    """
    spec = importlib.util.find_spec("dgl")
    if spec is None or not spec.submodule_search_locations:
        return None
    version = torch.__version__.split("+", maxsplit=1)[0]
    if sys.platform.startswith("darwin"):
        name = f"libgraphbolt_pytorch_{version}.dylib"
    elif sys.platform.startswith("win"):
        name = f"graphbolt_pytorch_{version}.dll"
    else:
        name = f"libgraphbolt_pytorch_{version}.so"
    return os.path.join(next(iter(spec.submodule_search_locations)), "graphbolt", name)


def import_dgl() -> Any:
    """Import and return the ``dgl`` module, stubbing ``dgl.graphbolt`` only where it cannot load.

    Raises:
        ImportError: DGL is not installed, or it failed to import for another reason
            (the message says which and how to install it).
    """
    if "dgl" in sys.modules:
        return sys.modules["dgl"]
    path = graphbolt_library_path()
    if path is None:
        raise ImportError(
            "graphattn's DGL layers need the dgl package, which is not installed; "
            "install it with `pip install dgl packaging` (dgl 2.1.0 is the newest Linux wheel)"
        )
    if not os.path.exists(path) and "dgl.graphbolt" not in sys.modules:
        # graphbolt has no library for this torch: an empty module lets `import dgl` (which
        # imports dgl.graphbolt eagerly) finish; dgl.graphbolt's samplers are then unavailable.
        stub = types.ModuleType("dgl.graphbolt")
        stub.__doc__ = f"placeholder set by graphattn: {path} does not exist"
        sys.modules["dgl.graphbolt"] = stub
    # DGL asks for a backend on first import and prints a notice without one; graphattn is PyTorch.
    os.environ.setdefault("DGLBACKEND", "pytorch")
    try:
        return importlib.import_module("dgl")
    except ImportError as err:
        raise ImportError(
            f"import dgl failed ({err}); DGL 2.1 also needs `packaging` (`pip install packaging`)"
        ) from err
