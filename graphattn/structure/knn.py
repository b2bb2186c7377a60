"""k-nearest-neighbour graphs over positions or features (the kNN graphs of point-cloud models,
e.g. Wang et al., "Dynamic Graph CNN", 2019, and Zhao et al., "Point Transformer", 2021).

https://arxiv.org/abs/1801.07829 -- each node attends to the ``k`` nodes of its example nearest to
it in ``x`` (Euclidean distance; ``cosine=True``: largest cosine similarity). Exact, batched over
examples, by one of two methods (``method="auto"`` picks the grid for positions with at most 3
coordinates and Euclidean distance, brute force otherwise):

**Grid** (positions, ``F <= 3``): a uniform grid per example, its cell side chosen so that a cell
holds about ``k / 2`` points on average (``cell_points``), the points sorted by cell. Each
destination first takes the candidates in the ``3^F`` cells around its own and keeps its ``k``
nearest; the answer is exact when the ``k``-th distance is at most the distance from the point to
the border of that block of cells (no point outside it can be nearer), or the block reaches the
example's bounding box on that side. Rows that fail the test (sparse regions, clusters) are
searched again with the block radius doubled, until the block covers the whole example, so the
result is always exact. For points spread over their box the cost is ``O(N · 3^F · k)`` (with
sorting by cell, ``O(N log N)``). With ``method="auto"``, an example whose first round would
compare more than a quarter of its ``L^2`` pairs (short examples, heavily clustered points) is
searched by brute force instead, so the grid is never much slower than brute force.

**Brute force** (features, or ``cosine=True``). Examples are grouped by length ``L``. Up to
``C = max(1, max_elements // L^2)`` examples of one length are compared at once, each with
itself only (a batched ``[C, L, L]`` distance tensor, one ``bmm``, one ``topk``); an example with
``L^2 > max_elements`` is cut into chunks of ``R = max(1, max_elements // L)`` destination rows
against its ``L`` sources. Time is ``O(sum L^2 · F)``, plus one Python step per distinct length
(at most ``sqrt(2N)`` of them) and per chunk.

**Memory bound** (both methods): at most ``M = max(max_elements, L_max)`` distances (or padded
candidate slots) exist at once, a small multiple of it in temporaries: ``max_elements = 2**22``
(default) bounds the working set by a few tens of MiB; no ``N x N`` tensor is formed, and no
distance between two different examples is computed.

In-degree: ``min(k, L)`` (``loop=False``: ``min(k, L - 1)``, the node itself excluded). Row order:
nearest first (ties broken by :func:`torch.topk`, so tied neighbours may differ between methods).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .._alloc import large_empty
from ..graph import Graph
from ._segments import Segments, check_int, fill_runs, row_offsets, segments, trusted_graph

__all__ = ["knn"]

_GRID_MAX_DIM = 3


def knn(
    x: Tensor,
    k: int,
    *,
    loop: bool = True,
    cosine: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
    method: Literal["auto", "grid", "brute"] = "auto",
    cell_points: float | None = None,
    max_elements: int = 2**22,
) -> Graph:
    """``k`` nearest sources (by ``x``) of each destination, within its example.

    Args:
        x: positions or features ``[N, F]`` (or ``[N]`` for 1-D positions), floating point.
        k: neighbours per node, ``>= 0``.
        loop: whether a node may pick itself (it always does first when ``loop=True`` and
            ``cosine=False``, at distance 0).
        cosine: rank by cosine similarity instead of Euclidean distance.
        lengths: ``[B]`` example lengths (sum ``N``).
        batch: ``[N]`` example of each node.
        method: ``"grid"`` (Euclidean, ``F <= 3``), ``"brute"``, or ``"auto"`` (the grid where it
            applies); both are exact (see the module docstring).
        cell_points: the grid's mean points per cell (default ``max(k / 2, 1)``); a speed knob only.
        max_elements: the chunking budget (see the module docstring).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating torch.Tensor [N, F], got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise ValueError(f"x must be [N, F] or [N], got shape {list(x.shape)}")
    k = check_int("k", k, minimum=0)
    max_elements = check_int("max_elements", max_elements, minimum=1)
    if method not in ("auto", "grid", "brute"):
        raise ValueError(f"method must be 'auto', 'grid' or 'brute', got {method!r}")
    grid_ok = not cosine and 1 <= x.shape[1] <= _GRID_MAX_DIM
    if method == "grid" and not grid_ok:
        raise ValueError(
            f"method='grid' needs Euclidean distance (cosine=False) and 1 to {_GRID_MAX_DIM} coordinates, "
            f"got cosine={cosine} and x of shape {list(x.shape)}"
        )
    top = float(x.abs().amax()) if x.numel() else 0.0  # NaN and inf show here too
    if not math.isfinite(top):
        raise ValueError("x must be finite (no NaN or inf)")
    if cell_points is not None and not cell_points > 0:
        raise ValueError(f"cell_points must be > 0, got {cell_points}")
    if lengths is None and batch is None:
        lengths = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    seg = segments(x.shape[0], lengths, batch)
    x = x.detach()
    if cosine:
        x = torch.nn.functional.normalize(x, dim=1)
    elif top > 0 and not 2.0**-32 <= top <= 2.0**32:
        # Distances are ranked by their squares, which overflow (or underflow) for coordinates near
        # the dtype's range: bring the largest to [0.5, 1) by a power of two, which is exact, so
        # every comparison is the one the unscaled coordinates would give where they do not overflow.
        # Two factors, each representable even when the whole shift is not (subnormal inputs).
        shift = -math.frexp(top)[1]
        x = x * 2.0 ** (shift // 2) * 2.0 ** (shift - shift // 2)
    deg = torch.clamp(torch.clamp(seg.length - (0 if loop else 1), min=0), max=k)
    rowptr, num_edges = row_offsets(deg)
    col = torch.empty(num_edges, dtype=torch.long, device=x.device)
    n = seg.num_nodes
    if num_edges == 0:
        return trusted_graph(rowptr, col, n, ptr=seg.ptr)
    brute = torch.ones(seg.lengths.numel(), dtype=torch.bool, device=x.device)  # per example
    if grid_ok and method != "brute":
        search = _GridSearch(x, seg, deg, loop, float(cell_points or max(k / 2, 1)), max_elements)
        brute = search.worse_than_brute_force() if method == "auto" else ~brute
        search.run(rowptr, col, brute)
    if bool(brute.any()):
        _brute_force(x, seg, brute, k, loop, cosine, max_elements, rowptr, col)
    return trusted_graph(rowptr, col, n, ptr=seg.ptr)


def _brute_force(
    x: Tensor,
    seg: Segments,
    use: Tensor,
    k: int,
    loop: bool,
    cosine: bool,
    max_elements: int,
    rowptr: Tensor,
    col: Tensor,
) -> None:
    """The brute-force method of :func:`knn` on the examples where ``use [B]`` is true.

    Euclidean distances are ranked through ``|x_i|^2 + |x_j|^2 - 2 x_i·x_j``, which cancels
    catastrophically in float32 for points far from the origin relative to their spacing (a
    cluster of radius 0.01 at distance 300 loses every digit), so they are computed in float64.
    """
    if not cosine:
        x = x.double()
    sq = (x * x).sum(1)
    starts = seg.ptr[:-1]
    lengths, inverse = torch.unique(seg.lengths, return_inverse=True)
    for v, length in enumerate(lengths.tolist()):  # a loop over distinct example lengths (<= sqrt(2N))
        kk = min(k, length - (0 if loop else 1))
        if kk <= 0:
            continue
        first = starts[(inverse == v) & use]  # the examples of this length
        if length * length <= max_elements:
            per = max(1, max_elements // (length * length))
            for a in range(0, first.numel(), per):  # chunks of whole examples
                _knn_examples(x, sq, first[a : a + per], length, 0, length, kk, loop, cosine, rowptr, col)
        else:
            rows = max(1, max_elements // length)
            for s0 in first.tolist():  # one long example at a time, in chunks of rows
                for a in range(0, length, rows):
                    _knn_examples(
                        x, sq, first.new_tensor([s0]), length, a, min(a + rows, length), kk, loop, cosine, rowptr, col
                    )


class _GridSearch:
    """The grid method of :func:`knn` (module docstring): cells per example, rounds of growing blocks."""

    def __init__(self, x: Tensor, seg: Segments, deg: Tensor, loop: bool, cell_points: float, max_elements: int):
        dev, f = x.device, x.shape[1]
        self.x, self.deg, self.loop, self.budget = x, deg, loop, max_elements
        ex = seg.example
        b = seg.lengths.numel()
        big = torch.finfo(x.dtype).max
        lo = torch.full((b, f), big, dtype=x.dtype, device=dev).scatter_reduce_(0, ex[:, None].expand(-1, f), x, "amin")
        hi = torch.full((b, f), -big, dtype=x.dtype, device=dev).scatter_reduce_(
            0, ex[:, None].expand(-1, f), x, "amax"
        )
        extent = (hi - lo).clamp_(min=0)
        # Cell side h: the volume of the box's non-flat dimensions over the wanted cell count.
        flat = extent <= 0
        dims = (~flat).sum(1).clamp(min=1)
        cells = (seg.lengths.to(x.dtype) / cell_points).clamp(min=1)
        log_h = (torch.where(flat, 0.0, extent.clamp(min=torch.finfo(x.dtype).tiny).log()).sum(1) - cells.log()) / dims
        side = torch.where((~flat).any(1), log_h.exp(), torch.ones_like(log_h))  # all points equal: one cell
        # Cells per dimension, at most the wanted cell count in any one (a thin strip of points
        # would otherwise get a cell per point along it); then each dimension's own cell size.
        cap = cells.ceil().long()[:, None]
        grid = torch.minimum(torch.ceil(extent / side[:, None]).long().clamp_(min=1), cap)  # [B, F]
        h = torch.where(flat, 1.0, extent / grid)  # [B, F]
        stride = torch.ones_like(grid)
        for d in range(f - 2, -1, -1):
            stride[:, d] = stride[:, d + 1] * grid[:, d + 1]
        per_example = stride[:, 0] * grid[:, 0]
        cell_first = torch.cumsum(per_example, 0) - per_example
        self.lo, self.h, self.grid, self.stride, self.cell_first = lo, h, grid, stride, cell_first
        self.cells_per_example = per_example
        self.ex, self.lengths = ex, seg.lengths
        self.coord = torch.minimum(((x - lo[ex]) / h[ex]).floor_().long().clamp_(min=0), grid[ex] - 1)  # [N, F]
        cell = cell_first[ex] + (self.coord * stride[ex]).sum(1)
        self.order = torch.argsort(cell, stable=True)  # nodes sorted by cell
        counts = torch.bincount(cell, minlength=int(per_example.sum()))
        self.cell_start = torch.cumsum(counts, 0) - counts
        self.cell_count = counts
        pad = torch.full((1,), float("inf"), dtype=x.dtype, device=dev)
        self.padded_coords = [torch.cat([x[:, d], pad]) for d in range(f)]  # node n: the padding

    def worse_than_brute_force(self) -> Tensor:
        """``[B]``: examples where the first round alone would compare more than a quarter of all pairs.

        The first round compares each point with the ``3^F`` cells around its own, about
        ``3^F · sum(count^2)`` pairs over the example's cells, against ``L^2`` for brute force
        (whose pairs are several times cheaper: one ``bmm`` and one ``topk``). Short examples and
        heavily clustered points go to brute force, so the grid never costs much more than it.
        """
        cell_example = torch.repeat_interleave(
            torch.arange(self.grid.shape[0], device=self.grid.device), self.cells_per_example
        )
        pairs = torch.zeros(self.grid.shape[0], dtype=torch.float64, device=self.grid.device)
        pairs.index_add_(0, cell_example, self.cell_count.double().square())
        return pairs * 3 ** self.grid.shape[1] > 0.25 * self.lengths.double().square()

    def run(self, rowptr: Tensor, col: Tensor, skip: Tensor) -> None:
        """Write the rows of every example but those where ``skip [B]`` is true."""
        rows = torch.nonzero((self.deg > 0) & ~skip[self.ex]).reshape(-1)
        radius, widest = 1, self.grid.amax(0).tolist()  # the most cells of any example, per dimension
        while rows.numel() > 0:
            complete = all(radius >= w - 1 for w in widest)  # the block covers every cell of every example
            offsets = _block_offsets([min(radius, w - 1) for w in widest], self.x.device)
            per = max(1, self.budget // offsets.shape[0])
            failed = [
                self._rows(rows[a : a + per], offsets, radius, complete, rowptr, col)
                for a in range(0, rows.numel(), per)
            ]
            rows = torch.cat(failed)
            radius = min(2 * radius + 1, max(max(widest) - 1, 1))  # never wider than the widest grid

    def _rows(self, rows: Tensor, offsets: Tensor, radius: int, complete: bool, rowptr: Tensor, col: Tensor) -> Tensor:
        """Search ``rows`` in the blocks of ``offsets``; write the exact ones, return the others."""
        ex = self.ex[rows]
        grid = self.grid[ex]
        nb = self.coord[rows][:, None, :] + offsets  # [R, P, F] neighbour cells
        inside = ((nb >= 0) & (nb < grid[:, None, :])).all(2)
        cell = self.cell_first[ex][:, None] + (nb * self.stride[ex][:, None, :]).sum(2)
        cell = torch.where(inside, cell, 0)
        count = torch.where(inside, self.cell_count[cell], 0)  # [R, P]
        total = count.sum(1)  # candidates per row
        padded = rows.numel() * int(total.max())
        if rows.numel() > 1 and (padded > self.budget or (padded > 2 * int(total.sum()) and rows.numel() >= 1024)):
            # Over the budget, or mostly padding: the rows with fewer candidates, then the others.
            by_total = rows[torch.argsort(total, stable=True)]
            half = rows.numel() // 2
            return torch.cat(
                [
                    self._rows(by_total[:half], offsets, radius, complete, rowptr, col),
                    self._rows(by_total[half:], offsets, radius, complete, rowptr, col),
                ]
            )
        # Candidates in a padded [R, width] table (``n``, the node past the last, pads): one
        # arithmetic run of positions in ``order`` per non-empty cell, copied to its row's slots.
        width = int(total.max())
        pair = count.reshape(-1) > 0
        run_len = count.reshape(-1)[pair]
        num = int(total.sum())
        run_at = torch.cumsum(run_len, 0) - run_len
        cand = self.order.index_select(0, fill_runs(num, run_at, self.cell_start[cell.reshape(-1)[pair]], 1, run_len))
        row_at = torch.cumsum(total, 0) - total
        filled = total > 0
        slots = fill_runs(num, row_at[filled], torch.nonzero(filled).reshape(-1) * width, 1, total[filled])
        table = large_empty(rows.numel() * width, device=rows.device).fill_(self.x.shape[0])
        table.index_copy_(0, slots, cand)
        table = table.view(rows.numel(), width)
        dist = large_empty((rows.numel(), width), dtype=self.x.dtype, device=self.x.device).zero_()
        for xd in self.padded_coords:  # per coordinate: (x_cand - x_row)^2, +inf at the pads
            dist.add_((xd.index_select(0, table.reshape(-1)).view_as(dist) - xd[rows][:, None]).square_())
        if not self.loop:
            dist.masked_fill_(table == rows[:, None], float("inf"))
        deg = self.deg[rows]
        kk = min(int(deg.max()), width)
        near, at = torch.topk(dist, kk, dim=1, largest=False, sorted=True)
        if complete:
            ok = torch.ones_like(deg, dtype=torch.bool)
        else:
            kth = near.gather(1, (deg.clamp(max=kk) - 1)[:, None]).squeeze(1)
            ok = (total >= deg) & torch.isfinite(kth) & (kth <= self._clearance(rows, ex, radius).square())
        keep = ok[:, None] & (torch.arange(kk, device=rows.device) < deg[:, None])
        pos = (rowptr[rows][:, None] + torch.arange(kk, device=rows.device))[keep]
        col.index_copy_(0, pos, table.gather(1, at)[keep])
        return rows[~ok]

    def _clearance(self, rows: Tensor, ex: Tensor, radius: int) -> Tensor:
        """Distance from each row's point to the border of its block (inf where the block reaches the box)."""
        c, grid, lo, h = self.coord[rows], self.grid[ex], self.lo[ex], self.h[ex]
        x = self.x[rows]
        below = torch.where(c - radius <= 0, float("inf"), x - (lo + (c - radius).to(x.dtype) * h))
        above = torch.where(c + radius >= grid - 1, float("inf"), lo + (c + radius + 1).to(x.dtype) * h - x)
        return torch.minimum(below, above).amin(1)


def _block_offsets(radii: list[int], device: torch.device) -> Tensor:
    """``[prod(2 r_d + 1), F]``: every integer offset with entry ``d`` in ``-r_d .. r_d``."""
    ranges = [torch.arange(-r, r + 1, device=device) for r in radii]
    return torch.cartesian_prod(*ranges).reshape(-1, len(radii))


def _knn_examples(
    x: Tensor,
    sq: Tensor,
    first: Tensor,
    length: int,
    a: int,
    b: int,
    kk: int,
    loop: bool,
    cosine: bool,
    rowptr: Tensor,
    col: Tensor,
) -> None:
    """Rows ``a .. b - 1`` of the examples starting at ``first [C]`` (all of ``length``) into ``col``."""
    node = first[:, None] + torch.arange(length, device=x.device)  # [C, L]
    xs = x[node]  # [C, L, F]
    xd = xs[:, a:b]
    dot = torch.bmm(xd, xs.transpose(1, 2))  # [C, b - a, L]
    if cosine:
        dist = dot.neg_()
    else:  # |x_i|^2 + |x_j|^2 - 2 x_i·x_j, clamped at 0 (in place, same rounding as written out)
        sqs = sq[node]
        dist = sqs[:, a:b, None] + sqs[:, None, :]
        dist.sub_(dot, alpha=2.0).clamp_(min=0)
    if not loop:
        rows = torch.arange(b - a, device=x.device)
        dist[:, rows, rows + a] = float("inf")
    idx = torch.topk(dist, kk, dim=2, largest=False, sorted=True).indices  # [C, b - a, kk]
    idx += first[:, None, None]
    pos = rowptr[first + a][:, None] + torch.arange((b - a) * kk, device=x.device)
    col[pos.reshape(-1)] = idx.reshape(-1)
