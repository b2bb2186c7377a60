"""Sampled attention graphs: Cho et al., "Transformers meet Stochastic Block Models" (NeurIPS 2022).

https://arxiv.org/abs/2210.15541 -- every head samples its own attention graph from a
mixed-membership stochastic block model over the layer's queries and keys:

* ``k`` learned cluster embeddings ``C [H, k, D]`` per head and one 2-layer MLP shared by all
  heads give memberships ``Y = sigmoid(MLP(q) C^T)`` (queries) and ``Z = sigmoid(MLP(k) C^T)``
  (keys), both ``[N, H, k]`` in ``(0, 1)``;
* the block matrix ``S = softmax(C C^T)`` over all ``k²`` entries (so ``sum S = 1``);
* the expected edge weight ``p_ij = Y_i S Z_j^T`` lies in ``[0, 1]``.

**Sampling in expected O(E + N·k)** (fastRG, Rohe et al. 2018, "A note on quickly sampling a
sparse matrix with low rank expectation", https://arxiv.org/abs/1703.02998): with column sums
``y_a = sum_i Y_ia`` and ``z_c = sum_j Z_jc``, draw the number of edges of each block pair
``(a, c)`` from ``Poisson(y_a S_ac z_c)`` (equivalently, fastRG's total ``Poisson(sum_ac y_a
S_ac z_c)`` split by a multinomial), then each edge's destination ``i ~ Y[:, a] / y_a`` and
source ``j ~ Z[:, c] / z_c``. The number of draws of a pair ``(i, j)`` is then exactly
``Poisson(p_ij)``. The endpoint draws are inverse transforms over per-row cumulative sums of
the memberships, bounded by a guide table (Chen and Asau 1974) and finished by a search that
halves every draw's range at once (a round or two when no cell holds many nodes, ``log N`` at
worst), vectorized over examples, heads and clusters; nothing of size ``N x N`` is formed. On
the CPU the tables and the draws run in native kernels (``graphattn::sbm_table``,
``graphattn::sbm_draw``, ``cuda/sbm_draw_cpu.cpp``: the same tables, and per draw the same
steps, so the same edges from the same uniforms; the sampler 2.4-4x faster). The authors'
published code draws a dense ``N x N`` Bernoulli mask instead.

**Multigraph or simple graph**: ``dedup=True`` (default) keeps each sampled pair once, so an
edge is present with probability ``1 - exp(-p_ij)`` (``≈ p_ij`` for sparse graphs);
``dedup=False`` keeps the Poisson multigraph, whose edge counts have mean exactly ``p_ij``
(duplicates count separately in the op's softmax).

**Gradients** (straight-through, Section 3.3 of the paper): each sampled edge carries a
``gate`` whose value is 1 and whose gradient flows to ``p_ij``, clipped to ``[-1, 1]``. The
auxiliary loss is a density regularizer, ``density_weight`` (1e-4) times the mean expected
density ``sum_ij p_ij / L²`` over heads and examples, computed from column sums in O(N·k).

**Our additions**: a learnable membership offset per head, initialized so the expected density
starts at ``init_density`` (the paper starts dense); a self loop per node (``self_loops=True``)
so no row is empty; sampling from a ``torch.Generator`` for reproducible runs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_float, check_generator
from ..graph import Graph
from ..ops import native
from ._adaptive import graph_from_edges, self_attention_ptr, straight_through_edge_gate
from ._segments import check_int
from .base import Structure, StructureOutput
from .batch import example_ids

__all__ = ["SBM", "sample_fastrg"]


def _column_sums(x: Tensor, example: Tensor, num_examples: int) -> Tensor:
    """``[B, H, k]``: the sums of ``x [N, H, k]`` over the nodes of each example."""
    return x.new_zeros(num_examples, *x.shape[1:]).index_add(0, example, x)


def sample_fastrg(
    y: Tensor, s: Tensor, z: Tensor, ptr: Tensor, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample a Poisson multigraph with ``E[count(i, j)] = Y_i S Z_j^T`` per head and example.

    Args:
        y: ``[N, H, k]`` non-negative destination memberships.
        s: ``[H, k, k]`` non-negative block weights.
        z: ``[N, H, k]`` non-negative source memberships.
        ptr: ``[B + 1]`` example offsets (edges never cross examples).
        generator: for reproducible draws.

    Returns:
        ``(head, dst, src)``, each ``int64 [M]``, in no particular order.
    """
    n, h, k = y.shape
    b = ptr.numel() - 1
    dev = y.device
    with torch.no_grad():
        # Entry r * (N + 1) + i of a side's table is the mass of nodes < i in row r = head * k +
        # cluster over the row's total: the nodes of block (head, cluster, example) are entries
        # first..last of it, and a block's mass is a difference of two entries.
        row = torch.arange(h * k, device=dev).reshape(h, k, 1) * (n + 1)
        first, last = row + ptr[:-1], row + ptr[1:]  # [H, k, B]: block (head, cluster, example)
        table_y, guide_y, total_y = _draw_table(y)
        table_z, guide_z, total_z = _draw_table(z)
        ysum = (table_y[last] - table_y[first]) * total_y  # [H, k, B] column sums per example
        zsum = (table_z[last] - table_z[first]) * total_z
        w = ysum.permute(2, 0, 1)[..., :, None] * s.double()[None] * zsum.permute(2, 0, 1)[..., None, :]
        # Independent Poisson counts per block pair [B, H, k, k]: their total is Poisson(sum w)
        # and, given the total, they are multinomial(w / sum w), so this is fastRG's draw; it
        # also leaves the draws grouped by (example, head, a, c), so consecutive destination
        # draws stay inside one block's entries.
        counts = torch.poisson(w, generator=generator).long().reshape(-1)
        offsets = torch.zeros(counts.numel() + 1, dtype=torch.long, device=dev)
        torch.cumsum(counts, 0, out=offsets[1:])
        draws = int(offsets[-1])
        if draws == 0:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return empty, empty, empty.clone()
        # Per block pair (example, head, a, c): its head and each side's table row.
        hd = torch.arange(h, device=dev).reshape(1, h, 1, 1)
        a = torch.arange(k, device=dev).reshape(1, 1, k, 1)
        c = a.reshape(1, 1, 1, k)
        shape = (b, h, k, k)
        if _native_sampler(y):
            # The same draws as the PyTorch path below (same uniforms, same nodes), each in turn.
            example = torch.arange(b, device=dev).repeat_interleave(h * k * k)
            head = torch.repeat_interleave(hd.expand(shape).reshape(-1), counts, output_size=draws)
            sides = ((table_y, guide_y, hd * k + a), (table_z, guide_z, hd * k + c))
            dst, src = (
                torch.ops.graphattn.sbm_draw(
                    table, guide, offsets, row.expand(shape).contiguous().view(-1), example, ptr,
                    torch.rand(draws, generator=generator, dtype=torch.float64), n,
                )
                for table, guide, row in sides
            )  # fmt: skip
            return head, dst, src
        pair = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=draws)
        head = _per_draw(hd, shape, pair)
        dst = _draw(table_y, guide_y, n, (hd * k + a) * (n + 1), ptr, shape, pair, generator)
        src = _draw(table_z, guide_z, n, (hd * k + c) * (n + 1), ptr, shape, pair, generator)
    return head, dst, src


