"""union, intersection and causal filtering."""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S
from graphattn import Graph


def test_union_and_intersection_are_set_operations():
    a, b = S.window(None, 2, lengths=[6, 4]), S.global_tokens(None, 1, lengths=[6, 4])
    u, i = S.union(a, b), S.intersection(a, b)
    da, db = a.to_dense().bool(), b.to_dense().bool()
    assert torch.equal(u.to_dense().bool(), da | db) and int(u.to_dense().max()) == 1
    assert torch.equal(i.to_dense().bool(), da & db)
    assert torch.equal(u.ptr, a.ptr) and torch.equal(i.ptr, a.ptr)
    multi = S.union(a, a, dedup=False)
    assert torch.equal(multi.to_dense(), 2 * a.to_dense())


def test_union_rows_are_sorted_and_empty_inputs_work():
    u = S.union(S.random(30, 4, generator=torch.Generator().manual_seed(0)), S.window(30, 3))
    keys = u.dst() * 30 + u.col
    assert bool((keys[1:] > keys[:-1]).all())
    assert S.union(S.full(0), S.full(0)).num_edges == 0


def test_setop_errors():
    with pytest.raises(ValueError, match=r"graph 1 has \(num_dst, num_src\) = \(4, 4\), expected \(3, 3\)"):
        S.union(S.full(3), S.full(4))
    with pytest.raises(ValueError, match="at least one graph"):
        S.intersection()
    with pytest.raises(ValueError, match="different ptr"):
        S.union(S.full(lengths=[2, 2]), S.full(lengths=[1, 3]))


def test_causal_filter_keeps_j_le_i_and_returns_mask():
    g = S.window(None, 3, lengths=[5, 3])
    c, keep = S.causal(g, return_mask=True)
    assert torch.equal(c.to_dense(), torch.tril(g.to_dense()))
    assert torch.equal(c.col, g.col[keep])
    assert torch.equal(c.to_dense(), S.window(None, 3, causal=True, lengths=[5, 3]).to_dense())
    with pytest.raises(ValueError, match="causal needs a square graph"):
        S.causal(Graph.from_edge_index(torch.tensor([[0], [0]]), 3, 1))


def _multigraph(n_dst: int, n_src: int, edges: int, seed: int) -> Graph:
    """Rows in random source order, with duplicate edges (what users' graphs may hold)."""
    gen = torch.Generator().manual_seed(seed)
    dst = torch.sort(torch.randint(0, n_dst, (edges,), generator=gen)).values
    src = torch.randint(0, n_src, (edges,), generator=gen)
    rowptr = torch.searchsorted(dst, torch.arange(n_dst + 1))
    return Graph(rowptr, src, n_src)


def _dense(g: Graph) -> torch.Tensor:
    """Edge multiplicities ``[N_dst, N_src]``."""
    ones = torch.ones_like(g.col)
    return torch.zeros(g.num_dst, g.num_src, dtype=torch.long).index_put_((g.dst(), g.col), ones, accumulate=True)


@pytest.mark.parametrize("size", ["small", "large"])  # large: the huge-page buffers (>= 4 MiB of keys)
def test_setops_of_unsorted_multigraphs_match_dense_counts(size):
    n_dst, n_src, edges = (9, 7, 40) if size == "small" else (3000, 2500, 600_000)
    a, b, c = (_multigraph(n_dst, n_src, edges, seed) for seed in range(3))
    counts = [_dense(g) for g in (a, b, c)]
    u, i, m = S.union(a, b, c), S.intersection(a, b, c), S.union(a, b, c, dedup=False)
    for g in (u, i, m):
        keys = g.dst() * n_src + g.col
        assert bool((keys[1:] >= keys[:-1]).all())  # sorted by destination, then source
    assert torch.equal(_dense(u), ((counts[0] + counts[1] + counts[2]) > 0).long())
    assert torch.equal(_dense(i), ((counts[0] > 0) & (counts[1] > 0) & (counts[2] > 0)).long())
    assert torch.equal(_dense(m), counts[0] + counts[1] + counts[2])
    assert torch.equal(_dense(S.intersection(a)), (counts[0] > 0).long())
    # the inputs are left as they were (keys are sorted in a buffer of their own)
    assert torch.equal(_dense(a), counts[0])
