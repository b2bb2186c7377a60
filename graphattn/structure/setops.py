"""Union and intersection of graphs over the same nodes (set semantics, as in BigBird's §2 union).

https://arxiv.org/abs/2007.14062 -- BigBird and Longformer are *unions* of simple patterns. An edge
``j -> i`` is identified by its key ``i · N_src + j``; the union keeps each key once (or, with
``dedup=False``, every copy: a multigraph sum), the intersection keeps keys present in every graph.
Results are sorted by destination, then source.

Cost: builders emit rows with sorted sources, so each graph's keys are already one sorted run and
their concatenation is ``len(graphs)`` runs. On CPU the runs are merged in place by NumPy's stable
sort (timsort finds the runs and merges them in linear time; about 4x faster than
``torch.unique``'s full sort at 10 M edges); on other devices, and for unsorted inputs, it is one
sort either way. The union then drops repeated keys; the intersection sorts the distinct keys
of every graph together the same way, and a key is in all ``m`` graphs iff it equals the key
``m - 1`` places after it. All ``E``-sized buffers are :func:`~graphattn._alloc.large_empty`
(huge pages), and the sources are recovered from the keys in place.
"""

from __future__ import annotations

import torch

from .._alloc import large_empty
from .._keys import merge_runs_, unique_sorted
from ..graph import Graph
from ._segments import repeat_rows, same_ptr, trusted_graph

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


def _keys(graphs: tuple[Graph, ...], n_src: int) -> torch.Tensor:
    """The keys ``i · n_src + j`` of every graph's edges, graph after graph, in one fresh buffer."""
    out = large_empty(sum(g.num_edges for g in graphs), device=graphs[0].device)
    at = 0
    for g in graphs:
        torch.add(g.col, g.dst(), alpha=n_src, out=out[at : at + g.num_edges])
        at += g.num_edges
    return out


def _from_keys(keys: torch.Tensor, n_dst: int, n_src: int, graphs: tuple[Graph, ...], name: str) -> Graph:
    """The graph of sorted distinct-or-repeated keys, which it consumes (``col`` is written in place).

    Row ``i`` starts at the first key ``>= i · n_src``; a key's source is the key minus its row's
    first key (a subtraction of the row starts repeated per edge: no 64-bit division per edge).
    """
    ptr, src_ptr = same_ptr(name, graphs)
    if n_src == 0:
        keys = keys[:0]
    bounds = torch.arange(n_dst + 1, device=keys.device) * max(n_src, 1)
    rowptr = torch.searchsorted(keys, bounds)
    keys.sub_(repeat_rows(bounds[:-1], rowptr[1:] - rowptr[:-1], keys.numel()))
    # Keys came from valid graphs, so the result is valid by construction.
    return trusted_graph(rowptr, keys, n_src, ptr=ptr, src_ptr=src_ptr)


def union(*graphs: Graph, dedup: bool = True) -> Graph:
    """Edges in any of ``graphs`` (same node sets); each once unless ``dedup=False``.

    Example:
        >>> g = union(window(None, 3, lengths=[5, 4]), global_tokens(None, 1, lengths=[5, 4]))
    """
    n_dst, n_src = _check("union", graphs)
    keys = merge_runs_(_keys(graphs, n_src))
    if dedup:
        keys = unique_sorted(keys)
    return _from_keys(keys, n_dst, n_src, graphs, "union")


def intersection(*graphs: Graph) -> Graph:
    """Edges in every one of ``graphs`` (same node sets), each once."""
    n_dst, n_src = _check("intersection", graphs)
    # Each graph's distinct keys, merged: a key is in every graph iff it occurs len(graphs) times,
    # i.e. it equals the key len(graphs) - 1 places after it.
    each = [unique_sorted(merge_runs_(_keys((g,), n_src))) for g in graphs]
    merged = large_empty(sum(k.numel() for k in each), device=each[0].device)
    torch.cat(each, out=merged)
    del each
    merged = merge_runs_(merged)
    m = len(graphs) - 1
    keys = merged[m:][merged[m:] == merged[: merged.numel() - m]] if m > 0 else merged
    return _from_keys(keys, n_dst, n_src, graphs, "intersection")
