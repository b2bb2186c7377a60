"""Test helpers: the adversarial graph set and a per-row oracle written as the spec.

Every backend, builder and layer test draws its graphs from :func:`adversarial_graphs`,
so a new backend is checked on the same hard cases as the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .graph import Graph

__all__ = ["GraphCase", "adversarial_graphs", "custom_op_args", "loop_attention", "random_inputs"]


@dataclass(frozen=True)
class GraphCase:
    """A named graph for parametrized tests (``ids=`` uses ``name``)."""

    name: str
    graph: Graph

    def __repr__(self) -> str:  # pytest ids
        return self.name


def _csr(rows: list[list[int]], num_src: int) -> Graph:
    rowptr = torch.tensor([0] + [len(r) for r in rows], dtype=torch.long).cumsum(0)
    col = torch.tensor([j for r in rows for j in r], dtype=torch.long)
    return Graph(rowptr, col, num_src)


def adversarial_graphs(seed: int = 0, hub_degree: int = 10_000) -> list[GraphCase]:
    """The hard cases every fused path must match the reference on.

    Covers: no edges at all, no nodes, every row empty, empty rows in the middle, self
    loops, duplicate edges, one hub with ``hub_degree`` in-edges beside degree-1 rows,
    bipartite with ``N_src > N_dst`` and ``N_src < N_dst``, and a random graph.
    """
    gen = torch.Generator().manual_seed(seed)

    def randint(hi: int, n: int) -> list[int]:
        return torch.randint(0, hi, (n,), generator=gen).tolist()

    cases = [
        GraphCase("no_edges", _csr([[], [], []], 3)),
        GraphCase("no_nodes", _csr([], 0)),
        GraphCase("empty_rows_in_middle", _csr([[0, 1], [], [], [2, 0, 1], []], 3)),
        GraphCase("self_loops_only", _csr([[i] for i in range(6)], 6)),
        GraphCase("duplicate_edges", _csr([[1, 1, 1], [0, 0], [2, 1, 2, 1]], 3)),
        GraphCase("hub_beside_degree_one", _csr([randint(40, hub_degree)] + [[i % 40] for i in range(39)], 40)),
        GraphCase("bipartite_more_src", _csr([randint(11, 4), randint(11, 1), [], randint(11, 7)], 11)),
        GraphCase("bipartite_more_dst", _csr([randint(3, int(d)) for d in randint(4, 9)], 3)),
        GraphCase("random", _csr([randint(17, int(d)) for d in randint(8, 23)], 17)),
    ]
    return cases


def random_inputs(
    graph: Graph,
    heads: int = 2,
    head_dim: int = 5,
    value_dim: int | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    requires_grad: bool = False,
) -> dict[str, Tensor]:
    """Random ``q, k, v, bias, gate`` for ``graph``, as keyword arguments of the op."""
    gen = torch.Generator().manual_seed(seed)
    value_dim = head_dim if value_dim is None else value_dim

    def rnd(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)

    e = graph.num_edges
    return {
        "q": rnd(graph.num_dst, heads, head_dim),
        "k": rnd(graph.num_src, heads, head_dim),
        "v": rnd(graph.num_src, heads, value_dim),
        "bias": rnd(e, heads),
        "gate": (torch.rand(e, heads, generator=gen, dtype=torch.float64) + 0.5)
        .to(dtype)
        .requires_grad_(requires_grad),
    }


def custom_op_args(graph: Graph, inputs: dict[str, Tensor | None], scale: float) -> tuple:
    """The positional arguments of ``torch.ops.graphattn.edge_attention_fwd`` (for ``opcheck``).

    ``inputs`` as from :func:`random_inputs`; ``bias``, ``gate``, ``edge_key`` and
    ``edge_value`` are ``None`` when absent or ``None``.
    """
    colptr, row, perm = graph.transpose
    terms = (inputs.get(name) for name in ("bias", "gate", "edge_key", "edge_value"))
    return (inputs["q"], inputs["k"], inputs["v"], graph.rowptr, graph.col, colptr, row, perm, *terms, scale)


def loop_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    *,
    bias: Tensor | None = None,
    gate: Tensor | None = None,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The op's definition, one destination and one head at a time, in float64.

    Slow and obviously correct: the specification the reference is tested against.
    Returns ``(out, lse)``.
    """
    q, k, v = q.double(), k.double(), v.double()
    n_dst, heads, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.zeros(n_dst, heads, v.shape[2], dtype=torch.float64)
    lse = torch.full((n_dst, heads), float("-inf"), dtype=torch.float64)
    rowptr = graph.rowptr.tolist()
    for i in range(n_dst):
        lo, hi = rowptr[i], rowptr[i + 1]
        if lo == hi:
            continue  # empty row: out = 0, lse = -inf
        src = graph.col[lo:hi]
        for h in range(heads):
            s = scale * (k[src, h] @ q[i, h])
            if bias is not None:
                s = s + bias[lo:hi, h].double()
            lse[i, h] = torch.logsumexp(s, 0)
            if lse[i, h] == float("-inf"):
                continue  # every score -inf: treated as an empty row
            p = torch.softmax(s, 0)
            if gate is not None:
                p = p * gate[lo:hi, h].double()
            out[i, h] = p @ v[src, h]
    return out, lse
