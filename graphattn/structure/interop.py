"""Existing graphs as attention structures: PyTorch Geometric ``Data`` and DGL graphs.

https://pytorch-geometric.readthedocs.io/en/latest/get_started/introduction.html -- PyG's
convention is ours (``edge_index[0]`` = source, ``edge_index[1]`` = destination). Neither framework
is imported here: :func:`from_pyg` reads ``data.edge_index``/``data.num_nodes`` (and ``ptr`` or
``batch`` of a ``Batch``), :func:`from_dgl` calls ``g.edges()``, ``g.num_src_nodes()``,
``g.num_dst_nodes()`` (and ``g.batch_num_nodes()`` of a batched graph), so any object with those
members works.

**Self-loop policy** (a required argument, because attention over a graph is sensitive to it: a
node without in-edges gets a zero output, and a node without a self loop never sees its own value):

* ``"keep"``: the edges as given;
* ``"add"``: exactly one self loop per node (existing ones removed first, then one added per node;
  square graphs only);
* ``"remove"``: no self loops.

Edges keep their input order within each destination (stable sort), and ``return_perm=True`` gives
``perm [E]`` mapping each graph edge to its input column (``-1`` for added self loops), so edge
features follow with ``edge_attr[perm]`` (mask the ``-1`` rows).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..graph import Graph, check_edge_index
from ._segments import segments

__all__ = ["from_pyg", "from_dgl", "from_edge_index"]

SelfLoops = Literal["keep", "add", "remove"]


def from_edge_index(
    edge_index: Tensor,
    num_src: int,
    num_dst: int,
    *,
    self_loops: SelfLoops,
    ptr: Tensor | None = None,
    src_ptr: Tensor | None = None,
    return_perm: bool = False,
) -> Graph | tuple[Graph, Tensor]:
    """A :class:`~graphattn.Graph` from ``edge_index [2, E]`` with an explicit self-loop policy.

    Args:
        edge_index: ``[2, E]`` (row 0 sources, row 1 destinations).
        num_src: number of source nodes.
        num_dst: number of destination nodes.
        self_loops: ``"keep"``, ``"add"`` or ``"remove"`` (see the module docstring).
        ptr: ``[B + 1]`` example offsets of the destinations (batched inputs).
        src_ptr: ``[B + 1]`` example offsets of the sources when they differ from ``ptr``.
        return_perm: also return ``perm [E']``.
    """
    if self_loops not in ("keep", "add", "remove"):
        raise ValueError(f"self_loops must be 'keep', 'add' or 'remove', got {self_loops!r}")
    edge_index = check_edge_index(edge_index).long()
    perm = torch.arange(edge_index.shape[1], device=edge_index.device)
    if self_loops != "keep":
        if self_loops == "add" and num_src != num_dst:
            raise ValueError(f"self_loops='add' needs num_src == num_dst, got {num_src} and {num_dst}")
        keep = edge_index[0] != edge_index[1]
        edge_index, perm = edge_index[:, keep], perm[keep]
        if self_loops == "add":
            nodes = torch.arange(num_dst, device=edge_index.device)
            edge_index = torch.cat([edge_index, torch.stack([nodes, nodes])], 1)
            perm = torch.cat([perm, torch.full_like(nodes, -1)])
    graph, order = Graph.from_edge_index(edge_index, num_src, num_dst, return_perm=True)
    if ptr is not None or src_ptr is not None:
        graph = Graph(graph.rowptr, graph.col, graph.num_src, ptr=ptr, src_ptr=src_ptr)
    return (graph, perm[order]) if return_perm else graph


def _ptr_from_counts(counts: Tensor) -> Tensor:
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts.long(), 0, out=ptr[1:])
    return ptr


def from_pyg(data: Any, *, self_loops: SelfLoops, return_perm: bool = False) -> Graph | tuple[Graph, Tensor]:
    """A graph from a PyG ``Data``/``Batch`` (``edge_index``, ``num_nodes``, ``ptr``/``batch``).

    Args:
        data: a ``torch_geometric.data.Data`` or ``Batch`` (or any object with those attributes).
        self_loops: ``"keep"``, ``"add"`` or ``"remove"``.
        return_perm: also return ``perm`` (see the module docstring).
    """
    edge_index = getattr(data, "edge_index", None)
    if edge_index is None:
        raise TypeError(f"data must have an edge_index [2, E] (a PyG Data), got {type(data).__name__}")
    n = getattr(data, "num_nodes", None)
    if n is None:
        raise ValueError("data.num_nodes is None; set it (PyG cannot infer it without node features)")
    ptr = getattr(data, "ptr", None)
    if ptr is None and getattr(data, "batch", None) is not None:
        ptr = segments(int(n), batch=data.batch).ptr  # checks that batch is sorted and has num_nodes entries
    return from_edge_index(edge_index, int(n), int(n), self_loops=self_loops, ptr=ptr, return_perm=return_perm)


def from_dgl(g: Any, *, self_loops: SelfLoops, return_perm: bool = False) -> Graph | tuple[Graph, Tensor]:
    """A graph from a DGL graph or block (``g.edges()``, ``g.num_src_nodes()``, ``g.num_dst_nodes()``).

    Messages flow along DGL's edges ``u -> v``. A batched DGL graph (``g.batch_num_nodes()``) sets
    ``ptr``. DGL itself is not imported.

    Args:
        g: a ``dgl.DGLGraph`` (homogeneous) or block, or any object with those methods.
        self_loops: ``"keep"``, ``"add"`` or ``"remove"``.
        return_perm: also return ``perm`` (DGL edge ids of the graph's edges).
    """
    for name in ("edges", "num_src_nodes", "num_dst_nodes"):
        if not callable(getattr(g, name, None)):
            raise TypeError(f"g must be a DGL graph with .{name}(), got {type(g).__name__}")
    src, dst = g.edges()
    num_src, num_dst = int(g.num_src_nodes()), int(g.num_dst_nodes())
    ptr = None
    counts = getattr(g, "batch_num_nodes", None)
    if callable(counts) and num_src == num_dst:
        c = counts()
        if isinstance(c, Tensor) and c.numel() >= 1:
            ptr = _ptr_from_counts(c.to(src.device))
    edge_index = torch.stack([src.long(), dst.long()])
    return from_edge_index(edge_index, num_src, num_dst, self_loops=self_loops, ptr=ptr, return_perm=return_perm)
