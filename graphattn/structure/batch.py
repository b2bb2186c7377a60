"""Batching: block-diagonal graphs, PyG's convention (Fey & Lenssen, "Fast Graph Representation
Learning with PyTorch Geometric", 2019).

https://pytorch-geometric.readthedocs.io/en/latest/advanced/batching.html -- examples of different
sizes are concatenated along the node dimension, never padded; the graph is block diagonal, so no
edge links two examples. ``ptr [B + 1]`` holds the example offsets of the destinations, and
``src_ptr`` those of the sources when some example is bipartite.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_int
from ..graph import Graph, check_ptr

__all__ = ["batch", "unbatch", "ptr_to_batch"]


def _example_ptr(g: Graph, src: bool) -> Tensor:
    p = (g.src_ptr if g.src_ptr is not None else g.ptr) if src else g.ptr
    if p is None:
        n = g.num_src if src else g.num_dst
        return torch.tensor([0, n], dtype=torch.long, device=g.device)
    return p


def batch(graphs: Sequence[Graph]) -> Graph:
    """One block-diagonal graph from ``graphs``: node ``n`` of graph ``b`` becomes ``offset_b + n``.

    A graph that is already a batch (has ``ptr``) contributes its examples, so batches nest
    (``batch([batch([a, b]), c])`` has three examples). Edge ids follow graph order: the per-edge
    tensors of the batch are ``torch.cat`` of the per-graph ones.

    Returns:
        A :class:`~graphattn.Graph` with ``ptr`` and, if any example is bipartite, ``src_ptr``.
    """
    graphs = list(graphs)
    if len(graphs) == 0:
        raise ValueError("batch needs at least one graph")
    for i, g in enumerate(graphs):
        if not isinstance(g, Graph):
            raise TypeError(f"graphs[{i}] must be a graphattn.Graph, got {type(g).__name__}")
    device = graphs[0].device
    dst_off = torch.tensor([0] + [g.num_dst for g in graphs], device=device).cumsum(0)
    src_off = torch.tensor([0] + [g.num_src for g in graphs], device=device).cumsum(0)
    e_off = torch.tensor([0] + [g.num_edges for g in graphs], device=device).cumsum(0)
    rowptr = torch.cat([graphs[0].rowptr[:1]] + [g.rowptr[1:] + e_off[i] for i, g in enumerate(graphs)])
    col = torch.cat([g.col + src_off[i] for i, g in enumerate(graphs)])
    ptrs = [_example_ptr(g, False) for g in graphs]
    sptrs = [_example_ptr(g, True) for g in graphs]
    ptr = torch.cat([ptrs[0][:1]] + [p[1:] + dst_off[i] for i, p in enumerate(ptrs)])
    src_ptr = torch.cat([sptrs[0][:1]] + [p[1:] + src_off[i] for i, p in enumerate(sptrs)])
    return Graph(rowptr, col, int(src_off[-1]), ptr=ptr, src_ptr=None if torch.equal(ptr, src_ptr) else src_ptr)


def unbatch(graph: Graph) -> list[Graph]:
    """The examples of a batched graph (inverse of :func:`batch` for graphs without ``ptr``)."""
    if graph.ptr is None:
        return [graph]
    ptr = graph.ptr.tolist()
    sptr = (graph.src_ptr if graph.src_ptr is not None else graph.ptr).tolist()
    out = []
    for b in range(len(ptr) - 1):  # a loop over examples, not nodes
        lo, hi = graph.rowptr[ptr[b]], graph.rowptr[ptr[b + 1]]
        col = graph.col[lo:hi] - sptr[b]
        if col.numel() > 0 and (int(col.min()) < 0 or int(col.max()) >= sptr[b + 1] - sptr[b]):
            raise ValueError(f"example {b} has edges from another example: the graph is not block diagonal")
        out.append(Graph(graph.rowptr[ptr[b] : ptr[b + 1] + 1] - lo, col, sptr[b + 1] - sptr[b]))
    return out


def ptr_to_batch(ptr: Tensor, num_nodes: int | None = None) -> Tensor:
    """``batch [N]`` (example id of each node) from ``ptr [B + 1]`` (``num_nodes``: ``N``, default ``ptr[-1]``)."""
    if num_nodes is not None:
        num_nodes = check_int("num_nodes", num_nodes, minimum=0)
    ptr = check_ptr("ptr", ptr, num_nodes)
    return example_ids(ptr, int(ptr[-1]) if num_nodes is None else num_nodes)


def example_ids(ptr: Tensor, num_nodes: int) -> Tensor:
    """:func:`ptr_to_batch` of offsets already checked (no host sync), for the structures' inner loops."""
    counts = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts, output_size=num_nodes)
