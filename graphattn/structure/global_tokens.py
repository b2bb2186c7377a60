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
from ._segments import Part, assemble_rows, check_int, expand_rows, repeat_rows, segments, trusted_graph
from .base import StaticStructure

__all__ = ["global_tokens", "GlobalTokens"]

_MAX_RUNS = 8  # runs of consecutive global positions written arithmetically; more: one explicit part


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
    deg_g = torch.where(is_g, seg.length, 0)  # a global row takes every token in order
    deg = torch.where(is_g, 0, num_g)  # another row takes the globals in order
    # The global positions as maximal runs of consecutive positions (one run for an int g).
    brk = torch.ones(pos_g.numel(), dtype=torch.bool, device=seg.device)
    brk[1:] = pos_g[1:] != pos_g[:-1] + 1
    run_first = pos_g[brk]
    if run_first.numel() <= _MAX_RUNS:
        run_end = torch.cat([pos_g[:-1][brk[1:]] + 1, pos_g[-1:] + 1])  # exclusive ends
        parts = [Part(deg_g, seg.start)]
        for lo, hi in zip(run_first.tolist(), run_end.tolist(), strict=True):  # a loop over runs of globals
            parts.append(
                Part(torch.where(is_g, 0, torch.clamp(torch.clamp(seg.length, max=hi) - lo, min=0)), seg.start + lo)
            )
        # Consecutive rows of the same kind are the same row: 2-D blocks.
        rowptr, col = assemble_rows(parts, shift=0)
    else:  # scattered globals: the non-global rows' sources as one explicit part
        _, row, rank = expand_rows(deg)
        local = pos_g[rank] if rank.numel() > 0 else rank
        rowptr, col = assemble_rows(
            [Part(deg_g, seg.start), Part(deg, col=repeat_rows(seg.start, deg, row.numel()) + local)]
        )
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


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
