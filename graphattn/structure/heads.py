"""Per-head graphs by folding heads into nodes (the design's one-kernel rule; Roy et al., "Routing
Transformers", 2021, and Cho et al., "SBM-Transformer", 2022, give each head its own edges).

https://arxiv.org/abs/2003.05997 -- ``H`` graphs over the same ``N`` nodes become one graph over
``H·N`` nodes, node ``h·N + n`` being node ``n`` of head ``h``; node tensors ``[N, H, D]`` become
``[H·N, 1, D]``. One head, one graph: the same op then runs structures that differ per head.

.. code-block:: python

    g = fold_heads([g0, g1, g2, g3])                     # per-head graphs -> one graph
    out = edge_attention(fold(q), fold(k), fold(v), g)   # [H·N, 1, Dv]
    out = unfold(out, num_heads=4)                       # [N, H, Dv]

Per-edge tensors of the folded graph are ``[E_0 + ... + E_{H-1}, 1]`` in head order.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .._validation import check_int
from ..graph import Graph
from .batch import batch

__all__ = ["fold_heads", "fold", "unfold", "unfold_graph"]


def fold_heads(graphs: Sequence[Graph]) -> Graph:
    """One graph over ``H·N_dst`` destinations and ``H·N_src`` sources from ``H`` per-head graphs.

    All graphs must have the same ``num_dst`` and ``num_src``. The result's ``ptr`` lists every
    (head, example) block, head-major, so example boundaries survive.
    """
    graphs = list(graphs)
    if len(graphs) == 0:
        raise ValueError("fold_heads needs one graph per head, got none")
    n_dst, n_src = graphs[0].num_dst, graphs[0].num_src
    for h, g in enumerate(graphs):
        if not isinstance(g, Graph):
            raise TypeError(f"graphs[{h}] must be a graphattn.Graph, got {type(g).__name__}")
        if (g.num_dst, g.num_src) != (n_dst, n_src):
            raise ValueError(
                f"every head's graph must have (num_dst, num_src) = ({n_dst}, {n_src}) like head 0, "
                f"got ({g.num_dst}, {g.num_src}) for head {h}"
            )
    return batch(graphs)


def fold(x: Tensor) -> Tensor:
    """``[N, H, D] -> [H·N, 1, D]`` (row ``h·N + n`` is ``x[n, h]``)."""
    if x.dim() != 3:
        raise ValueError(f"x must be [N, H, D], got shape {list(x.shape)}")
    n, h, d = x.shape
    return x.transpose(0, 1).reshape(h * n, 1, d)


def unfold(x: Tensor, num_heads: int) -> Tensor:
    """``[H·N, 1, D] -> [N, H, D]``, the inverse of :func:`fold`."""
    num_heads = check_int("num_heads", num_heads, minimum=1)
    if x.dim() != 3 or x.shape[1] != 1 or x.shape[0] % num_heads != 0:
        raise ValueError(f"x must be [H·N, 1, D] with H = {num_heads}, got shape {list(x.shape)}")
    return x.reshape(num_heads, x.shape[0] // num_heads, x.shape[2]).transpose(0, 1)


def unfold_graph(graph: Graph, num_heads: int) -> list[Graph]:
    """The ``H`` per-head graphs of a folded graph (inverse of :func:`fold_heads`)."""
    num_heads = check_int("num_heads", num_heads, minimum=1)
    if graph.num_dst % num_heads or graph.num_src % num_heads:
        raise ValueError(
            f"a folded graph has H·N nodes; num_dst = {graph.num_dst} and num_src = {graph.num_src} "
            f"are not multiples of num_heads = {num_heads}"
        )
    n_dst, n_src = graph.num_dst // num_heads, graph.num_src // num_heads
    out = []
    for h in range(num_heads):  # a loop over heads
        lo, hi = graph.rowptr[h * n_dst], graph.rowptr[(h + 1) * n_dst]
        col = graph.col[lo:hi] - h * n_src
        if col.numel() > 0 and (int(col.min()) < 0 or int(col.max()) >= n_src):
            raise ValueError(f"head {h} has edges to another head's nodes: not a folded graph")
        out.append(Graph(graph.rowptr[h * n_dst : (h + 1) * n_dst + 1] - lo, col, n_src))
    return out
