"""Longformer: Beltagy et al., "Longformer: The Long-Document Transformer" (2020), §3.1.

https://arxiv.org/abs/2004.05150 -- the documented union

.. math::
    \\text{longformer}(w, g, d) = \\text{dilated}(w, d) \\cup \\text{global\\_tokens}(g)

a (dilated) sliding window plus task-specific global tokens (``g``: the first ``g`` positions, e.g.
``[CLS]``, or explicit positions such as the question tokens in QA), each edge once (row order:
window, then the global sources outside it); ``causal=True`` keeps ``j <= i``. The paper's window
``w_paper`` (total width) is ``w = w_paper / 2 + 1`` here (``|i - j| < w``). Per-head dilations:
build one graph per head and use
:func:`graphattn.structure.fold_heads`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import Part, assemble_rows, check_int, segments, trusted_graph
from .base import StaticStructure
from .global_tokens import global_tokens

__all__ = ["longformer", "Longformer"]


def longformer(
    n: int | None,
    w: int,
    g: int | Tensor | Sequence[int] = 1,
    *,
    dilation: int = 1,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    """``dilated(w, dilation) | global_tokens(g)`` inside each example (see the module docstring).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        w: window width ``>= 1`` (``|i - j| < w`` taps of ``dilation``).
        g: number of global tokens (first positions) or their positions.
        dilation: gap between window taps, ``>= 1``.
        causal: keep only ``j <= i``.
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.
    """
    check_int("w", w, minimum=1)
    check_int("dilation", dilation, minimum=1)
    seg = segments(n, lengths, batch)
    p, d = seg.pos, dilation
    back = torch.clamp(p // d, max=w - 1)  # the dilated window, as in dilated(): taps p + k·d
    ahead = torch.zeros_like(back) if causal else torch.clamp((seg.length - 1 - p) // d, max=w - 1)
    glob = global_tokens(None, g, lengths=seg.lengths)
    # Global edges already in the dilated window are dropped (and j > i when causal): O(E), no sort.
    diff = seg.pos[glob.dst()] - seg.pos[glob.col]
    keep = (diff % dilation != 0) | (diff.abs() >= w * dilation)
    if causal:
        keep &= diff >= 0
    rowptr, col = assemble_rows(
        [
            Part(back + ahead + 1, seg.start + p - back * d, d),  # the window, written in place
            Part(torch.bincount(glob.dst()[keep], minlength=glob.num_dst), col=glob.col[keep]),
        ]
    )
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class Longformer(StaticStructure):
    """:func:`longformer` as a structure."""

    def __init__(self, w: int, g: int | Sequence[int] = 1, *, dilation: int = 1, causal: bool = False) -> None:
        super().__init__()
        self.w = check_int("w", w, minimum=1)
        self.g = g if isinstance(g, int) else tuple(g)
        self.dilation = check_int("dilation", dilation, minimum=1)
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        g = self.g if isinstance(self.g, int) else list(self.g)
        return longformer(None, self.w, g, dilation=self.dilation, causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"w={self.w}, g={self.g}, dilation={self.dilation}, causal={self.causal}"
