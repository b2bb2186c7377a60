"""Helpers shared by the builders: example segments and CSR assembly from per-row ranks.

Every fixed builder follows one recipe, vectorized over all nodes of all examples:

1. :func:`segments` turns ``n`` / ``lengths`` / ``batch`` into per-node ``(start, pos, length)``;
2. the builder computes each destination's in-degree in closed form;
3. :func:`expand_rows` gives every edge its destination ``row`` and its ``rank`` inside that row;
4. the builder maps ``(row, rank)`` to the source in closed form.

No Python loop runs over nodes or edges, and no sort is needed: edges come out grouped by
destination, which is the :class:`~graphattn.Graph` layout. Sources are local to the example of
their destination by construction, so no builder ever links two examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._validation import check_int
from ..graph import Graph

__all__ = [
    "Segments",
    "segments",
    "expand_rows",
    "row_offsets",
    "repeat_rows",
    "contiguous_rows",
    "Part",
    "assemble_rows",
    "check_int",
    "graph_from_rows",
    "filter_edges",
    "same_ptr",
]


class Segments(NamedTuple):
    """The examples of a batch, per example and per node.

    ``ptr [B + 1]`` and ``lengths [B]`` per example; ``example``, ``start``, ``pos`` and
    ``length`` are ``[N]``: the example of each node, its first node, the node's position
    inside it and its length.
    """

    ptr: Tensor
    lengths: Tensor
    example: Tensor
    start: Tensor
    pos: Tensor
    length: Tensor

    @property
    def num_nodes(self) -> int:
        return self.example.numel()

    @property
    def device(self) -> torch.device:
        return self.ptr.device


def _as_index_vector(name: str, value: object, device: torch.device | None) -> Tensor:
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
        t = value.long()
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must be a sequence of ints or an integer tensor")
        t = torch.tensor(list(value), dtype=torch.long, device=device)
    else:
        raise TypeError(f"{name} must be a 1-D integer tensor or a sequence of ints, got {type(value).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(t.shape)}")
    return t


def segments(
    n: int | None,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> Segments:
    """Resolve the examples of an input given as ``n`` (one example), ``lengths`` or ``batch``.

    Args:
        n: total number of nodes, or ``None`` when ``lengths``/``batch`` say it.
        lengths: ``[B]`` number of nodes of each example (zeros allowed).
        batch: ``[N]`` example id of each node, non-decreasing (PyG's ``batch`` vector).
        device: where to build when neither ``lengths`` nor ``batch`` is a tensor.

    Raises:
        ValueError: when ``lengths`` and ``n`` (or ``batch`` and ``n``) disagree, when both
            ``lengths`` and ``batch`` are given, or on negative/unsorted entries.
    """
    if lengths is not None and batch is not None:
        raise ValueError("pass lengths or batch, not both")
    if n is not None:
        n = check_int("n", n, minimum=0)
    if lengths is not None:
        lengths = _as_index_vector("lengths", lengths, device)
        if lengths.numel() > 0 and int(lengths.min()) < 0:
            raise ValueError(f"lengths must be >= 0, got min {int(lengths.min())}")
        total = int(lengths.sum())
        if n is not None and total != n:
            raise ValueError(f"lengths must sum to n = {n}, got sum(lengths) = {total}")
    elif batch is not None:
        batch = _as_index_vector("batch", batch, device)
        if n is not None and batch.numel() != n:
            raise ValueError(f"batch must have n = {n} entries, got {batch.numel()}")
        if batch.numel() > 0:
            if int(batch.min()) < 0:
                raise ValueError(f"batch must be >= 0, got min {int(batch.min())}")
            if bool((batch[1:] < batch[:-1]).any()):
                raise ValueError("batch must be non-decreasing (nodes grouped by example, as in PyG)")
        size = int(batch.max()) + 1 if batch.numel() > 0 else 0
        lengths = torch.bincount(batch, minlength=size)
    elif n is not None:
        lengths = torch.tensor([n], dtype=torch.long, device=device)
    else:
        raise TypeError("pass n, lengths or batch")
    dev = lengths.device
    ptr = torch.zeros(lengths.numel() + 1, dtype=torch.long, device=dev)
    torch.cumsum(lengths, 0, out=ptr[1:])
    total = int(ptr[-1])
    example = torch.repeat_interleave(torch.arange(lengths.numel(), device=dev), lengths, output_size=total)
    start = ptr[example]
    pos = torch.arange(total, device=dev) - start
    return Segments(ptr, lengths, example, start, pos, lengths[example])


def expand_rows(deg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(rowptr [N + 1], row [E], rank [E])`` for in-degrees ``deg [N]``.

    Edge ``e`` is the ``rank[e]``-th in-edge of destination ``row[e]``.
    """
    rowptr, num_edges = row_offsets(deg)
    row = torch.repeat_interleave(torch.arange(deg.numel(), device=deg.device), deg, output_size=num_edges)
    rank = torch.arange(num_edges, device=deg.device) - repeat_rows(rowptr[:-1], deg, num_edges)
    return rowptr, row, rank


def row_offsets(deg: Tensor) -> tuple[Tensor, int]:
    """``(rowptr [N + 1], E)`` for in-degrees ``deg [N]``."""
    rowptr = torch.zeros(deg.numel() + 1, dtype=torch.long, device=deg.device)
    torch.cumsum(deg, 0, out=rowptr[1:])
    return rowptr, int(rowptr[-1])


def repeat_rows(values: Tensor, deg: Tensor, num_edges: int) -> Tensor:
    """``values [N]`` repeated ``deg`` times each: the per-edge copy of a per-row value.

    (Cheaper than gathering ``values[row]``: one streaming pass, no index tensor.)
    """
    return torch.repeat_interleave(values, deg, output_size=num_edges)


def contiguous_rows(deg: Tensor, first: Tensor) -> tuple[Tensor, Tensor]:
    """``(rowptr, col)`` when row ``i`` holds the consecutive sources ``first[i] .. first[i] + deg[i] - 1``.

    ``col[e] = e + (first - rowptr)[row_e]``: one repeat and one add per edge.
    """
    rowptr, num_edges = row_offsets(deg)
    col = torch.arange(num_edges, device=deg.device) + repeat_rows(first - rowptr[:-1], deg, num_edges)
    return rowptr, col


def graph_from_rows(
    dst: Tensor, src: Tensor, num_dst: int, num_src: int, *, ptr: Tensor | None, src_ptr: Tensor | None = None
) -> Graph:
    """A graph from edges already grouped by destination (``dst`` non-decreasing)."""
    counts = torch.bincount(dst, minlength=num_dst)
    rowptr = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
    torch.cumsum(counts, 0, out=rowptr[1:])
    return Graph(rowptr, src.contiguous(), num_src, ptr=ptr, src_ptr=src_ptr)


def filter_edges(graph: Graph, keep: Tensor) -> Graph:
    """The edges of ``graph`` where ``keep [E]`` is true, in their order (batch offsets kept)."""
    return graph_from_rows(
        graph.dst()[keep], graph.col[keep], graph.num_dst, graph.num_src, ptr=graph.ptr, src_ptr=graph.src_ptr
    )


def same_ptr(name: str, graphs: Sequence[Graph]) -> tuple[Tensor | None, Tensor | None]:
    """The common ``(ptr, src_ptr)`` of ``graphs``; ``ValueError`` when two of them disagree."""
    ptr = src_ptr = None
    for i, g in enumerate(graphs):
        for attr, cur in (("ptr", ptr), ("src_ptr", src_ptr)):
            p = getattr(g, attr)
            if p is None:
                continue
            if cur is not None and not torch.equal(cur, p):
                raise ValueError(f"{name}: graph {i} has a different {attr} (batch layout) than the graphs before it")
            if attr == "ptr":
                ptr = p
            else:
                src_ptr = p
    return ptr, src_ptr


class Part(NamedTuple):
    """In-edges of every row given either arithmetically or explicitly (see :func:`assemble_rows`).

    Arithmetic: row ``i`` gets ``first[i] + step·t`` for ``t < deg[i]`` (``col`` is ``None``; ``step``
    an int or a per-row ``[N]`` tensor).
    Explicit: row ``i`` gets its ``deg[i]`` sources from ``col`` (in row order; ``first`` is ``None``).
    """

    deg: Tensor
    first: Tensor | None = None
    step: int | Tensor = 1
    col: Tensor | None = None


def assemble_rows(parts: Sequence[Part]) -> tuple[Tensor, Tensor]:
    """``(rowptr, col)``: row ``i`` holds part 0's sources of ``i``, then part 1's, ... (no sort).

    Each part costs ``O(E_part)``: its edges' output positions are ``e + (offset - rowptr_part)[row]``
    (one repeat), and an arithmetic part's sources follow from the position in closed form,
    ``first + step·(pos - offset)``, so no per-edge row index is ever built. An arithmetic part 0
    (put the largest part first) is written in place without a scatter.
    """
    total = parts[0].deg
    for part in parts[1:]:
        total = total + part.deg
    rowptr, num_edges = row_offsets(total)
    first = parts[0]
    if first.col is None and isinstance(first.step, int):
        # Part 0 fills its ranks 0 .. deg_0 - 1 of every row in place: extend its progression over
        # the whole row (no scatter), the later parts then overwrite the tail of each row.
        col = torch.arange(num_edges, device=total.device) * first.step
        col += repeat_rows(first.first - rowptr[:-1] * first.step, total, num_edges)
        later = parts[1:]
        offset = rowptr[:-1] + first.deg
    else:
        col = torch.empty(num_edges, dtype=torch.long, device=total.device)
        later = parts
        offset = rowptr[:-1]
    for part in later:  # a loop over parts, not over nodes
        part_ptr, part_edges = row_offsets(part.deg)
        pos = torch.arange(part_edges, device=total.device) + repeat_rows(offset - part_ptr[:-1], part.deg, part_edges)
        if part.col is not None:
            values = part.col
        elif isinstance(part.step, int):
            values = pos * part.step + repeat_rows(part.first - offset * part.step, part.deg, part_edges)
        else:
            step = repeat_rows(part.step, part.deg, part_edges)
            values = pos * step + repeat_rows(part.first - offset * part.step, part.deg, part_edges)
        col.scatter_(0, pos, values)  # positions are distinct: a plain scatter (faster than index_put)
        offset = offset + part.deg
    return rowptr, col
