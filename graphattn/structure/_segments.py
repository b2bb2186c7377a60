"""Helpers shared by the builders: example segments and CSR assembly from closed-form rows.

Every fixed builder follows one recipe, vectorized over all nodes of all examples:

1. :func:`segments` turns ``n`` / ``lengths`` / ``batch`` into per-node ``(start, pos, length)``;
2. the builder computes each destination's in-degree in closed form, as a sum of *parts*, each
   an arithmetic progression of sources per row (:class:`Part`);
3. :func:`assemble_rows` writes the parts of every row, in order, into one preallocated ``col``.

No Python loop runs over nodes or edges, and no sort is needed: edges come out grouped by
destination, which is the :class:`~graphattn.Graph` layout. Sources are local to the example of
their destination by construction, so no builder ever links two examples.

Cost model (what makes large graphs slow): every fresh ``E``-sized tensor costs its page
faults on first touch, more than the arithmetic, so the assembly allocates ``col`` once and
writes it in place: arithmetic runs by a fill and a prefix sum (:func:`fill_runs`), and rows
that are shifted copies of the row before them (sliding windows, blocks) as 2-D blocks by one
broadcast add. ``rowptr``, ``first`` and all bookkeeping are ``O(N · parts)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._alloc import large_empty
from .._validation import check_int, is_integer_tensor
from ..graph import Graph

__all__ = [
    "Segments",
    "segments",
    "expand_rows",
    "row_offsets",
    "repeat_rows",
    "contiguous_rows",
    "fill_runs",
    "trusted_graph",
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
        if not is_integer_tensor(value):
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

    Edge ``e`` is the ``rank[e]``-th in-edge of destination ``row[e]``. Both per-edge tensors are
    filled with :func:`fill_runs` (one allocation and two passes each, no per-edge gather).
    """
    rowptr, num_edges = row_offsets(deg)
    nonempty = deg > 0
    starts = rowptr[:-1][nonempty]
    lengths = deg[nonempty]
    ids = torch.arange(deg.numel(), device=deg.device)[nonempty]
    row = fill_runs(num_edges, starts, ids, 0, lengths)
    rank = fill_runs(num_edges, starts, torch.zeros_like(ids), 1, lengths)
    return rowptr, row, rank


def row_offsets(deg: Tensor) -> tuple[Tensor, int]:
    """``(rowptr [N + 1], E)`` for in-degrees ``deg [N]``."""
    rowptr = torch.zeros(deg.numel() + 1, dtype=torch.long, device=deg.device)
    torch.cumsum(deg, 0, out=rowptr[1:])
    return rowptr, int(rowptr[-1])


def repeat_rows(values: Tensor, deg: Tensor, num_edges: int) -> Tensor:
    """``values [N]`` repeated ``deg`` times each: the per-edge copy of a per-row value.

    (:func:`fill_runs` with step 0: one allocation and two streaming passes, no index tensor.)
    """
    rowptr, _ = row_offsets(deg)
    nonempty = deg > 0
    return fill_runs(num_edges, rowptr[:-1][nonempty], values[nonempty], 0, deg[nonempty])


