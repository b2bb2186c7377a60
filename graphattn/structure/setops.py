"""Union and intersection of graphs over the same nodes (set semantics, as in BigBird's §2 union).

https://arxiv.org/abs/2007.14062 -- BigBird and Longformer are *unions* of simple patterns. An edge
``j -> i`` is identified by its key ``i · N_src + j``; the union keeps each key once (or, with
``dedup=False``, every copy: a multigraph sum), the intersection keeps keys present in every graph.
Results are sorted by destination, then source.

Cost: builders emit rows with sorted sources, so each graph's keys are already one sorted run and
the concatenation is ``len(graphs)`` runs. On CPU the runs are merged by NumPy's stable sort
(timsort finds the runs and merges them in linear time; about 4x faster than ``torch.unique``'s
full sort at 10 M edges), then ``unique_consecutive`` drops the repeats. On other devices, and
for unsorted inputs, it is one sort either way.
"""

from __future__ import annotations

import numpy as np
import torch

from ..graph import Graph
from ._segments import same_ptr, trusted_graph

__all__ = ["union", "intersection"]


def _check(name: str, graphs: tuple[Graph, ...]) -> tuple[int, int]:
    if len(graphs) == 0:
        raise ValueError(f"{name} needs at least one graph")
    for i, g in enumerate(graphs):
        if not isinstance(g, Graph):
            raise TypeError(f"{name}: argument {i} must be a graphattn.Graph, got {type(g).__name__}")
    n_dst, n_src = graphs[0].num_dst, graphs[0].num_src
    for i, g in enumerate(graphs[1:], start=1):
        if (g.num_dst, g.num_src) != (n_dst, n_src):
            raise ValueError(
                f"{name}: graph {i} has (num_dst, num_src) = ({g.num_dst}, {g.num_src}), "
                f"expected ({n_dst}, {n_src}) like graph 0"
            )
    return n_dst, n_src


def _keys(g: Graph) -> torch.Tensor:
    return g.dst() * g.num_src + g.col


def _from_keys(keys: torch.Tensor, n_dst: int, n_src: int, graphs: tuple[Graph, ...], name: str) -> Graph:
    """The graph of sorted keys: row ``i`` starts at the first key ``>= i * n_src``."""
    ptr, src_ptr = same_ptr(name, graphs)
    if n_src == 0:
        keys = keys[:0]
    bounds = torch.arange(n_dst + 1, device=keys.device) * max(n_src, 1)
    rowptr = torch.searchsorted(keys, bounds)
    # Keys came from valid graphs, so the result is valid by construction.
    return trusted_graph(rowptr, keys % max(n_src, 1), n_src, ptr=ptr, src_ptr=src_ptr)


def _sorted(keys: torch.Tensor) -> torch.Tensor:
    """``keys`` sorted; on CPU by NumPy's stable sort, which merges presorted runs in linear time."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.sort(keys.numpy(), kind="stable"))
    return torch.sort(keys).values


def union(*graphs: Graph, dedup: bool = True) -> Graph:
    """Edges in any of ``graphs`` (same node sets); each once unless ``dedup=False``.

    Example:
        >>> g = union(window(None, 3, lengths=[5, 4]), global_tokens(None, 1, lengths=[5, 4]))
    """
    n_dst, n_src = _check("union", graphs)
    keys = _sorted(torch.cat([_keys(g) for g in graphs]))
    if dedup:
        keys = torch.unique_consecutive(keys)
    return _from_keys(keys, n_dst, n_src, graphs, "union")


def intersection(*graphs: Graph) -> Graph:
    """Edges in every one of ``graphs`` (same node sets), each once."""
    n_dst, n_src = _check("intersection", graphs)
    each = [torch.unique_consecutive(_sorted(_keys(g))) for g in graphs]  # one copy per graph
    keys, counts = torch.unique_consecutive(_sorted(torch.cat(each)), return_counts=True)
    return _from_keys(keys[counts == len(graphs)], n_dst, n_src, graphs, "intersection")
