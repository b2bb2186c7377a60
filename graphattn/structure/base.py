"""The structure protocol: how a layer asks a builder for its edges.

A structure is an :class:`torch.nn.Module` called by :class:`graphattn.nn.GraphAttention` with the
layer's projected queries and keys, after the input projections and before the attention op:

.. code-block:: python

    out: StructureOutput = structure(q, k, ptr=ptr, src_ptr=src_ptr, graph=graph)

* ``q [N_dst, H, D]``, ``k [N_src, H, D]``: the projected queries and keys (a structure may read
  them, as learned ones do, or only their sizes, as fixed ones do);
* ``ptr [B + 1]`` / ``src_ptr [B + 1]``: example offsets of the destinations / sources (``None``: one
  example); no structure may link two examples;
* ``graph``: the input graph when the caller has one (graph data, or edges to keep and add to).

It returns a :class:`StructureOutput`: the :class:`~graphattn.Graph`, optional differentiable
per-edge ``bias`` and ``gate`` (``[E, H]``) that the layer passes to
:func:`graphattn.ops.edge_attention`, an optional scalar ``aux_loss`` that the layer reports, and
``per_head``: when true, the graph is over ``H·N`` folded nodes (node ``h·N + n``, see
:mod:`graphattn.structure.heads`) and ``bias``/``gate`` are ``[E, 1]``.

Indices are built under ``torch.no_grad``; gradients reach a structure's parameters only through
the ``bias``, ``gate`` and ``aux_loss`` tensors it returns.

Parameter-free builders are wrapped by :class:`StaticStructure` subclasses (``Window(8)``,
``BigBird(...)``, ...); their graph depends only on the example lengths, so each structure caches
the graph of the last batch layout (with its transpose) and rebuilds it only when the layout
changes. Layers holding copies of one structure (an encoder's) each cache their own; pass one
``graph`` to share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..graph import Graph, LastBuilt, check_ptr

__all__ = ["StructureOutput", "Structure", "StaticStructure", "resolve_ptr"]


class StructureOutput(NamedTuple):
    """What a structure returns (see the module docstring).

    Attributes:
        graph: the edges; over ``N`` nodes, or over ``H·N`` folded nodes if ``per_head``.
        bias: optional ``[E, H]`` (``[E, 1]`` if ``per_head``) added to the attention logits.
        gate: optional ``[E, H]`` (``[E, 1]`` if ``per_head``) multiplying the attention weights.
        aux_loss: optional scalar added by the training loop to the task loss.
        per_head: whether ``graph`` is a per-head (folded) graph.
        sources: optional ``(q, k, v) -> (k_src, v_src)`` giving the keys and values of the
            graph's sources when they are not just the layer's ``k``, ``v`` (Combiner appends
            summary nodes computed from them); ``None``: the sources are the layer's nodes.
    """

    graph: Graph
    bias: Tensor | None = None
    gate: Tensor | None = None
    aux_loss: Tensor | None = None
    per_head: bool = False
    sources: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


class Structure(nn.Module):
    """Base class of every structure (fixed or learned); subclasses implement :meth:`forward`."""

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        """Edges for queries ``q [N_dst, H, D]`` and keys ``k [N_src, H, D]``; see the module docstring."""
        raise NotImplementedError


def resolve_ptr(
    name: str, q: Tensor, k: Tensor, ptr: Tensor | None, src_ptr: Tensor | None, graph: Graph | None
) -> Tensor:
    """Example offsets ``ptr [B + 1]`` of a self-attention structure's input, checked.

    ``ptr`` defaults to ``graph.ptr``, then to one example of all ``N`` nodes; it may be on another
    device than ``q`` (it is moved). Raises when ``q`` and ``k`` have different node counts,
    ``src_ptr`` differs from ``ptr``, or ``ptr`` is not valid offsets of ``N`` nodes (a 1-D int64
    tensor, non-decreasing from 0 to ``N``; see :func:`~graphattn.graph.check_ptr`).
    """
    n = q.shape[0]
    if k.shape[0] != n:
        raise ValueError(
            f"{name} is a self-attention structure: it needs N_src == N_dst, got "
            f"q with {n} nodes and k with {k.shape[0]}; pass a bipartite graph to the layer instead"
        )
    if ptr is None and graph is not None:
        ptr = graph.ptr
    if ptr is None:
        ptr = torch.tensor([0, n], dtype=torch.long, device=q.device)
    else:
        ptr = check_ptr("ptr", ptr, n).to(q.device)
    if src_ptr is not None and not torch.equal(check_ptr("src_ptr", src_ptr, n).to(q.device), ptr):
        raise ValueError(f"{name} needs src_ptr == ptr (sources and destinations are the same nodes)")
    return ptr


class StaticStructure(Structure):
    """A parameter-free builder as a :class:`Structure`: the graph depends only on example lengths.

    Subclasses implement :meth:`build` (``lengths [B] -> Graph``). Self-attention only
    (``N_src == N_dst`` with the same example offsets). Deterministic builders are cached
    (``cacheable = True``): the graph of the last batch layout is reused.
    """

    cacheable: bool = True

    def __init__(self) -> None:
        super().__init__()
        self._cache = LastBuilt()  # the graph of the last batch layout

    def build(self, lengths: Tensor) -> Graph:
        raise NotImplementedError

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        ptr = resolve_ptr(type(self).__name__, q, k, ptr, src_ptr, graph)
        lengths = ptr[1:] - ptr[:-1]
        if not self.cacheable:
            with torch.no_grad():
                return StructureOutput(self.build(lengths))
        with torch.no_grad():
            return StructureOutput(self._cache.get((tuple(lengths.tolist()), q.device), lambda: self.build(lengths)))
