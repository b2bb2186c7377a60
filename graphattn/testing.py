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
from .ops import edge_attention

__all__ = [
    "OP_INPUTS",
    "GraphCase",
    "TOLERANCES",
    "adversarial_graphs",
    "assert_same_run",
    "custom_op_args",
    "loop_attention",
    "random_edge_terms",
    "random_inputs",
    "run_with_grads",
    "source_hub_graph",
    "window_graph",
]

#: ``assert_close`` tolerances of a fused path against the reference: float32 sums of up to
#: 10,000 terms (the hub) in another order than the reference's; float64 near rounding.
TOLERANCES = {
    torch.float32: {"atol": 1e-4, "rtol": 5e-4},
    torch.float64: {"atol": 1e-10, "rtol": 1e-9},
}


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
    bipartite with ``N_src > N_dst`` and ``N_src < N_dst``, a sequence window (neighbouring
    sources share most destinations) with and without dropped and doubled edges, and a random
    graph.
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
        GraphCase("window", window_graph(40, 9)),
        GraphCase("window_gaps_duplicates", _window_gaps_duplicates(40, 9)),
        GraphCase("random", _csr([randint(17, int(d)) for d in randint(8, 23)], 17)),
    ]
    return cases


def _window_gaps_duplicates(n: int, k: int) -> Graph:
    """``window_graph(n, k)`` with every 5th edge dropped and every 7th doubled: neighbouring sources
    whose destination lists almost match (the source pass's groups see holes and repeats)."""
    edge_index = window_graph(n, k).to_edge_index()
    e = torch.arange(edge_index.shape[1])
    kept = edge_index[:, e % 5 != 0]
    doubled = edge_index[:, e % 7 == 0]
    return Graph.from_edge_index(torch.cat([kept, doubled], 1), n)


def source_hub_graph(n: int = 5000) -> Graph:
    """``n`` destinations attending to source 0 (plus one of sources 1..7): a source row of ``n`` edges.

    The transpose's hub: the backward's source pass sees one row longer than any work segment.
    """
    src = torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(n) % 7 + 1], 1).reshape(-1)
    dst = torch.arange(n).repeat_interleave(2)
    return Graph.from_edge_index(torch.stack([src, dst]), num_src=8, num_dst=n)


def window_graph(n: int, k: int) -> Graph:
    """Each of ``n`` nodes attends to ``k`` consecutive nodes around it (shifted inward at the ends)."""
    start = (torch.arange(n) - k // 2).clamp(0, max(n - k, 0))
    src = (start[:, None] + torch.arange(k)).reshape(-1)
    return Graph.from_edge_index(torch.stack([src, torch.arange(n).repeat_interleave(k)]), n)


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


def random_edge_terms(
    graph: Graph,
    heads: int,
    head_dim: int,
    value_dim: int,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 7,
    requires_grad: bool = False,
) -> dict[str, Tensor]:
    """Random per-edge ``edge_key [E, H, D]`` and ``edge_value [E, H, Dv]`` for ``graph``."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)

    return {"edge_key": rnd(graph.num_edges, heads, head_dim), "edge_value": rnd(graph.num_edges, heads, value_dim)}


#: The op's tensor inputs by name, in ``edge_attention``'s order.
OP_INPUTS = ("q", "k", "v", "bias", "gate", "edge_key", "edge_value")


def run_with_grads(
    backend: str | None, graph: Graph, inputs: dict[str, Tensor | None], *, seed: int = 1, wrt: dict | None = None
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``out``, ``lse`` and the gradients of a random linear loss of both, for one backend.

    ``inputs`` are the op's tensors by name (``None`` entries are left out); gradients are taken
    w.r.t. every tensor of ``wrt`` (default ``inputs``) that requires grad. The loss weights come
    from ``seed`` on the CPU, so two backends or devices see the same loss; rows with
    ``lse = -inf`` (empty) are left out of the ``lse`` term.
    """
    given = {n: t for n, t in inputs.items() if t is not None}
    out, lse = edge_attention(graph=graph, return_lse=True, backend=backend, **given)
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
    w_lse = torch.randn(lse.shape, generator=gen, dtype=torch.float64).to(lse.device, lse.dtype)
    loss = (out * w_out).sum() + (torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)) * w_lse).sum()
    wrt = given if wrt is None else wrt
    named = {n: wrt[n] for n in OP_INPUTS if wrt.get(n) is not None and wrt[n].requires_grad}
    grads = torch.autograd.grad(loss, list(named.values()))
    return out, lse, dict(zip(named, grads, strict=True))


def assert_same_run(got: tuple, want: tuple, dtype: torch.dtype) -> None:
    """Two :func:`run_with_grads` results agree within :data:`TOLERANCES` (compared on the CPU).

    Also: no NaN anywhere, ``lse = -inf`` on the same rows, the same set of gradients.
    """
    (out, lse, grads), (w_out, w_lse, w_grads) = got, want
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.cpu(), w_out.cpu(), **tol)
    torch.testing.assert_close(lse.cpu(), w_lse.cpu(), **tol)
    assert not out.isnan().any() and not lse.isnan().any()
    assert grads.keys() == w_grads.keys(), (grads.keys(), w_grads.keys())
    for name in grads:
        assert not grads[name].isnan().any(), name
        msg = lambda m, n=name: f"grad {n}: {m}"  # noqa: E731
        torch.testing.assert_close(grads[name].cpu(), w_grads[name].cpu(), **tol, msg=msg)


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
