"""Structure: where the edges come from. Builders return a :class:`~graphattn.Graph`.

Conventions shared by every builder (see ``docs/structures.md``):

* node ids are positions: an input of ``N`` tokens (or ``H x W`` pixels, row-major) has nodes
  ``0 .. N - 1``; an edge ``j -> i`` lets destination ``i`` attend to source ``j``;
* a batch is given as ``lengths [B]`` (or a ``batch [N]`` vector, or ``sizes [B, 2]`` for images):
  examples are concatenated, the graph is block diagonal with ``ptr [B + 1]``, and no builder
  ever links two examples;
* builders are vectorized in torch (no Python loop over nodes) and compute in-degrees in closed
  form (each family's docstring states them);
* bad arguments raise errors naming the argument and what was expected.

Layers take structures as :class:`Structure` modules (:mod:`graphattn.structure.base`); each fixed
builder has one (``Window(8)``, ``BigBird()``, ...).
"""

from .base import StaticStructure, Structure, StructureOutput
from .batch import batch, ptr_to_batch, unbatch
from .bigbird import BigBird, bigbird
from .block_local import BlockLocal, block_local
from .causal import causal
from .combiner import Combiner
from .dilated import Dilated, dilated
from .full import Full, full
from .global_tokens import GlobalTokens, global_tokens
from .grid import Axial, Grid, axial, grid
from .heads import fold, fold_heads, unfold, unfold_graph
from .interop import from_dgl, from_edge_index, from_pyg
from .knn import knn
from .longformer import Longformer, longformer
from .random import Random, random
from .routing import Routing
from .sac import SAC
from .sbm import SBM
from .sea import SEA
from .setops import intersection, union
from .sparse_transformer import Fixed, Strided, fixed, strided
from .window import Window, window

__all__ = [
    # protocol
    "Structure",
    "StructureOutput",
    "StaticStructure",
    # builders
    "full",
    "window",
    "dilated",
    "strided",
    "fixed",
    "block_local",
    "global_tokens",
    "random",
    "bigbird",
    "longformer",
    "causal",
    "union",
    "intersection",
    "knn",
    "grid",
    "axial",
    "from_pyg",
    "from_dgl",
    "from_edge_index",
    # batching and heads
    "batch",
    "unbatch",
    "ptr_to_batch",
    "fold_heads",
    "fold",
    "unfold",
    "unfold_graph",
    # structures for layers
    "Full",
    "Window",
    "Dilated",
    "Strided",
    "Fixed",
    "BlockLocal",
    "GlobalTokens",
    "Random",
    "BigBird",
    "Longformer",
    "Grid",
    "Axial",
    # input-dependent structures
    "Routing",
    "SBM",
    "SAC",
    "Combiner",
    "SEA",
]
