"""Dilated sliding windows: Beltagy et al., "Longformer: The Long-Document Transformer" (2020), §3.1.

https://arxiv.org/abs/2004.05150 -- a window with gaps of size ``dilation - 1``: sources
``j = i + k·d`` for integers ``|k| < w`` (causal: ``0 <= -k < w``), so the receptive field grows to
``(w - 1)·d`` on each side at the cost of ``2w - 1`` edges. ``dilation = 1`` is
:func:`~graphattn.structure.window`. Longformer uses different dilations on different heads: build
one graph per head and fold them with :func:`graphattn.structure.fold_heads`.

In-degree at position ``p`` of an example of length ``L``:
``min(w - 1, p // d) + min(w - 1, (L - 1 - p) // d) + 1`` (causal: ``min(w - 1, p // d) + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import Part, assemble_rows, check_int, segments, trusted_graph
from .base import StaticStructure

__all__ = ["dilated", "Dilated"]


def dilated(
    n: int | None,
    w: int,
    dilation: int = 2,
    *,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""Edges :math:`j \to i` with :math:`j = i + k d`, :math:`|k| < w` (causal: :math:`k \le 0`).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        w: taps on each side including the centre, ``>= 1``.
        dilation: gap ``d >= 1`` between taps.
        causal: only look back.
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.
    """
    w = check_int("w", w, minimum=1)
    d = check_int("dilation", dilation, minimum=1)
    seg = segments(n, lengths, batch)
    back = torch.clamp(seg.pos // d, max=w - 1)
    ahead = torch.zeros_like(back) if causal else torch.clamp((seg.length - 1 - seg.pos) // d, max=w - 1)
    # row i: first + d·t for t < deg; interior rows are shifted copies of the row before them
    rowptr, col = assemble_rows([Part(back + ahead + 1, seg.start + seg.pos - back * d, d)], shift=1)
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class Dilated(StaticStructure):
    """:func:`dilated` as a structure."""

    def __init__(self, w: int, dilation: int = 2, *, causal: bool = False) -> None:
        super().__init__()
        self.w = check_int("w", w, minimum=1)
        self.dilation = check_int("dilation", dilation, minimum=1)
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        return dilated(None, self.w, self.dilation, causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"w={self.w}, dilation={self.dilation}, causal={self.causal}"
