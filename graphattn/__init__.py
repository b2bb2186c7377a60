"""graphattn: attention as message passing over an edge list.

Build a :class:`Graph` (destination-sorted CSR) from any structure, then run
:func:`graphattn.ops.edge_attention` over it. ``import graphattn`` never imports PyG or DGL.
"""

from . import nn, ops, structure
from .graph import Graph, Transpose

__version__ = "0.1.0"

__all__ = ["Graph", "Transpose", "nn", "ops", "structure", "__version__"]
