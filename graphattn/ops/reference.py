"""Pure-PyTorch reference implementation: the oracle every other backend is tested against.

Written for clarity, not speed: per-edge tensors are gathered with ``index_select``,
normalized with scatter max/sum and reduced with ``index_add``. Autograd provides
every gradient. It shares nothing with the native kernels except :class:`Graph`.

Inputs are assumed validated (see :mod:`graphattn.ops._checks`). Half-precision
inputs are computed in float32 and cast back; ``lse`` is returned in float32 then.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph

__all__ = ["sddmm", "edge_softmax", "spmm", "edge_attention", "attention_weights"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half types accumulate in float32, as the native kernels do.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def sddmm(a: Tensor, b: Tensor, graph: Graph) -> Tensor:
    """Per-edge dot products ``out[e, h] = <a[dst_e, h], b[src_e, h]>``: ``[E, H]``."""
    return (a.index_select(0, graph.dst()) * b.index_select(0, graph.col)).sum(-1)


def edge_softmax(scores: Tensor, graph: Graph) -> tuple[Tensor, Tensor]:
    """Softmax of ``scores [E, H]`` over the in-edges of each destination.

    Returns ``(p [E, H], lse [N_dst, H])``. A destination with no in-edges, or whose
    scores are all ``-inf``, gets ``lse = -inf`` and contributes no probabilities.
    """
    dst = graph.dst()
    n, h = graph.num_dst, scores.shape[1]
    row_max = torch.full((n, h), float("-inf"), dtype=scores.dtype, device=scores.device)
    row_max = row_max.scatter_reduce(0, dst[:, None].expand_as(scores), scores.detach(), "amax")
    # Rows whose max is -inf (empty, or all scores -inf) are shifted by 0 instead of -inf
    # so exp() sees -inf - 0 = -inf -> 0 rather than -inf - (-inf) = NaN.
    shift = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - shift.index_select(0, dst))
    denom = torch.zeros((n, h), dtype=scores.dtype, device=scores.device).index_add(0, dst, e)
    # Division by a zero denominator only happens on edges of rows with all -inf scores,
    # whose numerators are 0 too: divide by 1 there so p = 0, not NaN.
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    p = e / safe.index_select(0, dst)
    # A NaN denominator (a NaN or +inf score in the row) keeps its NaN lse, as logsumexp would.
    lse = torch.where(denom > 0, shift + torch.log(safe), torch.where(denom == 0, float("-inf"), denom))
    return p, lse


def spmm(weights: Tensor, v: Tensor, graph: Graph) -> Tensor:
    """Weighted sum of source features ``out[i, h] = sum_e weights[e, h] * v[src_e, h]``."""
    msg = weights.unsqueeze(-1) * v.index_select(0, graph.col)
    out = torch.zeros((graph.num_dst, *v.shape[1:]), dtype=msg.dtype, device=v.device)
    return out.index_add(0, graph.dst(), msg)


def _scores(
    q: Tensor, k: Tensor, graph: Graph, bias: Tensor | None, scale: float, edge_key: Tensor | None = None
) -> Tensor:
    """``s_e = scale * <q_i, k_j + edge_key_e> + bias_e`` (the edge terms only when given)."""
    dot = sddmm(q, k, graph)
    if edge_key is not None:
        dot = dot + (q.index_select(0, graph.dst()) * edge_key).sum(-1)
    s = dot * scale
    return s if bias is None else s + bias


def _messages(weights: Tensor, v: Tensor, graph: Graph, edge_value: Tensor | None) -> Tensor:
    """``out_i = sum_e weights_e * (v_j + edge_value_e)`` (``edge_value`` only when given)."""
    out = spmm(weights, v, graph)
    if edge_value is not None:
        out = out.index_add(0, graph.dst(), weights.unsqueeze(-1) * edge_value)
    return out


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    bias: Tensor | None,
    gate: Tensor | None,
    scale: float,
    edge_key: Tensor | None = None,
    edge_value: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(out [N_dst, H, Dv], lse [N_dst, H])``; see :func:`graphattn.ops.edge_attention`.

    With per-edge terms the key of edge ``e = (j -> i)`` is ``k_j + edge_key_e`` and its value
    ``v_j + edge_value_e``, computed as separate terms: ``scale * (<q_i, k_j> + <q_i, edge_key_e>)``
    and ``sum_e w_e v_j + sum_e w_e edge_value_e``.
    """
    out_dtype = q.dtype
    ct = _compute_dtype(out_dtype)
    q, k, v = q.to(ct), k.to(ct), v.to(ct)
    bias, edge_key, edge_value = (None if t is None else t.to(ct) for t in (bias, edge_key, edge_value))
    p, lse = edge_softmax(_scores(q, k, graph, bias, scale, edge_key), graph)
    if gate is not None:
        p = p * gate.to(ct)
    return _messages(p, v, graph, edge_value).to(out_dtype), lse


def attention_weights(
    q: Tensor,
    k: Tensor,
    graph: Graph,
    lse: Tensor,
    bias: Tensor | None,
    scale: float,
    edge_key: Tensor | None = None,
) -> Tensor:
    """``p [E, H] = exp(s_e - lse[dst_e])``: the softmax recomputed from a saved ``lse``, then
    renormalized per row. ``lse`` is rounded: by up to 32 at ``-1e9`` in float32 (a row masked out
    by a large negative bias), where ``exp(s - lse)`` alone is off by a factor up to ``e^32``; the
    factor is the same for every edge of the row, so dividing by the row's sum removes it."""
    ct = _compute_dtype(q.dtype)
    bias, edge_key = (None if t is None else t.to(ct) for t in (bias, edge_key))
    s = _scores(q.to(ct), k.to(ct), graph, bias, scale, edge_key)
    dst = graph.dst()
    lse_e = lse.to(ct).index_select(0, dst)
    empty = lse_e == float("-inf")
    # Rows with lse = -inf have only s = -inf edges: weight 0. Subtract 0 there rather
    # than -inf, so neither the value nor its gradient becomes NaN (a NaN lse stays NaN).
    w = torch.exp(s - torch.where(empty, torch.zeros_like(lse_e), lse_e))
    w = torch.where(empty, torch.zeros_like(w), w)
    total = w.new_zeros(graph.num_dst, w.shape[1]).index_add(0, dst, w)
    total = torch.where(total > 0, total, torch.ones_like(total))  # rows of weight 0 stay 0
    return (w / total.index_select(0, dst)).to(q.dtype)
