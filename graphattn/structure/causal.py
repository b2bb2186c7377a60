"""Causal filtering: the autoregressive mask of Vaswani et al., "Attention Is All You Need" (2017).

https://arxiv.org/abs/1706.03762 -- keep the edges ``j -> i`` with ``j <= i`` of any square graph
(node ids are positions; in a batch built by these builders an example's nodes are contiguous, so
``j <= i`` compares positions inside the example). Builders that support it also take
``causal=True`` directly, which avoids building the dropped half.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from ._segments import filter_edges, repeat_rows

__all__ = ["causal"]


def causal(graph: Graph, *, return_mask: bool = False) -> Graph | tuple[Graph, Tensor]:
    r"""The edges :math:`j \to i` of ``graph`` with :math:`j \le i`, in their order.

    Args:
        graph: a square graph (``num_src == num_dst``).
        return_mask: also return ``keep [E]`` (bool) to filter per-edge tensors: ``bias[keep]``.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a graphattn.Graph, got {type(graph).__name__}")
    if graph.num_src != graph.num_dst:
        raise ValueError(
            f"causal needs a square graph (positions compare across sources and destinations), got "
            f"num_src = {graph.num_src}, num_dst = {graph.num_dst}"
        )
    dst = repeat_rows(torch.arange(graph.num_dst, device=graph.device), graph.in_degree(), graph.num_edges)
    keep = graph.col <= dst
    out = filter_edges(graph, keep)
    return (out, keep) if return_mask else out
