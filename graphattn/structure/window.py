"""Sliding-window (local) attention: Parmar et al., "Image Transformer" (2018), Beltagy et al. (2020).

https://arxiv.org/abs/1802.05751 -- each token attends to the tokens around it. Convention here:
**width** ``w`` means ``|i - j| < w`` (symmetric, ``2w - 1`` tokens in the interior) or
``0 <= i - j < w`` (causal, the ``w`` most recent tokens including itself). So ``w = 1`` is self
attention only and ``w >= L`` is :func:`~graphattn.structure.full` attention.

In-degree at position ``p`` of an example of length ``L``:
``min(p, w - 1) + min(L - 1 - p, w - 1) + 1`` (symmetric) or ``min(p, w - 1) + 1`` (causal).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import check_int, contiguous_rows, segments, trusted_graph
from .base import StaticStructure

__all__ = ["window", "Window"]


def window(
    n: int | None,
    w: int,
    *,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""Edges :math:`j \to i` with :math:`|i - j| < w` (``causal``: :math:`0 \le i - j < w`).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        w: window width, ``>= 1`` (see the module docstring).
        causal: only look back.
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.

    Returns:
        :class:`~graphattn.Graph` with ``ptr``, sources ascending within each row.
    """
    w = check_int("w", w, minimum=1)
    seg = segments(n, lengths, batch)
    lo = torch.clamp(seg.pos - (w - 1), min=0)
    hi = seg.pos if causal else torch.minimum(seg.pos + (w - 1), seg.length - 1)
    rowptr, col = contiguous_rows(hi - lo + 1, seg.start + lo, shift=1)  # interior rows: shifted copies
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class Window(StaticStructure):
    """:func:`window` as a structure: ``GraphAttention(d, h, structure=Window(8))``."""

    def __init__(self, w: int, *, causal: bool = False) -> None:
        super().__init__()
        self.w = check_int("w", w, minimum=1)
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        return window(None, self.w, causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"w={self.w}, causal={self.causal}"
