"""Input validation shared by every op and backend.

Each failure raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape,
device, size or range) naming the argument, what was expected and what came.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..graph import Graph

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: Tensor) -> str:
    return str(list(t.shape))


def check_graph(graph: object) -> Graph:
    if not isinstance(graph, Graph):
        raise TypeError(
            f"graph must be a graphattn.Graph, got {type(graph).__name__}; "
            "build one with Graph.from_edge_index(edge_index)"
        )
    return graph


def check_node_tensor(name: str, t: object, n: int, n_name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.dim() != 3:
        raise ValueError(f"{name} must be [{n_name}, H, D] (3-D), got shape {_shape(t)}")
    if t.shape[0] != n:
        raise ValueError(f"{name} must be [{n_name}={n}, H, D] for this graph, got shape {_shape(t)}")
    return t


def _check_like_q(name: str, t: object, like: Tensor, like_name: str = "q") -> Tensor:
    """``t`` is a tensor with the dtype and device of ``like`` (called ``like_name``: q)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name} must have the dtype of {like_name} ({like.dtype}), got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} must be on the device of {like_name} ({like.device}), got {t.device}")
    return t


def check_edge_tensor(name: str, t: object, graph: Graph, heads: int, like: Tensor, like_name: str = "q") -> Tensor:
    t = _check_like_q(name, t, like, like_name)
    if t.shape != (graph.num_edges, heads):
        raise ValueError(f"{name} must be [E, H] = [{graph.num_edges}, {heads}], got shape {_shape(t)}")
    return t


def check_edge_features(
    name: str, t: object, graph: Graph, heads: int, dim: int, dim_name: str, like: Tensor
) -> Tensor:
    """A per-edge feature tensor ``[E, H, dim]`` in edge-id order, with the dtype and device of ``like``."""
    t = _check_like_q(name, t, like)
    if t.shape != (graph.num_edges, heads, dim):
        raise ValueError(
            f"{name} must be [E, H, {dim_name}] = [{graph.num_edges}, {heads}, {dim}] (one row per edge, in the "
            f"order of graph.col), got shape {_shape(t)}"
        )
    return t


def check_scale(scale: object, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim) if head_dim > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a Python float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_same_device(graph: Graph, **tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    names = list(devices)
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        together = " and ".join([", ".join(names[:-1]), names[-1]])
        raise ValueError(f"{together} must be on one device, got {listed}")
    device = devices[names[0]]
    if graph.device != device:
        raise ValueError(
            f"graph must be on the device of {names[0]} ({device}), got {graph.device}; use graph.to({names[0]}.device)"
        )


def check_qk(q: object, k: object, graph: Graph, names: tuple[str, str] = ("q", "k")) -> tuple[Tensor, Tensor]:
    """Validate ``q [N_dst, H, D]`` and ``k [N_src, H, D]`` against ``graph`` (called ``names`` in errors)."""
    qn, kn = names
    check_graph(graph)
    q = check_node_tensor(qn, q, graph.num_dst, "N_dst")
    k = check_node_tensor(kn, k, graph.num_src, "N_src")
    check_same_device(graph, **{qn: q, kn: k})
    if k.dtype != q.dtype:
        raise TypeError(f"{kn} must have the dtype of {qn} ({q.dtype}), got {k.dtype}")
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"{qn} and {kn} must have the same number of heads, got {qn} {_shape(q)} and {kn} {_shape(k)}")
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"{qn} and {kn} must have the same head dim D, got {qn} {_shape(q)} and {kn} {_shape(k)}")
    return q, k


def check_attention_inputs(
    q: object,
    k: object,
    v: object,
    graph: object,
    bias: object,
    gate: object,
    scale: object,
    edge_key: object = None,
    edge_value: object = None,
) -> tuple[Tensor, Tensor, Tensor, Graph, Tensor | None, Tensor | None, float, Tensor | None, Tensor | None]:
    """Validate the arguments of :func:`graphattn.ops.edge_attention`; returns them typed."""
    q, k = check_qk(q, k, graph)
    assert isinstance(graph, Graph)  # checked by check_qk
    v = check_node_tensor("v", v, graph.num_src, "N_src")
    check_same_device(graph, q=q, k=k, v=v)
    if v.dtype != q.dtype:
        raise TypeError(f"v must have the dtype of q ({q.dtype}), got {v.dtype}")
    if v.shape[1] != q.shape[1]:
        raise ValueError(f"v must have the heads of q ({q.shape[1]}), got v {_shape(v)}")
    heads = q.shape[1]
    if bias is not None:
        bias = check_edge_tensor("bias", bias, graph, heads, q)
    if gate is not None:
        gate = check_edge_tensor("gate", gate, graph, heads, q)
    if edge_key is not None:
        edge_key = check_edge_features("edge_key", edge_key, graph, heads, q.shape[2], "D", q)
    if edge_value is not None:
        edge_value = check_edge_features("edge_value", edge_value, graph, heads, v.shape[2], "Dv", q)
    return q, k, v, graph, bias, gate, check_scale(scale, q.shape[2]), edge_key, edge_value
