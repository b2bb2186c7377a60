"""k-nearest-neighbour graphs over positions or features (the kNN graphs of point-cloud models,
e.g. Wang et al., "Dynamic Graph CNN", 2019, and Zhao et al., "Point Transformer", 2021).

https://arxiv.org/abs/1801.07829 -- each node attends to the ``k`` nodes of its example nearest to
it in ``x`` (Euclidean distance; ``cosine=True``: largest cosine similarity). Brute force, exact,
chunked over destinations:

**Memory bound.** A chunk of ``R = max(1, min(max_elements // L_max, isqrt(max_elements)))``
destination rows is compared with the contiguous span of sources of their examples
(``<= R + 2·L_max`` columns), so at most ``3·max_elements`` distances (plus an equal-size example
mask and the ``[R, k]`` top-k) exist at once: ``max_elements = 2**22`` (default) bounds the working
set by about 50 MiB in float32; no ``N x N`` tensor is formed for ``N > sqrt(max_elements)``. Time
is ``O(sum L^2 · F)`` (brute force), so large single examples take seconds, not milliseconds.

In-degree: ``min(k, L)`` (``loop=False``: ``min(k, L - 1)``, the node itself excluded). Row order:
nearest first (ties broken by :func:`torch.topk`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import check_int, expand_rows, segments

__all__ = ["knn"]


def knn(
    x: Tensor,
    k: int,
    *,
    loop: bool = True,
    cosine: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
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
    if lengths is None and batch is None:
        lengths = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    seg = segments(x.shape[0], lengths, batch)
    x = x.detach()
    if cosine:
        x = torch.nn.functional.normalize(x, dim=1)
    deg = torch.clamp(torch.clamp(seg.length - (0 if loop else 1), min=0), max=k)
    rowptr, row, rank = expand_rows(deg)
    col = torch.empty_like(row)
    n = seg.num_nodes
    l_max = int(seg.lengths.max()) if seg.lengths.numel() > 0 else 0
    rows = max(1, min(max_elements // max(l_max, 1), math.isqrt(max_elements)))
    sq = (x * x).sum(1)
    end = seg.start + seg.length
    for a in range(0, n, rows):  # a loop over chunks of rows, not over nodes
        b = min(a + rows, n)
        s0, s1 = int(seg.start[a]), int(end[b - 1])
        xs = x[s0:s1]
        if cosine:
            dist = -(x[a:b] @ xs.T)
        else:
            dist = torch.clamp(sq[a:b, None] + sq[None, s0:s1] - 2.0 * (x[a:b] @ xs.T), min=0)
        other = seg.example[a:b, None] != seg.example[None, s0:s1]
        if not loop:
            other[torch.arange(b - a), torch.arange(a, b) - s0] = True
        dist = dist.masked_fill(other, float("inf"))
        kk = min(k, s1 - s0)
        idx = torch.topk(dist, kk, dim=1, largest=False, sorted=True).indices if kk > 0 else None
        e0, e1 = int(rowptr[a]), int(rowptr[b])
        if e1 > e0 and idx is not None:
            col[e0:e1] = s0 + idx[row[e0:e1] - a, rank[e0:e1]]
    return Graph(rowptr, col, n, ptr=seg.ptr)
