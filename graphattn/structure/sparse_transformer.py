"""Strided and fixed patterns: Child et al., "Generating Long Sequences with Sparse Transformers" (2019).

https://arxiv.org/abs/1904.10509, §4.2. With stride ``l`` (``~ sqrt(L)`` in the paper):

* **strided**: ``A1 = {j : |i - j| < l}`` (local) and ``A2 = {j : (i - j) mod l = 0}`` (every l-th
  token), for data with a periodic structure (images, audio);
* **fixed**: ``A1 = {j : floor(j / l) = floor(i / l)}`` (own block) and
  ``A2 = {j : j mod l in {l - c, ..., l - 1}}`` (the last ``c`` "summary" tokens of every block), for
  text.

The paper is autoregressive (``causal=True``: additionally ``j <= i``); ``causal=False`` gives the
bidirectional version. The paper spreads ``A1`` and ``A2`` over different heads or merges them; the
builders here return the **merged** pattern ``A1 | A2`` (each edge once). For one part per head,
build the parts (``window`` is ``A1`` of strided, ``block_local`` is ``A1`` of fixed) and fold them
with :func:`graphattn.structure.fold_heads`.

In-degrees at position ``p``, example length ``L``, block ``b = p // l``, ``nb = ceil(L / l)`` blocks:

* strided, causal: ``min(p + 1, l) + p // l``; bidirectional:
  ``min(p, l - 1) + min(L - 1 - p, l - 1) + 1 + p // l + (L - 1 - p) // l``;
* fixed, causal: ``b·c + (p - b·l + 1)``; bidirectional: ``b·c + |own block| + c·max(nb - b - 2, 0) +
  [b < nb - 1]·max(L - nb·l + c, 0)`` (the last block may be partial).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import Part, assemble_rows, check_int, segments, trusted_graph
from .base import StaticStructure

__all__ = ["strided", "fixed", "Strided", "Fixed"]


def strided(
    n: int | None,
    stride: int,
    *,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""Sparse Transformer "strided": :math:`|i - j| < l` or :math:`(i - j) \bmod l = 0`.

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        stride: ``l >= 1``.
        causal: keep only :math:`j \le i` (the paper's setting).
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.

    Row order: the window, then the strided sources before it, then those after it (each ascending).
    """
    lw = check_int("stride", stride, minimum=1)
    seg = segments(n, lengths, batch)
    p, length = seg.pos, seg.length
    n_back = p // lw  # i - m·l for m = p // l .. 1 (the nearest, m = 1, is outside the window)
    lo = torch.clamp(p - (lw - 1), min=0)
    hi = p if causal else torch.minimum(p + (lw - 1), length - 1)
    parts = [
        Part(hi - lo + 1, seg.start + lo),  # the window
        Part(n_back, seg.start + p % lw, lw),  # strided sources before it
    ]
    if not causal:
        parts.append(Part((length - 1 - p) // lw, seg.start + p + lw, lw))  # strided sources after it
    # Rows between two changes of p // l (or of the window's clipping) are shifted copies: 2-D blocks.
    rowptr, col = assemble_rows(parts, shift=1)
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


def fixed(
    n: int | None,
    stride: int,
    c: int = 1,
    *,
    causal: bool = False,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""Sparse Transformer "fixed": own block of size ``l`` plus the last ``c`` tokens of every block.

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        stride: block size ``l >= 1``.
        c: summary tokens per block, ``1 <= c <= l``.
        causal: keep only :math:`j \le i` (the paper's setting).
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.

    Row order: own block, summaries of earlier blocks (grouped by offset inside the block), summaries
    of later blocks (grouped likewise).
    """
    lw = check_int("stride", stride, minimum=1)
    c = check_int("c", c, minimum=1)
    if c > lw:
        raise ValueError(f"c must be <= stride = {lw} (summary tokens per block), got {c}")
    seg = segments(n, lengths, batch)
    p, length = seg.pos, seg.length
    b = p // lw
    first = b * lw
    own = p - first + 1 if causal else torch.minimum(first + lw, length) - first
    parts = [Part(own, seg.start + first)]  # own block first
    for t in range(c):  # summary offset t of the earlier blocks: one arithmetic part each (a loop over c)
        parts.append(Part(b, seg.start + (lw - c + t), lw))
    if not causal:
        for t in range(c):  # later blocks whose summary t exists: b' <= (L - 1 - (l - c + t)) // l
            last_block = torch.div(length - 1 - (lw - c + t), lw, rounding_mode="floor")
            parts.append(Part(torch.clamp(last_block - b, min=0), seg.start + first + lw + (lw - c + t), lw))
    # Bidirectional: every row of a block has the same sources (one 2-D block per block of rows).
    rowptr, col = assemble_rows(parts, shift=None if causal else 0)
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class Strided(StaticStructure):
    """:func:`strided` as a structure."""

    def __init__(self, stride: int, *, causal: bool = False) -> None:
        super().__init__()
        self.stride = check_int("stride", stride, minimum=1)
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        return strided(None, self.stride, causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, causal={self.causal}"


class Fixed(StaticStructure):
    """:func:`fixed` as a structure."""

    def __init__(self, stride: int, c: int = 1, *, causal: bool = False) -> None:
        super().__init__()
        self.stride = check_int("stride", stride, minimum=1)
        self.c = check_int("c", c, minimum=1)
        if self.c > self.stride:
            raise ValueError(f"c must be <= stride = {self.stride}, got {self.c}")
        self.causal = causal

    def build(self, lengths: Tensor) -> Graph:
        return fixed(None, self.stride, self.c, causal=self.causal, lengths=lengths)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, c={self.c}, causal={self.causal}"
