"""Pieces shared by the input-dependent structures (routing, SBM, SAC): argument checks and
assembling a (possibly per-head, folded) graph from unsorted edge lists."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._keys import sort_keys_, unique_sorted
from ..graph import Graph
from ._segments import graph_from_rows
from .base import resolve_ptr


class _StraightThroughOnes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: Tensor) -> Tensor:
        return torch.ones_like(p)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.clamp(-1.0, 1.0)


def straight_through_ones(p: Tensor) -> Tensor:
    """Exactly 1 in the forward pass; the backward pass hands the gradient, clipped to [-1, 1], to ``p``.

    The gate of a sampled edge (SBM-Transformer, Section 3.3): the sampled graph is discrete, and
    the gradient a gate receives is treated as the gradient of the edge's probability ``p``.
    """
    return _StraightThroughOnes.apply(p)


def _csr(ptr: Tensor, idx: Tensor, values: Tensor, num_cols: int) -> Tensor:
    """A sparse CSR tensor ``[len(ptr) - 1, num_cols]`` over our (already valid) CSR arrays."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products we use are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            ptr, idx, values, (ptr.numel() - 1, num_cols), dtype=values.dtype, check_invariants=False
        )


def _csr_matmul(ptr: Tensor, idx: Tensor, values: Tensor, dense: Tensor, num_cols: int) -> Tensor:
    """``out[r] = sum_{e in row r} values[e] * dense[idx[e]]``: a sparse (CSR) times dense product,
    without forming the ``[E, k]`` rows it sums."""
    return _csr(ptr, idx, values, num_cols) @ dense


def _sparse_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype the sparse products run in: float32, or float64 when an input is float64."""
    dt = torch.float32
    for t in tensors:
        dt = torch.promote_types(dt, t.dtype)
    return dt


def _edge_dot_grads(
    a: Tensor, b: Tensor, graph: Graph, w: Tensor, need_a: bool, need_b: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``sum_e w_e <a[dst_e], b[src_e]>``: ``grad_a = A_w b`` and ``grad_b = A_w^T a``
    (``A_w`` the adjacency weighted by ``w``, its transpose from ``graph.transpose``), two
    sparse-times-dense products in float32 or wider, with no ``[E, k]`` rows formed."""
    dt = _sparse_dtype(a, b)
    w = w.to(dt)
    ga = gb = None
    if need_a:
        ga = _csr_matmul(graph.rowptr, graph.col, w, b.to(dt), graph.num_src).to(a.dtype)
    if need_b:
        colptr, row, perm = graph.transpose
        gb = _csr_matmul(colptr, row, w[perm], a.to(dt), graph.num_dst).to(b.dtype)
    return ga, gb


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, graph: Graph) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.graph = graph
        dt = _sparse_dtype(a, b)
        pattern = _csr(graph.rowptr, graph.col, a.new_zeros(graph.num_edges, dtype=dt), graph.num_src)
        dots = torch.sparse.sampled_addmm(pattern, a.to(dt), b.to(dt).T, beta=0.0)
        return dots.values().to(torch.promote_types(a.dtype, b.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, b = ctx.saved_tensors
        ga, gb = _edge_dot_grads(a, b, ctx.graph, grad, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return ga, gb, None


def edge_dot(a: Tensor, b: Tensor, graph: Graph) -> Tensor:
    """``[E]`` per-edge dot products ``<a[dst_e], b[src_e]>`` (edge order of ``graph``), differentiable.

    ``a [N_dst, k]`` and ``b [N_src, k]``. A sampled dense-dense product (SDDMM,
    ``torch.sparse.sampled_addmm`` over the graph's CSR) forward and two sparse-times-dense
    products backward (see :func:`straight_through_edge_gate`), in float32 or wider: the
    ``[E, k]`` gathers ``a[dst]``, ``b[src]`` are never formed.
    """
    return _EdgeDot.apply(a, b, graph)


class _StraightThroughEdgeGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, graph: Graph) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.graph = graph
        return a.new_ones(graph.num_edges)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[:2]
        ga, gb = _edge_dot_grads(a, b, ctx.graph, grad.clamp(-1.0, 1.0), need_a, need_b)
        return ga, gb, None


def straight_through_edge_gate(a: Tensor, b: Tensor, graph: Graph) -> Tensor:
    """``straight_through_ones(p)`` with ``p_e = <a[dst_e], b[src_e]>``, without forming ``p``.

    ``a [N_dst, k]`` and ``b [N_src, k]``; returns ``[E]`` ones (edge order of ``graph``). The
    forward value does not depend on ``p``, so it is never computed; the backward hands the
    clipped gate gradient ``w`` to ``a`` and ``b`` as two sparse-times-dense products,
    ``grad_a = A_w b`` and ``grad_b = A_w^T a`` (``A_w`` the graph's adjacency weighted by ``w``,
    its transpose from ``graph.transpose``), accumulated in float32 or wider, so no ``[E, k]``
    tensor is formed either way.
    """
    return _StraightThroughEdgeGate.apply(a, b, graph)


def self_attention_ptr(
    name: str,
    q: Tensor,
    k: Tensor,
    ptr: Tensor | None,
    src_ptr: Tensor | None,
    graph: Graph | None,
    num_heads: int,
    head_dim: int,
) -> Tensor:
    """Check ``q``/``k`` (one shape, the structure's heads and head dim) and return ``ptr`` (:func:`resolve_ptr`)."""
    _, h, d = q.shape
    if k.shape != q.shape:
        raise ValueError(
            f"{name} is self-attention: q and k must have one shape, got {list(q.shape)} and {list(k.shape)}"
        )
    if (h, d) != (num_heads, head_dim):
        raise ValueError(f"q must be [N, H={num_heads}, D={head_dim}] for this {name}, got {list(q.shape)}")
    return resolve_ptr(name, q, k, ptr, src_ptr, graph)


def graph_from_edges(
    dst: Tensor, src: Tensor, num_nodes: int, ptr: Tensor, *, num_heads: int = 1, dedup: bool = True
) -> Graph:
    """A graph over ``num_heads · num_nodes`` (folded) nodes from unsorted ``dst``/``src`` ids.

    Edges are sorted by destination, then source; ``dedup`` keeps each pair once. The result's
    ``ptr`` lists every (head, example) block, as :func:`~graphattn.structure.fold_heads` does.
    """
    total = num_heads * num_nodes
    keys = dst * max(total, 1) + src
    keys = sort_keys_(keys)  # random order: the vectorized quicksort (graphattn._keys)
    if dedup:
        keys = unique_sorted(keys)
    folded_ptr = torch.cat([ptr[:1]] + [ptr[1:] + i * num_nodes for i in range(num_heads)])
    return graph_from_rows(keys // max(total, 1), keys % max(total, 1), total, total, ptr=folded_ptr)
