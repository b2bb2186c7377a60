"""Random attention: Zaheer et al., "Big Bird: Transformers for Longer Sequences" (2020), §2.

https://arxiv.org/abs/2007.14062 -- each token attends to ``r`` tokens of its example drawn
uniformly at random (BigBird's random part, at token granularity). By default the ``r`` sources are
distinct (a uniform ``r``-subset, drawn with Floyd's algorithm vectorized over all rows: ``r`` steps
of ``O(N·r)`` work, no ``N x L`` tensor); an example shorter than ``r + 1`` gives every row all of
its ``L`` tokens. ``replace=True`` draws ``r`` independent sources instead (duplicates count
separately in the softmax). Pass a seeded :class:`torch.Generator` for reproducible graphs.

In-degree: ``min(r, L)`` (``replace=True``: ``r``, or 0 in an empty example). Sources are sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import check_int, expand_rows, segments
from .base import StaticStructure

__all__ = ["random", "Random"]


def _floyd(length: Tensor, r: int, generator: torch.Generator | None) -> Tensor:
    """``[N, r]`` sorted distinct draws from ``[0, length)`` per row (rows with ``length > r``)."""
    n = length.numel()
    picks = torch.empty(n, r, dtype=torch.long, device=length.device)
    for step in range(r):  # r steps, each vectorized over all rows
        top = torch.clamp(length - r + step, min=0)  # draw t in [0, top]
        t = (torch.rand(n, generator=generator, device=length.device) * (top + 1)).long()
        t = torch.minimum(t, top)  # guard against rand() * (top + 1) rounding up to top + 1
        taken = (picks[:, :step] == t[:, None]).any(1)
        picks[:, step] = torch.where(taken, top, t)
    return picks.sort(1).values


def random(
    n: int | None,
    r: int,
    *,
    generator: torch.Generator | None = None,
    replace: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    """``r`` random sources per destination, from the destination's own example.

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        r: sources per destination, ``>= 0``.
        generator: random generator (on the build device) for reproducible graphs.
        replace: draw with replacement (see the module docstring).
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.
    """
    r = check_int("r", r, minimum=0)
    seg = segments(n, lengths, batch)
    if replace:
        deg = torch.where(seg.length > 0, r, 0)
        rowptr, row, rank = expand_rows(deg)
        u = torch.rand(row.numel(), generator=generator, device=seg.device)
        local = torch.minimum((u * seg.length[row]).long(), seg.length[row] - 1)
    else:
        short = seg.length <= r
        rowptr, row, rank = expand_rows(torch.clamp(seg.length, max=r))
        picks = _floyd(seg.length, r, generator)
        local = torch.where(short[row], rank, picks[row, torch.clamp(rank, max=max(r - 1, 0))] if r else rank)
    return Graph(rowptr, seg.start[row] + local, seg.num_nodes, ptr=seg.ptr)


class Random(StaticStructure):
    """:func:`random` as a structure; a new graph is drawn at every call (not cached)."""

    cacheable = False

    def __init__(self, r: int, *, generator: torch.Generator | None = None, replace: bool = False) -> None:
        super().__init__()
        self.r = check_int("r", r, minimum=0)
        self.generator = generator
        self.replace = replace

    def build(self, lengths: Tensor) -> Graph:
        return random(None, self.r, generator=self.generator, replace=self.replace, lengths=lengths)

    def extra_repr(self) -> str:
        return f"r={self.r}, replace={self.replace}"
