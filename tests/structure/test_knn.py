"""knn(): exact k nearest neighbours per example, independent of the chunking budget."""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S


def spec_knn(x: torch.Tensor, k: int, lengths: list[int], loop: bool) -> list[set[int]]:
    out, off = [], 0
    for n in lengths:
        xs = x[off : off + n]
        d = torch.cdist(xs.double(), xs.double())
        if not loop:
            d.fill_diagonal_(float("inf"))
        kk = min(k, n - (0 if loop else 1))
        for i in range(n):
            out.append({off + int(j) for j in torch.topk(d[i], max(kk, 0), largest=False).indices})
        off += n
    return out


@pytest.mark.parametrize("max_elements", [1, 7, 50, 2**22])
@pytest.mark.parametrize("loop", [True, False])
def test_knn_matches_brute_force(max_elements, loop):
    lengths = [9, 0, 1, 14, 5]
    x = torch.randn(sum(lengths), 3, generator=torch.Generator().manual_seed(0))  # distinct distances a.s.
    g = S.knn(x, 4, lengths=lengths, loop=loop, max_elements=max_elements)
    expect = spec_knn(x, 4, lengths, loop)
    rows = [set(g.col[g.rowptr[i] : g.rowptr[i + 1]].tolist()) for i in range(g.num_dst)]
    assert rows == expect
    n = torch.tensor([9] * 9 + [1] + [14] * 14 + [5] * 5)
    assert torch.equal(g.in_degree(), torch.clamp(n - (0 if loop else 1), max=4, min=0))


def test_knn_over_1d_positions_is_a_window_and_cosine_runs():
    g = S.knn(torch.arange(20.0), 3)  # nearest: itself, then the two neighbours (ties at the ends)
    assert g.in_degree().tolist() == [3] * 20
    assert set(g.col[g.rowptr[10] : g.rowptr[11]].tolist()) == {9, 10, 11}
    c = S.knn(torch.randn(12, 4), 2, cosine=True, batch=torch.tensor([0] * 5 + [1] * 7))
    assert c.ptr.tolist() == [0, 5, 12]


def test_knn_errors():
    with pytest.raises(TypeError, match="x must be a floating"):
        S.knn(torch.arange(5), 2)
    with pytest.raises(ValueError, match="k must be >= 0"):
        S.knn(torch.randn(5, 2), -1)
    with pytest.raises(ValueError, match=r"lengths must sum to n = 5"):
        S.knn(torch.randn(5, 2), 2, lengths=[2, 2])


def test_knn_is_independent_of_the_chunking_budget_and_batches_equal_lengths():
    # Whole examples batched by length, one example in row chunks, or one row at a time: the
    # same distances, so the same graph (same order within rows), and the nearest-first order.
    lengths = [300, 300, 7, 0, 300, 700, 1]
    x = torch.rand(sum(lengths), 2, generator=torch.Generator().manual_seed(1))
    graphs = [S.knn(x, 6, lengths=lengths, max_elements=m) for m in (2**22, 2**17, 5000, 700)]
    for g in graphs[1:]:
        assert torch.equal(g.rowptr, graphs[0].rowptr)
        assert torch.equal(g.col, graphs[0].col)
    g = graphs[0]
    dst = torch.repeat_interleave(torch.arange(g.num_dst), g.in_degree())
    d = (x[g.col] - x[dst]).norm(dim=1)
    ptr = g.rowptr.tolist()
    for i in range(g.num_dst):
        assert torch.all(d[ptr[i] + 1 : ptr[i + 1]] >= d[ptr[i] : ptr[i + 1] - 1] - 1e-6)
    assert torch.equal(torch.bincount(dst, minlength=g.num_dst), g.in_degree())
    assert set(graphs[0].col[graphs[0].rowptr[0] : graphs[0].rowptr[1]].tolist()) <= set(range(300))
