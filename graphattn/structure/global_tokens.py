"""Global tokens: Beltagy et al., "Longformer" (2020) §3.1, Zaheer et al., "BigBird" (2020) §2 (ITC).

https://arxiv.org/abs/2004.05150 -- a few tokens of each example are *global*: they attend to every
token of their example and every token attends to them (BigBird's "internal transformer
construction"; the tokens are part of the input, e.g. ``[CLS]``). ``g`` is either an int (the first
``g`` positions of every example) or a 1-D tensor of positions (those ``>= L`` are ignored in an
example of length ``L``).

Alone this graph gives ordinary tokens edges to the globals only (not to themselves): combine it
with a local pattern (:func:`~graphattn.structure.union`), as :func:`~graphattn.structure.bigbird`
and :func:`~graphattn.structure.longformer` do. In-degree: ``L`` for a global token, ``G(L)`` (the
number of global positions ``< L``) for the others. Extra *virtual* global nodes (BigBird-ETC) are a
bipartite graph over ``[tokens; globals]``; build those with :class:`~graphattn.Graph` directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import check_int, expand_rows, repeat_rows, segments
from .base import StaticStructure

__all__ = ["global_tokens", "GlobalTokens"]


def _positions(g: int | Tensor | Sequence[int], device: torch.device) -> Tensor:
    if not isinstance(g, Tensor | Sequence) or (isinstance(g, Tensor) and g.dim() == 0):
        return torch.arange(check_int("g", g, minimum=0), device=device)
    pos = g if isinstance(g, Tensor) else torch.tensor(list(g), dtype=torch.long)
    if pos.is_floating_point() or pos.dtype == torch.bool:
        raise TypeError(f"g must be an int or integer positions, got dtype {pos.dtype}")
    pos = pos.long().to(device)
    if pos.numel() > 0 and int(pos.min()) < 0:
        raise ValueError(f"g positions must be >= 0, got min {int(pos.min())}")
    return torch.unique(pos)  # sorted, each once


def global_tokens(
    n: int | None,
    g: int | Tensor | Sequence[int],
    *,
    lengths: Tensor | Sequence[int] | None = None,
    batch: Tensor | None = None,
) -> Graph:
    r"""Global tokens ``G``: edges :math:`j \to i` when :math:`i \in G` or :math:`j \in G` (same example).

    Args:
        n: number of nodes (one example), or ``None`` with ``lengths``/``batch``.
        g: number of global tokens (the first ``g`` positions) or their positions.
        lengths: ``[B]`` example lengths.
        batch: ``[N]`` example of each node.
    """
    seg = segments(n, lengths, batch)
    pos_g = _positions(g, seg.device)
    num_g = torch.searchsorted(pos_g, seg.length)  # globals inside each node's example
    is_g = torch.isin(seg.pos, pos_g)
    deg = torch.where(is_g, seg.length, num_g)
    rowptr, row, rank = expand_rows(deg)
    # A global row takes every token in order; another row takes the globals in order.
    table = pos_g if pos_g.numel() > 0 else torch.zeros(1, dtype=torch.long, device=seg.device)
    local = torch.where(is_g[row], rank, table[torch.clamp(rank, max=table.numel() - 1)])
    return Graph(rowptr, repeat_rows(seg.start, deg, row.numel()) + local, seg.num_nodes, ptr=seg.ptr)


class GlobalTokens(StaticStructure):
    """:func:`global_tokens` as a structure."""

    def __init__(self, g: int | Sequence[int]) -> None:
        super().__init__()
        self.g = g if isinstance(g, int) else tuple(g)
        _positions(self.g if isinstance(self.g, int) else list(self.g), torch.device("cpu"))

    def build(self, lengths: Tensor) -> Graph:
        return global_tokens(None, self.g if isinstance(self.g, int) else list(self.g), lengths=lengths)

    def extra_repr(self) -> str:
        return f"g={self.g}"
