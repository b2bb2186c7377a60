"""k-nearest-neighbour graphs over positions or features (the kNN graphs of point-cloud models,
e.g. Wang et al., "Dynamic Graph CNN", 2019, and Zhao et al., "Point Transformer", 2021).

https://arxiv.org/abs/1801.07829 -- each node attends to the ``k`` nodes of its example nearest to
it in ``x`` (Euclidean distance; ``cosine=True``: largest cosine similarity). Brute force, exact,
batched over examples of equal length and chunked:

**Memory bound.** Examples are grouped by length ``L``. Up to
``C = max(1, max_elements // L^2)`` examples of one length are compared at once, each with
itself only (a batched ``[C, L, L]`` distance tensor, one ``bmm``, one ``topk``); an example with
``L^2 > max_elements`` is cut into chunks of ``R = max(1, max_elements // L)`` destination rows
against its ``L`` sources. So at most ``M = max(max_elements, L_max)`` distances exist at once,
twice (the distances and the ``bmm`` product), plus the ``[.., k]`` top-k and their int64 write
positions: ``max_elements = 2**22`` (default) bounds the working set by about 32 MiB in float32;
no ``N x N`` tensor is formed, and no distance between two different examples is computed. Time
is ``O(sum L^2 · F)`` (brute force), plus one Python step per distinct length (at most
``sqrt(2N)`` of them) and per chunk.

In-degree: ``min(k, L)`` (``loop=False``: ``min(k, L - 1)``, the node itself excluded). Row order:
nearest first (ties broken by :func:`torch.topk`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import check_int, row_offsets, segments, trusted_graph

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
    rowptr, num_edges = row_offsets(deg)
    col = torch.empty(num_edges, dtype=torch.long, device=x.device)
    n = seg.num_nodes
    if num_edges == 0:
        return trusted_graph(rowptr, col, n, ptr=seg.ptr)
    sq = (x * x).sum(1)
    starts = seg.ptr[:-1]
    lengths, inverse = torch.unique(seg.lengths, return_inverse=True)
    for v, length in enumerate(lengths.tolist()):  # a loop over distinct example lengths (<= sqrt(2N))
        kk = min(k, length - (0 if loop else 1))
        if kk <= 0:
            continue
        first = starts[inverse == v]  # the examples of this length
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
    return trusted_graph(rowptr, col, n, ptr=seg.ptr)


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
