"""Full (dense) attention inside each example: Vaswani et al., "Attention Is All You Need" (2017).

https://arxiv.org/abs/1706.03762 -- every token attends to every token of its example
(``causal=True``: to itself and the tokens before it, the decoder's mask). In-degree of a node at
position ``p`` of an example of length ``L``: ``L``, or ``p + 1`` when causal. ``E = sum L^2``, so
use it for short examples or as the oracle other structures are tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..graph import Graph
from ._segments import contiguous_rows, segments, trusted_graph
from .base import StaticStructure

__all__ = ["full", "Full"]


def full(
    n: int | None = None,
    *,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""All pairs inside each example: edges :math:`j \to i` for every :math:`j` (``causal``: :math:`j \le i`).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        causal: keep only :math:`j \le i`.
        lengths: ``[B]`` example lengths (the graph is block diagonal).
        batch: ``[N]`` example of each node (alternative to ``lengths``).

    Returns:
        :class:`~graphattn.Graph` with ``ptr``; in-degree ``L`` (causal: ``p + 1``).
    """
    seg = segments(n, lengths, batch)
    deg = seg.pos + 1 if causal else seg.length
    # non-causal: every row of an example has the same sources (written as one 2-D block)
    rowptr, col = contiguous_rows(deg, seg.start, shift=None if causal else 0)
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class Full(StaticStructure):
    """:func:`full` as a structure for :class:`graphattn.nn.GraphAttention`."""

    def __init__(self, *, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        return full(causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"causal={self.causal}"
