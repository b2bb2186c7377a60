"""Factorized attention: Ren et al., "Combiner: Full Attention Transformer with Sparse Computation Cost" (NeurIPS 2021).

https://arxiv.org/abs/2107.05768 -- attention as a conditional expectation: a query attends
directly to the tokens of its own region and, for every other region it may see, to one
*summary* node standing for that region's tokens. Direct and summary edges share **one joint
softmax**, so every token reaches every (earlier, if causal) token in one hop, directly or
through a summary, at sparse cost. As a graph:

* **Stage 1** (tokens -> summaries, a bipartite graph ``R x N``): a summary's query and key are
  the max-pool of its region's queries and keys; its value is the region's attention output
  under that max-pooled query (``edge_attention`` over the stage-1 graph). This is the paper's
  ``p(j | Ω_r)`` approximated independently of the query, "Combiner-*" with max-pooled keys.
* **Stage 2** (``[tokens; summaries]`` -> tokens, a bipartite graph ``N x (N + R)``): the
  layer's attention, one softmax over direct and summary edges, on the same fused op.

Variants (``L`` tokens of an example, region size ``s``, default ``ceil(sqrt(L))``):

* ``"fixed"``: regions of ``s`` consecutive tokens; a query sees its region directly and the
  other ``ceil(L/s) - 1`` regions (causal: the earlier ones) through their summaries:
  ``~ s + L/s ~ 2·sqrt(L)`` edges per query, ``O(L·sqrt(L))`` per example.
* ``"logsparse"``: the binary partition of Combiner-Logsparse: along the path from token ``i``
  to the root of a binary tree over positions, the sibling of each ancestor block is one
  summary (level 0, a single token, is a direct edge). At most ``log2(L) + 2`` edges per query
  (self, sibling token, one summary per level; causal: left siblings only), ``O(L log L)``.
* ``"mixture"``: Fixed's direct region plus the Logsparse tree over *regions* for the rest:
  ``s + log2(L/s)`` edges per query (our reading of Combiner-Mixture: the union of a local
  part and a logarithmic hierarchy of summaries).
* ``"axial"`` (images of ``image_size = (h, w)`` in row-major order): a query at ``(r, c)`` sees
  its row directly (causal: columns ``<= c``), and every other row's tokens through ``w``
  column-specific summaries: summary ``(r, c')`` holds column ``c'`` over the rows ``!= r``
  (causal: rows ``< r``). ``2w`` edges per query, ``O(h·w·(h + w))`` per image.

Bidirectional by default; ``causal=True`` keeps only ``j <= i``. The structure depends only on
the example lengths, so it is cached per batch layout. With ``s >= L`` (one region) Fixed is
full attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_bool, check_int_pair
from ..graph import Graph, LastBuilt
from ..ops import edge_attention
from ._segments import check_int, expand_rows
from .base import Structure, StructureOutput, resolve_ptr

__all__ = ["Combiner", "combiner_graphs", "range_argmax"]

_VARIANTS = ("fixed", "logsparse", "mixture", "axial")


def _tree_summaries(num_units: int, unit_size: int, length: int, i_unit: Tensor, causal: bool):
    """Sibling blocks along each query's path in a binary tree over units of ``unit_size`` tokens.

    A block at level ``l`` covers units ``[b·2^l, (b+1)·2^l)``. For queries in units
    ``i_unit [M]`` returns ``(levels [T], sibling [M, T], valid [M, T])``: at each level the
    sibling of the query's ancestor block, and whether it exists (starts before ``length``;
    causal: lies to the left).
    """
    top = max(1, math.ceil(math.log2(max(num_units, 1))))
    levels = torch.arange(top, device=i_unit.device)
    anc = i_unit[:, None] >> levels[None]  # ancestor block of each query at each level
    sib = anc ^ 1
    start = (sib << levels[None]) * unit_size
    valid = start < length
    if causal:
        valid &= (anc & 1) == 1  # only a left sibling lies before the query
    return levels, sib, valid


def combiner_graphs(
    length: int, variant: str, s: int, *, causal: bool = False, image_size: tuple[int, int] | None = None
) -> tuple[Graph, Graph]:
    """``(stage1, stage2)`` for one example of ``length`` tokens (see the module docstring).

    ``stage1``: destinations = summaries ``[0, R)``, sources = tokens ``[0, L)``.
    ``stage2``: destinations = tokens, sources = ``[tokens; summaries]`` (summary ``r`` is
    source ``L + r``).
    """
    pos = torch.arange(length)
    if variant == "axial":
        if image_size is None or image_size[0] * image_size[1] != length:
            raise ValueError(f"axial needs image_size (h, w) with h·w = L = {length}, got {image_size}")
        return _axial(length, image_size, causal)
    if variant == "logsparse":
        unit, num_units = 1, length
    else:
        unit, num_units = s, math.ceil(length / s) if length else 0
    region = pos // unit
    region_start = region * unit
    region_len = torch.clamp(length - region_start, max=unit)
    # Summary blocks: fixed = every region; tree variants = every tree block above the direct level.
    if variant == "fixed":
        blocks = [(r * unit, min((r + 1) * unit, length)) for r in range(num_units)]
        block_id = {(0, r): r for r in range(num_units)}
    else:
        top = max(1, math.ceil(math.log2(max(num_units, 1))))
        lowest = 1 if variant == "logsparse" else 0
        blocks, block_id = [], {}
        for lvl in range(lowest, top):
            span = (1 << lvl) * unit
            for b in range(math.ceil(length / span)):
                block_id[(lvl, b)] = len(blocks)
                blocks.append((b * span, min((b + 1) * span, length)))
    # ---- stage 1: summary <- its tokens
    sizes = torch.tensor([e - b for b, e in blocks], dtype=torch.long)
    rowptr1, row1, rank1 = expand_rows(sizes)
    starts = torch.tensor([b for b, _ in blocks], dtype=torch.long)
    stage1 = Graph(rowptr1, starts[row1] + rank1 if len(blocks) else rank1, length)
    # ---- stage 2: token <- direct tokens, then summaries
    if variant == "logsparse":
        direct_lo = pos & ~1  # self and sibling token (level 0)
        direct_deg = torch.clamp(length - direct_lo, max=2)
        if causal:
            direct_deg = pos - direct_lo + 1
    else:
        direct_lo = region_start
        direct_deg = (pos - region_start + 1) if causal else region_len
    if variant == "fixed":
        r_all = torch.arange(num_units)
        summ = r_all[None].expand(length, -1)
        valid = (summ != region[:, None]) & ((summ < region[:, None]) if causal else True)
        summ_ids = summ
    else:
        lowest = 1 if variant == "logsparse" else 0
        levels, sib, valid = _tree_summaries(num_units, unit, length, region, causal)
        keep_levels = levels >= lowest
        valid = valid & keep_levels[None]
        lut = torch.full((int(levels.max()) + 1, max(num_units, 1) + 1), -1, dtype=torch.long)
        for (lvl, b), idx in block_id.items():
            lut[lvl, b] = idx
        summ_ids = lut[levels[None].expand_as(sib), sib.clamp(max=lut.shape[1] - 1)]
        valid = valid & (summ_ids >= 0)
    summ_deg = valid.sum(1)
    deg = direct_deg + summ_deg
    rowptr2, row2, rank2 = expand_rows(deg)
    # k-th valid summary of each row: order the valid entries first, stably.
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    ranked = torch.gather(summ_ids, 1, order)
    is_direct = rank2 < direct_deg[row2]
    k = torch.clamp(rank2 - direct_deg[row2], min=0)
    src = torch.where(
        is_direct,
        direct_lo[row2] + rank2,
        length + ranked[row2, k.clamp(max=max(ranked.shape[1] - 1, 0))] if ranked.numel() else rank2,
    )
    stage2 = Graph(rowptr2, src, length + len(blocks))
    return stage1, stage2


@torch.no_grad()
def range_argmax(x: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Row of the maximum of ``x`` over each range ``[start, end)`` of rows, entry by entry.

    ``x [N, ...]``, ``start``/``end [R]`` with ``start < end`` -> ``int64 [R, ...]`` (the first
    row on ties), for ``torch.gather(x, 0, ...)`` (differentiable; the maxima themselves are
    not needed). By doubling, as in a sparse table: ``M_j[i]`` = the maximum over rows
    ``i .. i + 2^j - 1``, built from ``M_{j-1}`` with one shifted elementwise maximum, and a
    range of length ``n`` with ``2^j <= n < 2^(j+1)`` is the larger of ``M_j[start]`` and
    ``M_j[end - 2^j]``. Only the current level is kept: ``O(N · log(max length))`` elementwise
    work and ``O(N + R)`` memory per entry, where gathering every (range, row) pair costs
    ``O(sum of lengths)`` memory (``N log N`` for Logsparse's nested blocks).
    """
    n = x.shape[0]
    out = torch.empty((start.numel(), *x.shape[1:]), dtype=torch.long, device=x.device)
    if start.numel() == 0:
        return out
    if bool(((start < 0) | (end <= start) | (end > n)).any()):
        raise ValueError(f"range_argmax needs non-empty ranges inside the {n} rows of x (0 <= start < end <= {n})")
    level = torch.floor(torch.log2((end - start).double())).long()  # exact for lengths < 2^52
    shape = (-1,) + (1,) * (x.dim() - 1)
    val, arg = x, torch.arange(n, device=x.device).view(shape).expand_as(x)
    for j in range(int(level.max()) + 1):
        if j:  # M_j from M_{j-1}: rows i and i + 2^(j-1)
            half = 1 << (j - 1)
            right = val[half:] > val[: val.shape[0] - half]
            val = torch.where(right, val[half:], val[: val.shape[0] - half])
            arg = torch.where(right, arg[half:], arg[: arg.shape[0] - half])
        at = torch.nonzero(level == j).reshape(-1)
        if at.numel():
            a, b = start[at], end[at] - (1 << j)
            out[at] = torch.where(val[b] > val[a], arg[b], arg[a])
    return out


