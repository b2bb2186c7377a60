"""Block-local attention: Qiu et al., "Blockwise Self-Attention for Long Document Understanding" (2019).

https://arxiv.org/abs/1911.02972 -- the sequence is cut into blocks of ``block_size`` tokens and
each token attends to every token of its own block (``causal``: the ones up to itself). Also the
``A1`` part of the Sparse Transformer "fixed" pattern and BigBird's block granularity. Blocks start
at each example's first token; the last block of an example may be shorter.

In-degree at position ``p`` with ``b = p // s``: ``min((b + 1)·s, L) - b·s`` (causal: ``p - b·s + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import check_int, contiguous_rows, segments, trusted_graph
from .base import StaticStructure

__all__ = ["block_local", "BlockLocal"]


def block_local(
    n: int | None,
    block_size: int,
    *,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""Edges :math:`j \to i` with :math:`\lfloor j / s \rfloor = \lfloor i / s \rfloor` (causal: and :math:`j \le i`).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        block_size: ``s >= 1``.
        causal: keep only :math:`j \le i`.
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.
    """
    s = check_int("block_size", block_size, minimum=1)
    seg = segments(n, lengths, batch)
    first = (seg.pos // s) * s
    last = seg.pos if causal else torch.minimum(first + s, seg.length) - 1
    # non-causal: every row of a block has the same sources (written as one 2-D block)
    rowptr, col = contiguous_rows(last - first + 1, seg.start + first, shift=None if causal else 0)
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class BlockLocal(StaticStructure):
    """:func:`block_local` as a structure."""

    def __init__(self, block_size: int, *, causal: bool = False) -> None:
        super().__init__()
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        return block_local(None, self.block_size, causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, causal={self.causal}"
