"""BigBird: Zaheer et al., "Big Bird: Transformers for Longer Sequences" (NeurIPS 2020), §2.

https://arxiv.org/abs/2007.14062 -- the documented union, at token granularity:

.. math::
    \\text{bigbird}(w, g, r) = \\text{window}(w) \\cup \\text{global\\_tokens}(g) \\cup \\text{random}(r)

(sliding window ``|i - j| < w``, the first ``g`` tokens global, ``r`` random sources per token), each
edge once: the parts are made disjoint in closed form and assembled per row (``O(E)``, no sort;
row order: window, then global, then random sources). A random source that falls inside the
window or on a global token is dropped rather than redrawn, so a row has at most ``r`` extra
sources. The paper groups tokens into blocks of 64 for speed on accelerators and draws random
*blocks*; the graph kernels here need no blocks, so the union is over tokens (the paper's block
version with block size ``s`` is the token version with ``w ~ 1.5·s``, ``g = 2s``, ``r = 3s``
up to block alignment). The random part is redrawn at every call of :class:`BigBird` unless a seeded
generator is reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import Part, assemble_rows, check_int, segments, trusted_graph
from .base import StaticStructure
from .random import random

__all__ = ["bigbird", "BigBird"]


def bigbird(
    n: int | None,
    w: int = 3,
    g: int = 2,
    r: int = 3,
    *,
    generator: torch.Generator | None = None,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    """``window(w) | global_tokens(g) | random(r)`` inside each example (see the module docstring).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        w: window width ``>= 1`` (``|i - j| < w``).
        g: number of global tokens (first positions) ``>= 0``.
        r: random sources per token ``>= 0`` (distinct).
        generator: for the random part.
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.
    """
    check_int("w", w, minimum=1)
    check_int("g", g, minimum=0)
    check_int("r", r, minimum=0)
    seg = segments(n, lengths, batch)
    p, length = seg.pos, seg.length
    lo = torch.clamp(p - (w - 1), min=0)
    hi = torch.minimum(p + (w - 1), length - 1)
    is_g = p < g
    # The three parts made disjoint in closed form, then assembled row by row: O(E), no sort.
    rand = random(None, r, generator=generator, lengths=seg.lengths)
    ri, rj = seg.pos[rand.dst()], seg.pos[rand.col]
    keep = ((ri - rj).abs() >= w) & (ri >= g) & (rj >= g)  # not in the window, not a global edge
    rand_deg = torch.bincount(rand.dst()[keep], minlength=seg.num_nodes)
    rowptr, col = assemble_rows(
        [
            Part(hi - lo + 1, seg.start + lo),  # the window
            Part(torch.where(is_g, lo, torch.clamp(lo, max=g)), seg.start),  # globals (all, for a global row) before it
            Part(torch.where(is_g, length - 1 - hi, 0), seg.start + hi + 1),  # a global row: everything after it
            Part(rand_deg, col=rand.col[keep]),  # random sources elsewhere
        ]
    )
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class BigBird(StaticStructure):
    """:func:`bigbird` as a structure; the random part is redrawn at each call (not cached)."""

    cacheable = False

    def __init__(self, w: int = 3, g: int = 2, r: int = 3, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.w = check_int("w", w, minimum=1)
        self.g = check_int("g", g, minimum=0)
        self.r = check_int("r", r, minimum=0)
        self.generator = generator

    def build(self, lengths: Tensor) -> Graph:
        return bigbird(None, self.w, self.g, self.r, generator=self.generator, lengths=lengths)

    def extra_repr(self) -> str:
        return f"w={self.w}, g={self.g}, r={self.r}"
