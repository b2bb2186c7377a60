"""Edge features as sources, shared by the PyG and DGL adapters (no framework import here)."""

from __future__ import annotations

import weakref

import torch

from ..graph import Graph

_EDGE_SOURCES: weakref.WeakKeyDictionary[Graph, Graph] = weakref.WeakKeyDictionary()


@torch.compiler.disable
def edge_source_graph(graph: Graph) -> Graph:
    """The same destinations with edge ``e`` as its own source ``e``: ``col = arange(E)``, ``num_src = E``.

    Attention over it with per-edge keys / values ``[E, H, C]`` is attention over ``graph`` with
    edge-dependent keys and values. Cached per ``graph`` (weakly), so the layers of a model share it.
    """
    cached = _EDGE_SOURCES.get(graph)
    if cached is None:
        cols = torch.arange(graph.num_edges, device=graph.device)
        cached = _EDGE_SOURCES[graph] = Graph(graph.rowptr, cols, graph.num_edges)
    return cached
