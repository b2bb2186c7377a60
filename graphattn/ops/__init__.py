r"""Attention as one op over a destination-sorted edge list.

For destination :math:`i` with in-edges :math:`e = (j \to i)`:

.. math::
    s_e = \text{scale} \cdot \langle q_i, k_j + \kappa_e \rangle + \text{bias}_e, \qquad
    p_e = \frac{\exp(s_e)}{\sum_{e' \to i} \exp(s_{e'})}, \qquad
    \text{out}_i = \sum_{e \to i} \text{gate}_e \, p_e \, (v_j + \nu_e),

per head, with :math:`\text{lse}_i = \log \sum_{e \to i} \exp(s_e)` and the optional per-edge
key and value terms :math:`\kappa_e` (``edge_key``) and :math:`\nu_e` (``edge_value``), zero when
absent. A destination
with no in-edges gets ``out = 0`` and ``lse = -inf`` (never NaN); duplicate edges
count separately; sources and destinations may differ (bipartite).

The building blocks :func:`sddmm`, :func:`edge_softmax` and :func:`spmm` compose to the
same result with per-edge intermediates (DGL's recipe); :func:`edge_attention` runs it
as one op on the fastest available backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from . import reference
from ._checks import (
    check_attention_inputs,
    check_edge_features,
    check_edge_tensor,
    check_graph,
    check_node_tensor,
    check_qk,
    check_scale,
)
from .dispatch import Backend, backends, get_backend, register_backend, select_backend

__all__ = [
    "edge_attention",
    "sddmm",
    "edge_softmax",
    "spmm",
    "attention_weights",
    "Backend",
    "backends",
    "get_backend",
    "register_backend",
]


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    *,
    bias: Tensor | None = None,
    gate: Tensor | None = None,
    edge_key: Tensor | None = None,
    edge_value: Tensor | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Multi-head attention of each destination over its in-edges.

    .. math::
        \text{out}_i = \sum_{e = (j \to i)} \text{gate}_e \,
        \operatorname{softmax}_{e \to i}\!\big(\text{scale}\,\langle q_i, k_j + \kappa_e\rangle
        + \text{bias}_e\big)\, (v_j + \nu_e)

    with :math:`\kappa_e` = ``edge_key[e]`` and :math:`\nu_e` = ``edge_value[e]`` (zero when not given).
    Edge features of a graph transformer (``TransformerConv``: key :math:`k_j + e_{ij}`, value
    :math:`v_j + e_{ij}`) enter this way without gathering ``k[col]`` / ``v[col]``: the backward
    gives :math:`\partial/\partial\kappa_e = \text{scale}\, ds_e\, q_i` and
    :math:`\partial/\partial\nu_e = \text{gate}_e\, p_e\, dO_i`, with :math:`ds_e` the gradient of
    the score :math:`s_e`.

    Args:
        q: queries ``[N_dst, H, D]``.
        k: keys ``[N_src, H, D]``.
        v: values ``[N_src, H, Dv]``.
        graph: the edges (:class:`graphattn.Graph`), on the device of ``q``.
        bias: optional ``[E, H]`` added to the logits (edge-id order, as in ``graph.col``).
        gate: optional ``[E, H]`` multiplying the normalized weights (not renormalized).
        edge_key: optional ``[E, H, D]`` added to the key of each edge (edge-id order).
        edge_value: optional ``[E, H, Dv]`` added to the value of each edge (edge-id order); may be
            the same tensor as ``edge_key`` (then ``D == Dv``), its gradient is the sum of both.
        scale: logit scale; default ``D ** -0.5``.
        return_lse: also return ``lse [N_dst, H]`` (float32 for half inputs).
        backend: ``None`` picks the first backend that supports the inputs; a name
            (see :func:`backends`) forces one and raises if it cannot run them.

    Returns:
        ``out [N_dst, H, Dv]`` in the dtype of ``q``, or ``(out, lse)``.
    """
    q, k, v, graph, bias, gate, scale, edge_key, edge_value = check_attention_inputs(
        q, k, v, graph, bias, gate, scale, edge_key, edge_value
    )
    impl = select_backend(backend, q, v)
    out, lse = impl.forward(q, k, v, graph, bias, gate, scale, edge_key, edge_value)
    return (out, lse) if return_lse else out


def sddmm(a: Tensor, b: Tensor, graph: Graph) -> Tensor:
    """Per-edge dot products ``[E, H]``: ``out[e] = <a[dst_e], b[src_e]>`` (no scale).

    Args:
        a: ``[N_dst, H, D]``.
        b: ``[N_src, H, D]``.
        graph: the edges.
    """
    a, b = check_qk(a, b, graph, names=("a", "b"))
    return reference.sddmm(a, b, graph)


def edge_softmax(scores: Tensor, graph: Graph, *, return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax of ``scores [E, H]`` over each destination's in-edges.

    Rows with no edges (or only ``-inf`` scores) get ``lse = -inf`` and no weight.
    """
    graph = check_graph(graph)
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError(
            f"scores must be a floating torch.Tensor, got {getattr(scores, 'dtype', type(scores).__name__)}"
        )
    if scores.dim() != 2 or scores.shape[0] != graph.num_edges:
        raise ValueError(f"scores must be [E, H] with E = {graph.num_edges}, got shape {list(scores.shape)}")
    if scores.device != graph.device:
        raise ValueError(f"scores must be on the graph's device ({graph.device}), got {scores.device}")
    p, lse = reference.edge_softmax(scores, graph)
    return (p, lse) if return_lse else p


def spmm(weights: Tensor, v: Tensor, graph: Graph) -> Tensor:
    """Weighted sum over in-edges: ``out[i] = sum_e weights[e] * v[src_e]``, ``[N_dst, H, Dv]``."""
    graph = check_graph(graph)
    v = check_node_tensor("v", v, graph.num_src, "N_src")
    if v.device != graph.device:
        raise ValueError(f"v must be on the graph's device ({graph.device}), got {v.device}")
    weights = check_edge_tensor("weights", weights, graph, v.shape[1], v, "v")
    return reference.spmm(weights, v, graph)


def attention_weights(
    q: Tensor,
    k: Tensor,
    graph: Graph,
    lse: Tensor,
    *,
    bias: Tensor | None = None,
    edge_key: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Per-edge softmax weights ``[E, H]`` recomputed from the ``lse`` of a forward pass.

    ``p_e = exp(s_e - lse_i)``: the attention weights are never stored, only recomputed
    on demand (pass ``return_lse=True`` to :func:`edge_attention` to get ``lse``). Pass the
    ``bias`` and ``edge_key`` of that forward. The gate is not applied: multiply by it to get
    the effective weights.
    """
    q, k = check_qk(q, k, graph)
    if not isinstance(lse, Tensor) or lse.shape != (graph.num_dst, q.shape[1]):
        got = list(lse.shape) if isinstance(lse, Tensor) else type(lse).__name__
        raise ValueError(f"lse must be [N_dst, H] = [{graph.num_dst}, {q.shape[1]}], got {got}")
    if lse.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"lse must be float32 or float64 (edge_attention returns one of them), got {lse.dtype}")
    if bias is not None:
        bias = check_edge_tensor("bias", bias, graph, q.shape[1], q)
    if edge_key is not None:
        edge_key = check_edge_features("edge_key", edge_key, graph, q.shape[1], q.shape[2], "D", q)
    return reference.attention_weights(q, k, graph, lse, bias, check_scale(scale, q.shape[2]), edge_key)


from . import native  # noqa: E402,F401  registers the native backend