def fill_runs(
    num_edges: int,
    start: Tensor,
    first: Tensor,
    step: int | Tensor,
    length: Tensor,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """``[E]`` int64 made of ``R`` arithmetic runs that tile ``0 .. E - 1`` in order.

    Run ``r`` covers positions ``start[r] .. start[r] + length[r] - 1`` and holds
    ``first[r] + step[r]·t`` at offset ``t``; the runs must be non-empty, ascending and
    contiguous (``start[r + 1] = start[r] + length[r]``, ``start[0] = 0``, the last ends at ``E``).

    Written as a prefix sum of differences, in place in the one output tensor: inside a run the
    difference is the step, at a run's first position it is the jump from the previous run's last
    value. A constant ``step`` costs a fill and one in-place ``cumsum`` (two passes over ``E``); a
    per-run step first builds the per-position step the same way (three passes). Only ``O(R)``
    scattered writes, no per-edge index or gather (each fresh ``E``-sized tensor costs its page
    faults, which dominate on large graphs).
    """
    col = large_empty(num_edges, device=start.device) if out is None else out
    if num_edges == 0:
        return col
    uniform = not isinstance(step, Tensor)
    if not uniform and step.numel() > 0 and bool((step == step[0]).all()):
        step, uniform = int(step[0]), True
    last = first + step * (length - 1)
    jump = first.clone()
    jump[1:] -= last[:-1]
    if uniform:
        col.fill_(step)
    else:
        dstep = step.clone()
        dstep[1:] -= step[:-1]
        col.zero_()
        col[start] = dstep
        col.cumsum_(0)  # the step at every position
    col[start] = jump
    return col.cumsum_(0)


def contiguous_rows(deg: Tensor, first: Tensor, shift: int | None = None) -> tuple[Tensor, Tensor]:
    """``(rowptr, col)`` when row ``i`` holds the consecutive sources ``first[i] .. first[i] + deg[i] - 1``.

    One run of step 1 per non-empty row (:func:`fill_runs`: a fill and one prefix sum in place);
    ``shift`` as in :func:`assemble_rows` (rows that are shifted copies of the row before them).
    """
    return assemble_rows([Part(deg, first)], shift)


def trusted_graph(
    rowptr: Tensor, col: Tensor, num_src: int, *, ptr: Tensor | None, src_ptr: Tensor | None = None
) -> Graph:
    """A :class:`~graphattn.Graph` from a builder's closed-form CSR, without re-validation.

    The fixed builders produce ``rowptr`` as the prefix sum of non-negative closed-form degrees
    and sources inside each destination's example by construction (both tested against dense
    per-pair specifications), so the ``O(E)`` min/max scan of :class:`~graphattn.Graph` would
    only re-check the construction (about 1.5 ns per edge, 0.13 s at 84 M edges).
    """
    return Graph._unchecked(rowptr, col, num_src, ptr, src_ptr)


def graph_from_rows(
    dst: Tensor, src: Tensor, num_dst: int, num_src: int, *, ptr: Tensor | None, src_ptr: Tensor | None = None
) -> Graph:
    """A graph from edges already grouped by destination (``dst`` non-decreasing)."""
    counts = torch.bincount(dst, minlength=num_dst)
    rowptr = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
    torch.cumsum(counts, 0, out=rowptr[1:])
    return Graph(rowptr, src.contiguous(), num_src, ptr=ptr, src_ptr=src_ptr)


def filter_edges(graph: Graph, keep: Tensor) -> Graph:
    """The edges of ``graph`` where ``keep [E]`` is true, in their order (batch offsets kept).

    The new ``rowptr`` is the running count of kept edges read at the old row boundaries (one
    prefix sum over ``E``, no per-edge destination index).
    """
    kept = large_empty(keep.numel() + 1, device=keep.device)
    kept[0] = 0
    kept[1:] = keep  # (a bool -> int64 prefix sum is several times slower than copy + int64 cumsum_)
    kept[1:].cumsum_(0)
    col = torch.masked_select(graph.col, keep, out=large_empty(int(kept[-1]), device=keep.device))
    return Graph._unchecked(kept[graph.rowptr], col, graph.num_src, graph.ptr, graph.src_ptr)


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


_MIN_GROUP_EDGES = 4096  # a row group written as one 2-D block must hold at least this many edges


def assemble_rows(parts: Sequence[Part], shift: int | Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """``(rowptr, col)``: row ``i`` holds part 0's sources of ``i``, then part 1's, ... (no sort).

    Generic path: every non-empty (row, arithmetic part) pair is one run of :func:`fill_runs`, in
    output order (row-major over ``[N, parts]``), so all arithmetic parts are written together by
    a fill and one or two in-place prefix sums over ``E`` into the one output tensor; the per-run
    bookkeeping is ``O(N · parts)``. An explicit part is a run overwritten by one scatter of its
    ``E_part`` sources afterwards.

    ``shift`` (all parts arithmetic; one int, or one per part) declares that consecutive rows
    are often *shifted copies*: row ``i`` has the same part degrees and steps as row ``i - 1``
    and ``first_k[i] = first_k[i - 1] + shift_k`` (a sliding window: 1; every row of a block
    alike: 0). Such rows are detected in ``O(N · parts)``; consecutive runs of equal length and
    degrees form ``[runs, rows, D]`` blocks of ``col`` that are written by one broadcast add
    (or copy) from the first row of each run, a single pass over their edges. Blocks of fewer
    than 4096 edges, and every other row, take the generic path.
    """
    total = parts[0].deg
    for part in parts[1:]:
        total = total + part.deg
    rowptr, num_edges = row_offsets(total)
    n, device = total.numel(), total.device
    deg = torch.stack([part.deg for part in parts], 1)  # [N, P]
    first = torch.zeros(n, len(parts), dtype=torch.long, device=device)
    arith = [part.step for part in parts if part.col is None]
    uniform = all(isinstance(s, int) for s in arith) and len(set(arith)) <= 1
    # An explicit part's placeholder takes the common step (its values are overwritten).
    zeros = torch.zeros(n, len(parts), dtype=torch.long, device=device)
    step: int | Tensor = (arith[0] if arith else 0) if uniform else zeros
    for k, part in enumerate(parts):  # a loop over parts, not over nodes
        if part.col is None:
            first[:, k] = part.first
            if isinstance(step, Tensor):
                step[:, k] = part.step
    explicit = {k: part.col for k, part in enumerate(parts) if part.col is not None}
    if shift is not None and not explicit and num_edges >= 16 * _MIN_GROUP_EDGES:
        shifts = [shift] * len(parts) if isinstance(shift, int) else list(shift)
        if len(shifts) != len(parts):
            raise ValueError(f"shift needs one entry per part ({len(parts)}), got {len(shifts)}")
        return rowptr, _assemble_grouped(deg, first, step, shifts, total, rowptr, num_edges)
    return rowptr, _assemble_generic(deg, first, step, explicit, rowptr, num_edges)


def _assemble_generic(
    deg: Tensor, first: Tensor, step: int | Tensor, explicit: dict[int, Tensor], rowptr: Tensor, num_edges: int
) -> Tensor:
    """The generic path of :func:`assemble_rows` on ``[N, P]`` part degrees / firsts / steps."""
    offset = torch.cumsum(deg, 1) - deg + rowptr[:-1, None]  # each part's first position in col
    keep = (deg > 0).reshape(-1)
    col = fill_runs(
        num_edges,
        offset.reshape(-1)[keep],
        first.reshape(-1)[keep],
        step if isinstance(step, int) else step.reshape(-1)[keep],
        deg.reshape(-1)[keep],
    )
    for k, values in explicit.items():
        if values.numel() == 0:
            continue
        # the part's sources, in row order, go to offset[i, k] + rank
        part_ptr, part_edges = row_offsets(deg[:, k])
        pos = repeat_rows(offset[:, k] - part_ptr[:-1], deg[:, k], part_edges)
        pos += torch.arange(part_edges, device=deg.device)
        col[pos] = values
    return col


def _assemble_grouped(
    deg: Tensor, first: Tensor, step: int | Tensor, shifts: list[int], total: Tensor, rowptr: Tensor, num_edges: int
) -> Tensor:
    """The shifted-copies path of :func:`assemble_rows` (all parts arithmetic)."""
    n, device = deg.shape[0], deg.device
    shift_t = torch.tensor(shifts, dtype=torch.long, device=device)
    # Row i + 1 continues row i's run when it is row i shifted by `shift`, part by part.
    same = (deg[1:] == deg[:-1]) & ((deg[1:] == 0) | (first[1:] == first[:-1] + shift_t))
    if isinstance(step, Tensor):
        same &= (deg[1:] <= 1) | (step[1:] == step[:-1])
    new_run = torch.ones(n, dtype=torch.bool, device=device)
    new_run[1:] = ~same.all(1)
    run_start = torch.nonzero(new_run).reshape(-1)
    run_len = torch.diff(run_start, append=torch.tensor([n], device=device))
    run_deg = deg[run_start]  # [R, P]
    # Blocks: consecutive runs of equal length and part degrees ([runs, rows, D] in col).
    new_block = torch.ones(run_start.numel(), dtype=torch.bool, device=device)
    new_block[1:] = (run_len[1:] != run_len[:-1]) | (run_deg[1:] != run_deg[:-1]).any(1)
    block_run = torch.nonzero(new_block).reshape(-1)  # first run of each block
    block_runs = torch.diff(block_run, append=torch.tensor([run_start.numel()], device=device))
    block_rows = run_len[block_run]
    block_width = total[run_start[block_run]]
    big = block_runs * block_rows * block_width >= _MIN_GROUP_EDGES
    col = large_empty(num_edges, device=device)
    # Rows of small blocks: the generic path on those rows, scattered to their place.
    run_big = torch.repeat_interleave(big, block_runs)
    small_rows = torch.nonzero(~torch.repeat_interleave(run_big, run_len)).reshape(-1)
    if small_rows.numel() > 0:
        s_deg = total[small_rows]
        s_ptr, s_edges = row_offsets(s_deg)
        s_col = _assemble_generic(
            deg[small_rows], first[small_rows], step if isinstance(step, int) else step[small_rows], {}, s_ptr, s_edges
        )
        if s_edges > 0:
            nz = s_deg > 0
            pos = fill_runs(s_edges, s_ptr[:-1][nz], rowptr[small_rows][nz], 1, s_deg[nz])
            col[pos] = s_col
    if not bool(big.any()):
        return col
    # Big blocks: the first row of each of their runs (generic path), then one broadcast per block.
    big_runs = torch.nonzero(run_big).reshape(-1)
    rep = run_start[big_runs]
    rep_ptr, rep_edges = row_offsets(total[rep])
    rep_col = _assemble_generic(
        deg[rep], first[rep], step if isinstance(step, int) else step[rep], {}, rep_ptr, rep_edges
    )
    b_idx = torch.nonzero(big).reshape(-1)
    b_run = block_run[b_idx]
    # position of each big block's first run among the big runs, its first edge in rep_col and col
    b_rep = torch.searchsorted(big_runs, b_run)
    table = torch.stack(
        [
            rowptr[run_start[b_run]],
            rep_ptr[b_rep],
            block_runs[b_idx],
            block_rows[b_idx],
            block_width[b_idx],
        ],
        1,
    )
    table = torch.cat([table, run_deg[b_run]], 1).tolist()
    ramp = torch.arange(int(block_rows[b_idx].max()), device=device)
    for e0, r0, runs, rows, width, *part_deg in table:  # a loop over blocks of >= 4096 edges
        out = col[e0 : e0 + runs * rows * width].view(runs, rows, width)
        base = rep_col[r0 : r0 + runs * width].view(runs, 1, width)
        used = {s for s, d in zip(shifts, part_deg, strict=True) if d > 0}
        if rows == 1 or used == {0}:
            out.copy_(base.expand(runs, rows, width))
        elif len(used) == 1:
            torch.add(base, ramp[:rows].view(1, rows, 1), alpha=used.pop(), out=out)
        else:
            a = 0
            for s, d in zip(shifts, part_deg, strict=True):  # a loop over parts
                if d > 0:
                    torch.add(base[..., a : a + d], ramp[:rows].view(1, rows, 1), alpha=s, out=out[..., a : a + d])
                a += d
    return col