def _axial(length: int, image_size: tuple[int, int], causal: bool) -> tuple[Graph, Graph]:
    h, w = image_size
    r, c = torch.arange(length) // w, torch.arange(length) % w
    # Summary (r, c') for every row r and column c': column c' over rows != r (causal: rows < r).
    sr, sc = torch.arange(h * w) // w, torch.arange(h * w) % w
    size = sr if causal else torch.full_like(sr, h - 1)
    rowptr1, row1, rank1 = expand_rows(size)
    src_row = rank1 if causal else rank1 + (rank1 >= sr[row1]).long()  # skip the summary's own row
    stage1 = Graph(rowptr1, src_row * w + sc[row1], length)
    has_summaries = (r > 0) if causal else torch.full_like(r, h > 1, dtype=torch.bool)
    direct_deg = (c + 1) if causal else torch.full_like(c, w)
    deg = direct_deg + has_summaries.long() * w
    rowptr2, row2, rank2 = expand_rows(deg)
    is_direct = rank2 < direct_deg[row2]
    src = torch.where(is_direct, r[row2] * w + rank2, length + r[row2] * w + (rank2 - direct_deg[row2]))
    return stage1, Graph(rowptr2, src, 2 * length)


class Combiner(Structure):
    """Combiner as a structure: stage-2 graph over ``[tokens; summaries]`` plus the summaries' keys and values.

    Args:
        variant: ``"fixed"``, ``"logsparse"``, ``"mixture"`` or ``"axial"``.
        region_size: ``s``; default ``ceil(sqrt(L))`` per example (unused by ``logsparse``/``axial``).
        causal: keep only edges ``j -> i`` with ``j <= i``.
        image_size: ``(h, w)`` of every example, for ``axial``.
        backend: ``edge_attention`` backend for stage 1.

    ``forward`` returns a :class:`StructureOutput` whose ``sources(q, k, v)`` computes the
    summaries (stage 1) and returns the keys and values of all stage-2 sources; the layer
    (:class:`graphattn.nn.GraphAttention`) calls it before the attention op.
    """

    def __init__(
        self,
        variant: str = "fixed",
        region_size: int | None = None,
        *,
        causal: bool = False,
        image_size: tuple[int, int] | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        if region_size is not None:
            region_size = check_int("region_size", region_size, minimum=1)
        if variant == "axial" and image_size is None:
            raise ValueError("variant 'axial' needs image_size=(h, w)")
        if image_size is not None:
            image_size = check_int_pair("image_size", image_size, minimum=1)
        self.variant, self.region_size, self.causal = variant, region_size, check_bool("causal", causal)
        self.image_size, self.backend = image_size, backend
        self._cache = LastBuilt()  # the graphs of the last batch layout

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, region_size={self.region_size}, causal={self.causal}"

    def graphs(self, lengths: list[int], device: torch.device) -> tuple[Graph, Graph]:
        """Block-diagonal ``(stage1, stage2)`` of a batch; cached per batch layout."""
        # The settings too: a Combiner switched to causal kept serving its non-causal graph.
        key = (tuple(lengths), device, self.variant, self.region_size, self.causal, self.image_size)
        return self._cache.get(key, lambda: self._build(lengths, device))

    def _build(self, lengths: list[int], device: torch.device) -> tuple[Graph, Graph]:
        parts = []
        for length in lengths:  # per example; cached, so this runs once per batch layout
            s = self.region_size or max(1, math.ceil(math.sqrt(max(length, 1))))
            parts.append(combiner_graphs(length, self.variant, s, causal=self.causal, image_size=self.image_size))
        n = sum(lengths)
        num_summaries = [p[0].num_dst for p in parts]
        tok_off = torch.tensor([0, *lengths]).cumsum(0).tolist()
        sum_off = torch.tensor([0, *num_summaries]).cumsum(0).tolist()
        r_total = sum_off[-1]
        # Stage 1: summaries of all examples <- tokens of all examples.
        rp1, col1, rp2, col2 = [torch.zeros(1, dtype=torch.long)], [], [torch.zeros(1, dtype=torch.long)], []
        e1 = e2 = 0
        for b, (g1, g2) in enumerate(parts):
            rp1.append(g1.rowptr[1:] + e1)
            col1.append(g1.col + tok_off[b])
            e1 += g1.num_edges
            rp2.append(g2.rowptr[1:] + e2)
            length = lengths[b]
            # Stage-2 sources: token j -> global token; summary L + r -> N + global summary.
            col2.append(torch.where(g2.col < length, g2.col + tok_off[b], g2.col - length + n + sum_off[b]))
            e2 += g2.num_edges
        ptr = torch.tensor(tok_off, dtype=torch.long)
        stage1 = Graph(torch.cat(rp1), torch.cat(col1), n).to(device)
        stage2 = Graph(torch.cat(rp2), torch.cat(col2), n + r_total, ptr=ptr).to(device)
        return stage1, stage2

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        ptr = resolve_ptr("Combiner", q, k, ptr, src_ptr, graph)
        lengths = (ptr[1:] - ptr[:-1]).tolist()
        with torch.no_grad():
            stage1, stage2 = self.graphs(lengths, q.device)
        return StructureOutput(stage2, sources=self._sources(stage1))

    def _sources(self, stage1: Graph) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
        def sources(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
            if self.variant == "axial":  # column summaries: not a token range, gathered per edge
                dst, src = stage1.dst(), stage1.col
                r = stage1.num_dst
                idx = dst[:, None, None].expand(-1, *q.shape[1:])
                q_sum = q.new_zeros(r, *q.shape[1:]).scatter_reduce(0, idx, q[src], "amax", include_self=False)
                k_sum = k.new_zeros(r, *k.shape[1:]).scatter_reduce(0, idx, k[src], "amax", include_self=False)
            else:  # every summary is a range of consecutive tokens (the rows of stage 1)
                first = stage1.col[stage1.rowptr[:-1].clamp(max=max(stage1.num_edges - 1, 0))]
                end = first + stage1.in_degree()
                q_sum = torch.gather(q, 0, range_argmax(q, first, end))
                k_sum = torch.gather(k, 0, range_argmax(k, first, end))
            v_sum = edge_attention(q_sum, k, v, stage1, backend=self.backend)
            return torch.cat([k, k_sum]), torch.cat([v, v_sum])

        return sources