def _native_sampler(x: Tensor) -> bool:
    """Whether the tables and endpoint draws of memberships ``x`` run in the native CPU kernels
    (``graphattn::sbm_table``, ``graphattn::sbm_draw``)."""
    return (
        x.device.type == "cpu"
        and x.shape[0] > 0
        and x.dtype in (torch.float32, torch.float64)
        and native.available()
        and hasattr(torch.ops.graphattn, "sbm_table")
    )


def _draw_table(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The cumulative table of ``x [N, H, k]``, its guide table, and its row totals ``[H, k, 1]``.

    The table is float64, flat ``[H·k·(N + 1)]``: row ``r`` holds ``(x_0 + ... + x_{i-1}) /
    total_r`` for ``i = 0 .. N``. Each row is normalized on its own, so a row of small
    memberships keeps its relative precision whatever the other rows hold.

    The guide (Chen and Asau's guide table, 1974) cuts each row's ``[0, 1]`` into ``N`` cells:
    entry ``r * (N + 1) + t`` is the table index of the node whose interval holds ``t / N``
    (the last one, ``t = N``, is the row's last node), so a draw that falls in cell ``t`` lies
    between entries ``t`` and ``t + 1`` of the guide, usually the same node or the next. Built
    in ``O(N)`` per row: node ``i`` owns the cells ``ceil(N F_i) .. ceil(N F_{i+1}) - 1``.
    """
    n, h, k = x.shape
    if _native_sampler(x):  # the same values, in one pass over x
        table, guide, total = torch.ops.graphattn.sbm_table(x.contiguous())
        return table, guide, total.reshape(h, k, 1)
    table = x.new_zeros(h * k, n + 1, dtype=torch.float64)
    table[:, 1:] = x.permute(1, 2, 0).reshape(h * k, n)
    table.cumsum_(-1)
    total = table[:, -1:].clone()
    table /= total.clamp_min(1e-300)
    table[:, -1] = 1.0  # exactly (also for a row without mass: none of its draws happen)
    cells = torch.ceil(table * n).long()
    node = torch.arange(h * k * (n + 1), device=x.device).reshape(h * k, n + 1)[:, :-1]
    guide = torch.repeat_interleave(node.reshape(-1), (cells[:, 1:] - cells[:, :-1]).reshape(-1)).reshape(h * k, n)
    guide = torch.cat([guide, node[:, -1:]], 1)
    return table.reshape(-1), guide.reshape(-1), total.reshape(h, k, 1)


def _draw(
    table: Tensor,
    guide: Tensor,
    n: int,
    base: Tensor,
    ptr: Tensor,
    shape: tuple[int, ...],
    pair: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    """One node per draw: draw ``e``, of block pair ``pair[e]`` in example ``x``, takes node
    ``i`` of ``ptr[x] .. ptr[x + 1] - 1`` with probability ``∝ table[base + i + 1] - table[base +
    i]`` (see :func:`_draw_table`). ``base``, the table row's start per block pair, broadcasts
    to the block pairs' ``shape`` ``[B, ...]``.

    Inverse transform: ``f = table[first] + u (table[last] - table[first])`` over the block's
    entries ``first .. last``, then the largest entry ``<= f``, searched between the guide's
    bounds for ``f``'s cell, all draws halving their ranges together: a few vectorized gathers
    instead of one binary search per draw over the whole table (dependent loads that miss the
    cache at every level once the table outgrows it).
    """

    starts = ptr.reshape(-1, *[1] * (len(shape) - 1))
    first, last = _per_draw(base + starts[:-1], shape, pair), _per_draw(base + starts[1:], shape, pair)
    start = table.index_select(0, first)
    f = torch.rand(start.shape, generator=generator, dtype=torch.float64, device=start.device)
    f = f.mul_(table.index_select(0, last).sub_(start)).add_(start)
    cell = f.mul(n).long().clamp_(0, max(n - 1, 0)).add_(_per_draw(base, shape, pair))
    lo = guide.index_select(0, cell)
    hi = torch.minimum(guide.index_select(0, cell.add_(1)), last.sub_(1))
    lo = torch.minimum(torch.maximum(lo, first), hi)
    # Largest i in [lo, hi] with table[i] <= f; the draws whose range is closed drop out once
    # they are half of those left, so a few wide ranges (many tiny masses in one cell) do not
    # keep every draw iterating.
    out, where = lo, None
    while True:
        open_ = hi > lo
        left = int(open_.sum())
        if left == 0:
            break
        if 2 * left <= lo.numel():
            keep = open_.nonzero().squeeze(1)
            if where is None:
                out, where = lo, keep
            else:
                out.index_copy_(0, where, lo)
                where = where.index_select(0, keep)
            lo, hi, f = lo.index_select(0, keep), hi.index_select(0, keep), f.index_select(0, keep)
        mid = (lo + hi + 1).div_(2, rounding_mode="floor")
        go = table.index_select(0, mid) <= f
        lo = torch.where(go, mid, lo)
        hi = torch.where(go, hi, mid.sub_(1))
    if where is not None:
        out.index_copy_(0, where, lo)
        lo = out
    return lo.sub_(_per_draw(base, shape, pair))


def _per_draw(x: Tensor, shape: tuple[int, ...], pair: Tensor) -> Tensor:
    """``x``, broadcast to the block pairs' ``shape``, at each draw's block pair ``pair [M]``."""
    return x.expand(shape).reshape(-1).index_select(0, pair)


class SBM(Structure):
    r"""Per-head attention graphs sampled from a learned mixed-membership block model.

    Args:
        num_heads: attention heads ``H``.
        head_dim: head dim ``D`` of the projected queries and keys.
        num_clusters: block-model clusters ``k`` per head (the paper uses 128).
        hidden: width of the shared 2-layer MLP (default ``D``).
        dedup: keep each sampled pair once (a simple graph) rather than the Poisson multigraph.
        self_loops: add ``i -> i`` for every node so no row is empty.
        init_density: expected edge density the membership offset is initialized to.
        density_weight: weight of the density regularizer (the auxiliary loss).
        generator: a ``torch.Generator`` for reproducible sampling.

    .. math::
        Y = \sigma(\mathrm{MLP}(q) C^\top + b),\quad Z = \sigma(\mathrm{MLP}(k) C^\top + b),\quad
        S = \operatorname{softmax}(C C^\top),\quad p_{ij} = Y_i S Z_j^\top

    ``forward`` returns a folded per-head graph, ``gate [E, 1]`` (value 1, straight-through
    gradient to ``p_ij``) and ``aux_loss``. In eval mode sampling still happens (the method
    is stochastic at inference, as in the paper); fix ``generator`` for repeatable outputs.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        num_clusters: int = 32,
        *,
        hidden: int | None = None,
        dedup: bool = True,
        self_loops: bool = True,
        init_density: float = 0.1,
        density_weight: float = 1e-4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.head_dim = check_int("head_dim", head_dim, minimum=1)
        self.num_clusters = check_int("num_clusters", num_clusters, minimum=1)
        hidden = head_dim if hidden is None else check_int("hidden", hidden, minimum=1)
        if not 0.0 < init_density <= 1.0:
            raise ValueError(f"init_density must be in (0, 1], got {init_density}")
        self.dedup, self.self_loops = dedup, self_loops
        self.density_weight = check_float("density_weight", density_weight, minimum=0.0)
        self.generator = check_generator("generator", generator)
        self.mlp = nn.Sequential(nn.Linear(head_dim, hidden), nn.ReLU(), nn.Linear(hidden, head_dim))
        self.clusters = nn.Parameter(torch.randn(num_heads, num_clusters, head_dim) / math.sqrt(head_dim))
        # With Y = Z = y everywhere, p = y² (sum S = 1): start at y = sqrt(init_density).
        y0 = min(math.sqrt(init_density), 1 - 1e-4)
        self.offset = nn.Parameter(torch.full((num_heads, 1), math.log(y0 / (1 - y0))))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, num_clusters={self.num_clusters}, "
            f"dedup={self.dedup}, self_loops={self.self_loops}"
        )

    def memberships(self, x: Tensor) -> Tensor:
        """``sigmoid(MLP(x) C^T + offset)``: ``[N, H, k]`` for ``x [N, H, D]``."""
        logits = torch.einsum("nhd,hkd->nhk", self.mlp(x), self.clusters) / math.sqrt(self.head_dim)
        return torch.sigmoid(logits + self.offset)

    def block_matrix(self) -> Tensor:
        """``S = softmax over all k² entries of C C^T``: ``[H, k, k]``, each head summing to 1."""
        h, k, d = self.clusters.shape
        cc = torch.einsum("hkd,hld->hkl", self.clusters, self.clusters) / math.sqrt(d)
        return torch.softmax(cc.reshape(h, k * k), -1).reshape(h, k, k)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        n, h = q.shape[:2]
        ptr = self_attention_ptr("SBM", q, k, ptr, src_ptr, graph, self.num_heads, self.head_dim)

        y, z, s = self.memberships(q), self.memberships(k), self.block_matrix()
        head, dst, src = sample_fastrg(y, s, z, ptr, generator=self.generator)
        with torch.no_grad():
            dst, src = head * n + dst, head * n + src
            if self.self_loops:
                loops = torch.arange(h * n, device=q.device)
                dst, src = torch.cat([dst, loops]), torch.cat([src, loops])
            g = graph_from_edges(dst, src, n, ptr, num_heads=h, dedup=self.dedup)
        # Gate 1 whose gradient goes to p_e = (Y S)_i . Z_j on the sampled edges only (never
        # [N, N], and no [E, k] either: two sparse products in the backward). The folded node ids
        # (h * N + i) index rows of the head-major [H * N, k] memberships.
        kc = self.num_clusters
        ys = torch.einsum("nha,hac->hnc", y, s).reshape(h * n, kc)
        zf = z.transpose(0, 1).reshape(h * n, kc)
        gate = straight_through_edge_gate(ys, zf, g)[:, None]
        lengths = (ptr[1:] - ptr[:-1]).to(y.dtype)
        example = example_ids(ptr, n)
        ysum, zsum = _column_sums(y, example, lengths.numel()), _column_sums(z, example, lengths.numel())
        expected = torch.einsum("bha,hac,bhc->bh", ysum, s, zsum)  # sum_ij p_ij per example and head
        nonempty = lengths > 0
        density = expected[nonempty] / lengths[nonempty, None] ** 2
        aux = self.density_weight * density.mean() if density.numel() else y.sum() * 0
        return StructureOutput(g, gate=gate, aux_loss=aux, per_head=True)
