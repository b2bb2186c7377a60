"""Batching: block-diagonal graphs with ptr, and no builder ever links two examples."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import graphattn.structure as S
from graphattn import Graph


def example_of(ptr: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    return torch.searchsorted(ptr, nodes, right=True) - 1


BUILDERS = {
    "full": lambda L, gen: S.full(lengths=L),
    "window": lambda L, gen: S.window(None, 3, lengths=L),
    "window_causal": lambda L, gen: S.window(None, 3, causal=True, lengths=L),
    "dilated": lambda L, gen: S.dilated(None, 2, 3, lengths=L),
    "strided": lambda L, gen: S.strided(None, 3, lengths=L),
    "fixed": lambda L, gen: S.fixed(None, 4, 2, lengths=L),
    "block_local": lambda L, gen: S.block_local(None, 4, lengths=L),
    "global_tokens": lambda L, gen: S.global_tokens(None, 2, lengths=L),
    "random": lambda L, gen: S.random(None, 3, generator=gen, lengths=L),
    "random_replace": lambda L, gen: S.random(None, 3, generator=gen, replace=True, lengths=L),
    "bigbird": lambda L, gen: S.bigbird(None, 2, 1, 2, generator=gen, lengths=L),
    "longformer": lambda L, gen: S.longformer(None, 2, 1, dilation=2, lengths=L),
    "knn": lambda L, gen: S.knn(torch.randn(sum(L), 2, generator=gen), 3, lengths=L, max_elements=16),
    "grid": lambda L, gen: S.grid(sizes=[(n % 4, n // 4) for n in L]),
    "axial": lambda L, gen: S.axial(sizes=[(n % 4, n // 4) for n in L]),
}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_no_builder_links_two_examples(lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    for name, build in BUILDERS.items():
        g = build(lengths, gen)
        assert g.ptr is not None, name
        if name in ("grid", "axial"):  # examples are (n % 4) x (n // 4) images
            assert g.ptr.diff().tolist() == [(n % 4) * (n // 4) for n in lengths], name
        else:
            assert g.ptr.diff().tolist() == lengths, name
        assert torch.equal(example_of(g.ptr, g.col), example_of(g.ptr, g.dst())), name


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=5))
def test_lengths_equal_batching_single_examples(lengths):
    for build in (
        lambda n, L: S.window(n, 3, lengths=L),
        lambda n, L: S.fixed(n, 3, 1, lengths=L),
        lambda n, L: S.strided(n, 3, causal=True, lengths=L),
        lambda n, L: S.global_tokens(n, 2, lengths=L),
    ):
        together = build(None, lengths)
        apart = S.batch([build(n, None) for n in lengths])
        assert torch.equal(together.rowptr, apart.rowptr)
        assert torch.equal(together.col, apart.col)
        assert torch.equal(together.ptr, apart.ptr)


def test_batch_of_plain_graphs_is_block_diagonal_with_ptr():
    a = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2, 2)
    b = Graph.from_edge_index(torch.tensor([[2, 0, 1], [0, 1, 1]]), 3, 3)
    g = S.batch([a, b])
    assert g.ptr.tolist() == [0, 2, 5] and g.src_ptr is None
    dense = g.to_dense()
    assert torch.equal(dense[:2, :2], a.to_dense()) and torch.equal(dense[2:, 2:], b.to_dense())
    assert int(dense[:2, 2:].sum()) == 0 and int(dense[2:, :2].sum()) == 0
    back = S.unbatch(g)
    assert [torch.equal(x.to_dense(), y.to_dense()) for x, y in zip(back, [a, b], strict=True)] == [True, True]


def test_batch_nests_and_tracks_bipartite_sources():
    bip = Graph.from_edge_index(torch.tensor([[0, 4], [1, 0]]), 5, 2)
    sq = S.window(None, 2, lengths=[3, 1])
    g = S.batch([sq, bip])
    assert g.ptr.tolist() == [0, 3, 4, 6]
    assert g.src_ptr.tolist() == [0, 3, 4, 9]
    assert g.num_src == 9 and g.num_dst == 6
    assert torch.equal(example_of(g.src_ptr, g.col), example_of(g.ptr, g.dst()))


def test_batch_rejects_nothing_and_non_graphs():
    import pytest

    with pytest.raises(ValueError, match="at least one graph"):
        S.batch([])
    with pytest.raises(TypeError, match=r"graphs\[1\] must be a graphattn.Graph"):
        S.batch([S.full(2), "x"])


def test_ptr_to_batch():
    assert S.ptr_to_batch(torch.tensor([0, 2, 2, 5])).tolist() == [0, 0, 2, 2, 2]
    assert S.ptr_to_batch(torch.tensor([0, 2, 2, 5]), num_nodes=5).tolist() == [0, 0, 2, 2, 2]


@pytest.mark.parametrize(
    ("ptr", "num_nodes", "error", "match"),
    [
        (torch.tensor([0, 3, 2, 5]), None, ValueError, r"ptr must be non-decreasing, but ptr\[2\] = 2 < ptr\[1\] = 3"),
        (torch.tensor([1, 5]), None, ValueError, r"ptr must start at 0, got ptr\[0\] = 1"),
        (torch.tensor([0, 2, 5]), 4, ValueError, r"ptr must end at N = 4, got ptr\[-1\] = 5"),
        (torch.zeros(0, dtype=torch.long), None, ValueError, r"ptr must have B \+ 1 >= 1 entries"),
        ([0, 2, 5], None, TypeError, r"ptr must be a torch.Tensor, got list"),
        (torch.tensor([0, 5]), -1, ValueError, r"num_nodes must be >= 0, got -1"),
    ],
)
def test_ptr_to_batch_rejects(ptr, num_nodes, error, match):
    with pytest.raises(error, match=match):
        S.ptr_to_batch(ptr, num_nodes)
